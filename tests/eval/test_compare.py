"""`m1 compare`: a candidate's greedy agreement with a reference and its share of the reference's pass@k."""

import json
import math
from pathlib import Path

import pytest

from m1.cli import main
from m1.eval.compare import answers_agree, common_prefix_tokens, compare_runs, format_compare
from m1.eval.metrics import pass_at_k, ratio_interval

from tests.helpers import save_tiny_model, write_problems


def _write_run(path: Path, rows: list[dict], n: int, temperature: float, model: str = "m") -> Path:
    path.mkdir(parents=True)
    with open(path / "samples.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps({"benchmark": "toy", "finish_reason": "stop", "num_tokens": len(r["text"]), "gen_time_s": 0.1,
                                "gold": "0", **r}) + "\n")
    (path / "summary.json").write_text(json.dumps({"config": {"model": model, "n": n, "sampling": {"temperature": temperature}}}))
    return path


class CharTokenizer:
    """One token per character: the tokens before the first difference are the shared characters."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}


def test_common_prefix_and_agreement():
    assert common_prefix_tokens([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix_tokens([1, 2], [1, 2]) == 2
    assert common_prefix_tokens([], [1]) == 0
    assert answers_agree("1/2", "0.5") and answers_agree(None, None)
    assert not answers_agree("3", None) and not answers_agree("3", "4")


def test_ratio_interval_pins_share_and_zero_reference():
    a, b = [1.0, 0.0] * 20, [1.0] * 40
    r, lo, hi = ratio_interval(a, b)
    assert r == 0.5 and 0.3 < lo < 0.5 < hi < 0.7
    assert ratio_interval([1.0, 0.0], [0.0, 0.0])[0] == math.inf
    assert ratio_interval([0.0], [0.0])[0] == 1.0  # both nothing: the candidate kept all there was
    with pytest.raises(ValueError):
        ratio_interval([1.0], [1.0, 0.0])


def test_greedy_measures_from_two_runs(tmp_path):
    ref = [("p0", "the answer is 12", "12", True), ("p1", "so 7", "7", True), ("p2", "no idea", None, False),
           ("p3", "x = 1/2", "1/2", False)]
    cand = [("p0", "the answer is 12", "12", True), ("p1", "so 8", "8", False), ("p2", "none", None, False),
            ("p3", "x = 0.5", "0.5", False)]

    def rows(spec):
        return [{"problem_id": p, "sample": 0, "text": t, "answer": a, "correct": c} for p, t, a, c in spec]

    r = _write_run(tmp_path / "ref", rows(ref), 1, 0.0)
    c = _write_run(tmp_path / "cand", rows(cand), 1, 0.0)
    res = compare_runs(r, c, CharTokenizer())
    e = res["benchmarks"]["toy"]
    assert (e["problems"], e["n"], e["greedy"]) == (4, 1, True) and "pass@k" not in e
    g = e["greedy_measures"]
    assert g["reference_accuracy"][0] == 0.5 and g["candidate_accuracy"][0] == 0.25
    assert g["difference"][0] == -0.25
    assert g["answer_agreement"][0] == 0.75  # 12=12, 7≠8, none=none, 1/2=0.5
    assert g["identical_text"] == 0.25 and g["both_without_answer"] == 0.25
    # shared characters: 16 (identical), 4 ("so "+"7"/"8" -> "so " = 3), "no idea"/"none" -> "no" = 2, "x = " = 4
    assert g["prefix_tokens"][0] == (16 + 3 + 2 + 4) / 4
    assert g["reference_tokens"] == (16 + 4 + 7 + 7) / 4
    md = format_compare(res)
    assert "tokens before the first difference" in md
    # every gold is "0" (_write_run): one guess always hits, so the greedy reference is flagged
    assert "One guess scores 100.0%." in md and "at or below chance at k = 1 (greedy)" in md
    assert e["completions"]["reference"] == {"truncated": 0.0, "no_answer": 0.25, "mean_tokens": 34 / 4}


def test_completion_measures_count_truncation_and_missing_answers(tmp_path):
    rows = [{"problem_id": "p0", "sample": 0, "text": "abc", "answer": "1", "correct": True, "finish_reason": "stop"},
            {"problem_id": "p0", "sample": 1, "text": "abcabcabc", "answer": None, "correct": False, "finish_reason": "length"},
            {"problem_id": "p1", "sample": 0, "text": "ab", "answer": None, "correct": False, "finish_reason": "length"},
            {"problem_id": "p1", "sample": 1, "text": "a", "answer": "0", "correct": True, "finish_reason": "stop"}]
    r = _write_run(tmp_path / "ref", rows, 2, 0.7)
    c = _write_run(tmp_path / "cand", [dict(x, finish_reason="stop") for x in rows], 2, 0.7)
    e = compare_runs(r, c)["benchmarks"]["toy"]["completions"]
    assert e["reference"] == {"truncated": 0.5, "no_answer": 0.5, "mean_tokens": 15 / 4}
    assert e["candidate"]["truncated"] == 0.0


def test_sampled_share_of_pass_at_k(tmp_path):
    n = 4
    # reference: p0 all right, p1 one of four; candidate: p0 two of four, p1 none
    ref_c = {"p0": [True] * 4, "p1": [True, False, False, False]}
    cand_c = {"p0": [True, True, False, False], "p1": [False] * 4}

    def rows(cs):
        return [{"problem_id": p, "sample": i, "text": "t", "answer": "0" if ok else "9", "correct": ok}
                for p, c in cs.items() for i, ok in enumerate(c)]

    r = _write_run(tmp_path / "ref", rows(ref_c), n, 0.7)
    c = _write_run(tmp_path / "cand", rows(cand_c), n, 0.7)
    e = compare_runs(r, c)["benchmarks"]["toy"]
    assert not e["greedy"] and "greedy_measures" not in e
    assert list(e["pass@k"]) == ["1", "2", "4"]
    for k in (1, 2, 4):
        ref_k = (pass_at_k(4, 4, k) + pass_at_k(4, 1, k)) / 2
        cand_k = (pass_at_k(4, 2, k) + pass_at_k(4, 0, k)) / 2
        v = e["pass@k"][str(k)]
        assert v["reference"][0] == pytest.approx(ref_k) and v["candidate"][0] == pytest.approx(cand_k)
        assert v["share"][0] == pytest.approx(cand_k / ref_k)
    assert e["pass@k"]["1"]["share"][0] == pytest.approx(0.25 / 0.625)
    assert e["maj@k"]["4"]["reference"][0] == 0.5  # p0's majority right, p1's wrong
    # both golds are "0": a guess from the other problem's gold always hits, so the reference is at chance
    assert e["chance"]["pass@k"] == {"1": 1.0, "2": 1.0, "4": 1.0} and e["chance"]["constant_accuracy"] == 1.0
    md = format_compare(compare_runs(r, c))
    assert "| pass@k k | reference | candidate | share | chance |" in md and "at or below chance at k = 1, 2, 4" in md


def test_compare_skips_problems_missing_samples_and_rejects_disjoint_runs(tmp_path):
    rows = [{"problem_id": p, "sample": i, "text": "t", "answer": "0", "correct": True} for p in ("a", "b") for i in range(2)]
    r = _write_run(tmp_path / "ref", rows, 2, 0.7)
    c = _write_run(tmp_path / "cand", rows[:3], 2, 0.7)  # b has one sample of two
    assert compare_runs(r, c)["benchmarks"]["toy"]["problems"] == 1
    other = _write_run(tmp_path / "other", [dict(rows[0], benchmark="x")], 1, 0.7)
    with open(other / "samples.jsonl", "w") as f:
        f.write(json.dumps({**rows[0], "benchmark": "other", "gold": "0", "num_tokens": 1, "finish_reason": "stop",
                            "gen_time_s": 0.1}) + "\n")
    assert main(["compare", "--reference", str(r), "--candidate", str(other), "--out", str(tmp_path / "o")]) == 2


def test_cli_bad_directory_is_one_line(tmp_path, capsys):
    assert main(["compare", "--reference", str(tmp_path / "nope"), "--candidate", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--reference" in err[0] and "does not exist" in err[0]


def test_cli_reference_model_missing_here_is_one_line(tmp_path, capsys):
    """Runs copied from another machine name a model path that is not here: the error says where the
    tokenizer came from and what to pass, in one line (it used to be transformers' 'Repo id must be...')."""
    rows = [{"problem_id": "0", "sample": 0, "answer": "0", "correct": True, "text": "ab"}]
    r = _write_run(tmp_path / "r", rows, n=1, temperature=0.0, model="/elsewhere/teacher.gguf")
    c = _write_run(tmp_path / "c", rows, n=1, temperature=0.0)
    assert main(["compare", "--reference", str(r), "--candidate", str(c), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--tokenizer" in err[0] and "does not exist" in err[0] and "reference run's model" in err[0]


def test_a_model_against_itself_through_m1_eval(tmp_path):
    """Two greedy `m1 eval` runs of one model agree everywhere and keep all of its pass@1."""
    model = save_tiny_model(tmp_path / "model")
    bench = write_problems(tmp_path / "toy.jsonl", n=4)
    for name in ("a", "b"):
        assert main(["eval", "--model", str(model), "--benchmark", str(bench), "--n", "1", "--temperature", "0",
                     "--max-tokens", "6", "--out", str(tmp_path / name), "--no-chat-template"]) == 0
    assert main(["compare", "--reference", str(tmp_path / "a"), "--candidate", str(tmp_path / "b"), "--out", str(tmp_path / "c")]) == 0
    res = json.loads((tmp_path / "c" / "compare.json").read_text())
    g = res["benchmarks"][str(bench)]["greedy_measures"]
    assert g["answer_agreement"][0] == 1.0 and g["identical_text"] == 1.0
    assert g["prefix_tokens"][0] == g["reference_tokens"] > 0
    assert (tmp_path / "c" / "compare.md").read_text().startswith("# m1 compare")
