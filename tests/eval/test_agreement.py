"""The grader against labelled model answers (docs/grader.md) and against benchmark golds."""

import json
from pathlib import Path

import pytest

from m1.eval.agreement import agreement, boxed_gold_failures, load_labeled

VERDICTS = Path(__file__).with_name("grader_verdicts.json")


def _key(d):
    return (d["model"], d["benchmark"], str(d["idx"]), str(d["sample"]))


def test_boxed_golds_and_math500_solutions_grade_correct(shared_data):
    failures = boxed_gold_failures(shared_data / "benchmarks")
    assert failures == {name: [] for name in failures}


def test_gsm8k_rows_subset_agree(shared_data):
    rows = [r for r in load_labeled(shared_data / "grader" / "labeled_answers.jsonl") if r["benchmark"] == "gsm8k"]
    rep = agreement(rows[::5], workers=1, progress=False)
    assert rep.rate("benchmark/gsm8k") == 1.0, rep.disagreements[:5]


def test_documented_disagreements_have_verdicts():
    verdicts = json.loads(VERDICTS.read_text())
    assert verdicts and all(v["verdict"] in ("label wrong", "data error", "by design") for v in verdicts)
    assert all(v["modes"] and set(v["modes"]) <= {"strict", "lenient"} for v in verdicts)


@pytest.mark.slow
# Lenient's floor fell from 0.965 to 0.96 with issue 21: reading closing statements
# credits three right answers of gemma's that the reference labelled wrong (it took the
# last number in the text), so raw agreement fell by exactly those rows.
@pytest.mark.parametrize("mode, min_rate", [("strict", 0.96), ("lenient", 0.96)])
def test_full_agreement(shared_data, mode, min_rate):
    rows = load_labeled(shared_data / "grader" / "labeled_answers.jsonl")
    # a generous limit: this audits the grader's verdicts, not the machine's load
    rep = agreement(rows, workers=2, progress=False, time_limit=15.0, lenient=mode == "lenient")
    assert rep.rate("benchmark/gsm8k") == 1.0
    documented = {_key(v) for v in json.loads(VERDICTS.read_text()) if mode in v["modes"]}
    found = {_key(d) for d in rep.disagreements}
    assert found == documented, (sorted(found - documented)[:10], sorted(documented - found)[:10])
    # Raw agreement per model. Every documented disagreement was read (docs/grader.md): label
    # and data errors of the reference, plus rows strict by design (integer golds are exact;
    # strict mode reads no bold), so the honest figure stays below 98%.
    for model in ("Qwen__Qwen2.5-14B-Instruct", "google__gemma-2-27b-it"):
        assert rep.rate(model) >= min_rate, (model, rep.rate(model))
