"""m1's grader and metrics against the test cases its peers hold themselves to.

- Math-Verify's regression tests (tests/test_all.py, test_boxed.py, test_numina_cases.py,
  test_open_thoughts.py, test_yujianll.py): every (gold, prediction, expected) case goes
  through `m1.eval.grade`, the prediction as a completion, in both extraction modes. The
  cases m1 decides differently are listed, each with its reason, in
  peers/mathverify_differences.json; the test fails when that set changes either way, so a
  grader change that fixes or breaks a case has to update the list (and docs/grader.md).
- lighteval's pass@k / maj@k / avg@k metric cases (tests/unit/metrics/test_cases/) through
  `m1.eval.metrics`.

The case lists are generated from the peers' repositories by peers/make_cases.py (which
records the commit it read); nothing of theirs is imported. All 266 Math-Verify cases run
in the default suite: they take ~5 s on one core, most of them settled before math-verify.
"""

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from m1.eval import answers_equivalent, grade
from m1.eval.metrics import maj_at_k, majority_vote, pass_at_k

PEERS = Path(__file__).with_name("peers")
MV = json.loads((PEERS / "mathverify_cases.json").read_text())
MV_DIFF = json.loads((PEERS / "mathverify_differences.json").read_text())
LE = json.loads((PEERS / "lighteval_cases.json").read_text())
MODES = ("strict", "lenient")
# A generous limit: these verdicts are about the grader, not the machine's load.
TIMEOUT_S = 15.0

# A prediction that is one math span ($...$, $$...$$, \(...\), \[...\]) or a bare value.
_SPAN = re.compile(r"\s*(?:\$\$(?P<a>[^$]*)\$\$|\$(?P<b>[^$]*)\$|\\\((?P<c>.*?)\\\)|\\\[(?P<d>.*?)\\\])\s*\.?\s*", re.S)
_PROSE_WORD = re.compile(r"(?<!\\)\b[A-Za-z]{3,}\b")


def as_completion(pred: str) -> str:
    """A Math-Verify prediction as a completion m1 grades.

    Predictions with a box, and prose, go in as they are: that is what a model writes. A
    bare answer (one math span, or a value with no words, such as `$\\frac13 $` or
    `1,000.99`) is what Math-Verify extracts from a model's output, and what a model puts in
    its box for m1, so it goes in boxed.
    """
    if "\\boxed" in pred or "\\fbox" in pred:
        return pred
    m = _SPAN.fullmatch(pred)
    if m:
        return "\\boxed{" + next(g for g in m.groups() if g is not None).strip() + "}"
    if len(pred) < 200 and not _PROSE_WORD.search(re.sub(r"\\[A-Za-z]+", " ", pred)):
        return "\\boxed{" + pred.strip().strip("$").strip() + "}"
    return pred


def test_as_completion_boxes_bare_answers_only():
    assert as_completion("$\\frac13 $") == "\\boxed{\\frac13}"
    assert as_completion("1,000.99") == "\\boxed{1,000.99}"
    assert as_completion("Answer $ 9 $") == "Answer $ 9 $"  # prose stays prose
    assert as_completion("so \\boxed{5}") == "so \\boxed{5}"


def _mv_verdicts() -> dict[tuple[str, str], bool]:
    out = {}
    for case in MV["cases"]:
        completion = as_completion(case["pred"])
        for mode in MODES:
            out[case["id"], mode] = grade(completion, case["gold"], TIMEOUT_S, lenient=mode == "lenient")
    return out


@pytest.fixture(scope="module")
def mv_verdicts():
    return _mv_verdicts()


def test_mathverify_case_list_is_complete():
    """The generated list holds every upstream row but the one computed at import time."""
    assert MV["source"]["repo"] == "huggingface/Math-Verify" and len(MV["source"]["commit"]) == 40
    assert len(MV["cases"]) == 266 and len({c["id"] for c in MV["cases"]}) == 266
    assert [s["test"] for s in MV["skipped"]] == ["test_float_precision"]
    assert Counter(c["file"] for c in MV["cases"]) == {
        "tests/test_all.py": 190, "tests/test_numina_cases.py": 30, "tests/test_open_thoughts.py": 29,
        "tests/test_yujianll.py": 14, "tests/test_boxed.py": 3}


