"""Grade an `m1 eval` run's samples again with the current grader, without generating.

Why: generation is the expensive part of an evaluation (GPU hours); grading is cheap. When the
grader changes (a rule added, a false positive found), old runs must be comparable with new
ones, so their `samples.jsonl` texts are graded again: each row's `answer` and `correct` are
recomputed from its `text` and `gold`, and summary.json and report.md are rebuilt from the rows.
The summary records what changed (`regraded`), so a reader can tell a regraded run from one
graded as it ran.

In place (the default) the run keeps its extraction mode and its files are replaced atomically.
Another extraction mode (`lenient` for a model that states its answer without boxing it) goes to
a new directory: `m1 eval` refuses to mix modes in one run, and the first reading stays.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from collections import Counter
from pathlib import Path

from tqdm.auto import tqdm

from m1.errors import UserError
from m1.eval.grader import answer_and_verdict, warm_up
from m1.eval.report import write_report
from m1.eval.samples import read_samples, summarize_samples

logger = logging.getLogger(__name__)


def regrade_rows(rows: list[dict], extraction: str) -> Counter:
    """Regrade rows in place; count the verdicts that moved (`false_to_true`, `true_to_false`)
    and the answers that changed (`answer_changed`)."""
    lenient = extraction == "lenient"
    moved: Counter = Counter()
    for r in tqdm(rows, desc="regrading", disable=len(rows) < 1000):
        ans, ok = answer_and_verdict(r.get("text"), r["gold"], lenient)
        if ans != r.get("answer"):
            moved["answer_changed"] += 1
        if ok != bool(r.get("correct")):
            moved["false_to_true" if ok else "true_to_false"] += 1
        r["answer"], r["correct"] = ans, ok
    return moved


def _replace_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def regrade_run(run: Path, out: Path | None = None, extraction: str | None = None) -> dict[str, dict]:
    """Regrade the `m1 eval` run in directory `run` (samples.jsonl and summary.json); write the
    samples, summary and report to `out` (default: `run`, in place) under `extraction` (default:
    the run's own mode); return the new summaries."""
    samples, summary_path = run / "samples.jsonl", run / "summary.json"
    for p in (samples, summary_path):
        if not p.is_file():
            raise UserError(f"{p}: not found (regrade takes the --out directory of an m1 eval run)")
    try:
        summary = json.loads(summary_path.read_text())
        n, benchmarks = summary["config"]["n"], summary["config"]["benchmarks"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"{summary_path}: not an m1 eval summary ({e.__class__.__name__}: {e})") from None
    graded_with = summary.get("extraction", "strict")
    mode = extraction or graded_with
    out = run if out is None else out
    if mode != graded_with and out.resolve() == run.resolve():
        raise UserError(f"--extraction {mode}: {run} was graded with {graded_with!r} extraction; "
                        "write the other reading to a new directory with --out")
    rows = read_samples(samples)
    if not rows:
        raise UserError(f"{samples}: no samples")
    warm_up()
    moved = {}
    for b in benchmarks:
        mine = [r for r in rows if r["benchmark"] == b]
        moved[b] = dict(regrade_rows(mine, mode))
        logger.info("%s: %d samples regraded (%s extraction); verdicts false->true %d, true->false %d",
                    b, len(mine), mode, moved[b].get("false_to_true", 0), moved[b].get("true_to_false", 0))
    for r in rows:
        r["extraction"] = mode
    out.mkdir(parents=True, exist_ok=True)
    _replace_atomically(out / "samples.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    summaries = {b: summarize_samples([r for r in rows if r["benchmark"] == b], n) for b in benchmarks}
    summary["benchmarks"] = summaries
    summary["extraction"] = summary["config"]["extraction"] = mode
    summary["config"]["out"] = str(out)
    summary.setdefault("regraded", []).append(
        {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "from": str(run),
         "extraction": mode, "changes": moved})
    _replace_atomically(out / "summary.json", json.dumps(summary, indent=2))
    model = summary["config"].get("model") or run.name
    write_report(summaries, out, f"m1 eval: {model} (regraded, {mode} extraction)")
    return summaries
