"""`m1 regrade`: an eval run graded again from its texts, in place, with what changed recorded."""

import json

import pytest

from m1.errors import UserError
from m1.eval.cli import regrade_main
from m1.eval.regrade import regrade_run


def _row(pid: str, sample: int, gold: str, text: str, answer, correct: bool) -> dict:
    return {"benchmark": "add", "problem_id": pid, "sample": sample, "gold": gold, "answer": answer, "correct": correct,
            "extraction": "strict", "num_tokens": 5, "finish_reason": "stop", "gen_time_s": 0.01, "text": text}


@pytest.fixture
def run(tmp_path):
    """A two-problem, n=2 run graded by an older grader that took "15 + 43" for 58."""
    rows = [_row("0", 0, "58", "The answer is 15 + 43", "15 + 43", True),
            _row("0", 1, "58", "The answer is 58", "58", True),
            _row("1", 0, "7", "The answer is 7", "7", True),
            _row("1", 1, "7", "Adding them gives 7.", None, False)]
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = {"config": {"model": "toy", "benchmarks": ["add"], "n": 2}, "extraction": "strict",
               "benchmarks": {"add": {"problems": 2, "pass@1": {"mean": 0.75, "ci95": [0.5, 1.0]}}}}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    return tmp_path


def test_regrade_rebuilds_verdicts_summary_and_report(run):
    assert regrade_main([str(run)]) == 0
    rows = [json.loads(line) for line in open(run / "samples.jsonl")]
    assert [r["correct"] for r in rows] == [False, True, True, False]
    assert [r["text"] for r in rows][0] == "The answer is 15 + 43"  # texts are never touched
    summary = json.loads((run / "summary.json").read_text())
    assert summary["benchmarks"]["add"]["pass@1"]["mean"] == pytest.approx(0.5)
    assert summary["extraction"] == "strict"
    assert summary["benchmarks"]["add"]["pass@k"]["2"] == pytest.approx(1.0)
    assert summary["config"]["model"] == "toy"
    assert summary["regraded"][-1]["changes"]["add"] == {"true_to_false": 1}
    assert "(regraded, strict extraction)" in (run / "report.md").read_text()
    assert not list(run.glob("*.tmp"))


def test_regrading_twice_changes_nothing_the_second_time(run):
    regrade_run(run)
    first = (run / "samples.jsonl").read_text()
    regrade_run(run)
    assert (run / "samples.jsonl").read_text() == first
    assert json.loads((run / "summary.json").read_text())["regraded"][-1]["changes"]["add"] == {}


def test_a_directory_that_is_not_an_eval_run_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="samples.jsonl: not found"):
        regrade_run(tmp_path)
    (tmp_path / "samples.jsonl").write_text("")
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(UserError, match="summary.json: not an m1 eval summary"):
        regrade_run(tmp_path)


def test_another_extraction_goes_to_a_new_directory_and_leaves_the_run(run, tmp_path_factory):
    before = (run / "samples.jsonl").read_text()
    with pytest.raises(UserError, match="--extraction lenient: .* needs|--extraction lenient: .*--out"):
        regrade_run(run, extraction="lenient")
    out = tmp_path_factory.mktemp("lenient")
    assert regrade_main([str(run), "--extraction", "lenient", "--out", str(out)]) == 0
    assert (run / "samples.jsonl").read_text() == before
    rows = [json.loads(line) for line in open(out / "samples.jsonl")]
    assert [r["correct"] for r in rows] == [False, True, True, True]  # "Adding them gives 7." read leniently
    assert {r["extraction"] for r in rows} == {"lenient"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["extraction"] == summary["config"]["extraction"] == "lenient"
    assert summary["regraded"][-1]["from"] == str(run)