@pytest.mark.parametrize("mode, agree", [("strict", 222), ("lenient", 234)])
def test_mathverify_agreement_and_documented_differences(mv_verdicts, mode, agree):
    """Agreement with Math-Verify's expectations; every differing case is documented with a reason."""
    differing = {cid for (cid, m), ok in mv_verdicts.items() if m == mode and int(ok) != _expected(cid)}
    documented = {cid for cid, d in MV_DIFF["cases"].items() if mode in d["modes"]}
    assert differing == documented, (sorted(differing - documented), sorted(documented - differing))
    n = len(MV["cases"])
    print(f"Math-Verify suite, {mode}: {n - len(differing)}/{n} agree")
    assert n - len(differing) == agree  # docs/grader.md states this figure


def test_mathverify_differences_have_reasons():
    cats = MV_DIFF["categories"]
    assert all(c["reason"] and c["verdict"] for c in cats.values())
    assert {d["category"] for d in MV_DIFF["cases"].values()} == set(cats)  # no unused or unknown category
    ids = {c["id"] for c in MV["cases"]}
    assert set(MV_DIFF["cases"]) <= ids


_EXPECTED = {c["id"]: c["expected"] for c in MV["cases"]}


def _expected(case_id: str) -> int:
    return _EXPECTED[case_id]


# ---------------------------------------------------------------- lighteval pass@k / maj@k


def _lighteval_rows():
    for suite in LE["suites"]:
        for case in suite["test_cases"]:
            yield pytest.param(case, id=f"{suite['file'].rsplit('/', 1)[-1]}::{case['name']}")


# lighteval's letter suite expects 0 even for a right letter: its extraction wants an
# "Answer: B"-style output and finds nothing in a bare "B", while m1's metrics take the
# samples as already-extracted answers and compare them (B equals B).
LETTERS_DIFFER = {"Pass at K Letters - Correct Letters": 0.5, "Pass at K Letters - Multiple Attempts": 2 / 3}


@pytest.mark.parametrize("case", list(_lighteval_rows()))
def test_lighteval_metric_cases(case):
    """Each case's samples are extracted answers; the gold is `choices[gold_index]` (the first,
    for a list, as lighteval's avg@k takes it). pass@k is m1's unbiased estimator over the
    first n samples, maj@k the equivalence-pooled vote over the first k, avg@k the mean
    correctness of the first k (pass@1 of k samples)."""
    doc, params = case["doc"], case["metric_params"]
    gi = doc["gold_index"][0] if isinstance(doc["gold_index"], list) else doc["gold_index"]
    gold = doc["choices"][gi]
    texts = case["model_response"]["text"]
    correct = [answers_equivalent(gold, t) for t in texts]
    k = params["k"]
    metric = case["metric_class"]
    if metric.startswith("pass_at_k"):
        n = params.get("n", len(texts))
        value = pass_at_k(n, sum(correct[:n]), k)
    elif metric == "maj_at_k":
        value = maj_at_k(texts[:k], correct[:k], k)
        assert value == float(answers_equivalent(gold, majority_vote(texts[:k])))
    elif metric.startswith("avg_at_k"):
        value = pass_at_k(k, sum(correct[:k]), 1)
    else:
        raise AssertionError(f"unmapped lighteval metric {metric}")
    (expected,) = case["expected_output"].values()
    if case["name"] in LETTERS_DIFFER:
        assert expected == 0.0 and value == pytest.approx(LETTERS_DIFFER[case["name"]])
        return
    assert value == pytest.approx(expected, abs=case.get("tolerance", 0.01)), (value, expected)


def test_lighteval_case_list():
    assert LE["source"]["repo"] == "huggingface/lighteval" and len(LE["source"]["commit"]) == 40
    assert sum(len(s["test_cases"]) for s in LE["suites"]) == 19
