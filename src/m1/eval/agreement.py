"""Grader audit: agreement with labelled model answers, and golds that must grade correct.

    python -m m1.eval.agreement [--data-dir ../shared/data] [--out disagreements.jsonl] [--extraction lenient]

The labels come from other automatic graders (Qwen2.5-Math's `math_equal`, GSM8K's
final-answer check), so they are noisy; the point is to measure agreement and then read
every disagreement (docs/grader.md holds the verdicts).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from m1.eval.answer import extract_answer, gold_answer
from m1.eval.grader import TIME_LIMIT_S, final_answer, grade, warm_up

logger = logging.getLogger(__name__)


def shared_data_dir() -> Path:
    """`$M1_SHARED_DATA`, else `../shared/data` next to the repository (the layout of our checkouts)."""
    env = os.environ.get("M1_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3].parent / "shared" / "data"


@dataclass
class AgreementReport:
    """Per-group agreement counts and the rows where grader and label differ."""

    counts: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))  # key -> [agree, total]
    disagreements: list[dict] = field(default_factory=list)

    def rate(self, key: str) -> float:
        agree, total = self.counts[key]
        return agree / total if total else float("nan")


def _label(v: object) -> bool:
    return v is True or str(v).strip().lower() == "true"


def load_labeled(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def agreement(rows: Sequence[dict], workers: int = 2, progress: bool = True, time_limit: float = TIME_LIMIT_S,
              lenient: bool = False) -> AgreementReport:
    """Grade every row and compare with its label, per model and per (model, benchmark).

    Also counted: `boxed` / `unboxed` (rows with and without a `\\boxed{}`/`\\fbox{}`) and
    `no-answer` (agree = rows where no answer was extracted, out of all rows).
    """
    warm_up(workers)
    with ThreadPoolExecutor(workers) as ex:
        verdicts = list(tqdm(ex.map(lambda r: grade(r["completion"], r["gold"], time_limit, lenient=lenient), rows),
                             total=len(rows), desc="grading", disable=not progress))
    rep = AgreementReport()
    for r, ok in zip(rows, verdicts):
        same = ok == _label(r["label"])
        boxed = "\\boxed" in r["completion"] or "\\fbox" in r["completion"]
        for key in ("all", r["model"], f"{r['model']}/{r['benchmark']}", f"benchmark/{r['benchmark']}",
                    "boxed" if boxed else "unboxed"):
            rep.counts[key][0] += same
            rep.counts[key][1] += 1
        rep.counts["no-answer"][0] += final_answer(r["completion"], r["gold"], lenient) is None
        rep.counts["no-answer"][1] += 1
        if not same:
            rep.disagreements.append({
                "model": r["model"], "benchmark": r["benchmark"], "idx": r["idx"], "sample": r.get("sample"),
                "gold": r["gold"], "ref_pred": r.get("pred"), "our_pred": final_answer(r["completion"], r["gold"], lenient),
                "label": _label(r["label"]), "ours": ok,
            })
    return rep


def boxed_gold_failures(benchmarks_dir: Path) -> dict[str, list[str]]:
    """Golds written as `\\boxed{gold}` (and MATH500 reference solutions) that fail to grade."""
    from m1.eval.benchmarks import load_benchmark

    failures: dict[str, list[str]] = {}
    for name in ("math500", "aime24", "aime25", "amc23", "gsm8k"):
        bad = []
        for p in load_benchmark(name, data_dir=benchmarks_dir):
            if not grade("so the answer is \\boxed{" + gold_answer(p.answer) + "}", p.answer):
                bad.append(f"{p.id}: boxed gold {p.answer!r}")
            if name == "math500" and not grade(p.solution, p.answer):
                bad.append(f"{p.id}: reference solution {extract_answer(p.solution)!r} vs {p.answer!r}")
        failures[name] = bad
    return failures


def format_report(rep: AgreementReport, keys: Iterable[str] | None = None) -> str:
    keys = sorted(rep.counts) if keys is None else keys
    return "\n".join(f"{k:<60} {rep.counts[k][0]:>5}/{rep.counts[k][1]:<5} {100 * rep.rate(k):6.2f}%" for k in keys)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m m1.eval.agreement", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=None, help="shared data directory (default: $M1_SHARED_DATA or ../shared/data)")
    ap.add_argument("--out", type=Path, default=None, help="write the disagreements here as JSONL")
    ap.add_argument("--workers", type=int, default=2, help="grading threads (each uses one math-verify process)")
    ap.add_argument("--time-limit", type=float, default=TIME_LIMIT_S,
                    help="seconds per math-verify comparison (raise it on a loaded machine to avoid timeouts)")
    ap.add_argument("--extraction", choices=["strict", "lenient"], default="strict",
                    help="answer extraction mode, as `m1 eval --extraction`")
    ap.add_argument("--no-golds", action="store_true", help="skip the boxed-gold check of the benchmarks")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    data = args.data_dir or shared_data_dir()
    rep = agreement(load_labeled(data / "grader" / "labeled_answers.jsonl"), workers=args.workers, time_limit=args.time_limit,
                    lenient=args.extraction == "lenient")
    print(format_report(rep))
    if args.out:
        with open(args.out, "w") as f:
            for d in rep.disagreements:
                f.write(json.dumps(d) + "\n")
    for name, bad in ({} if args.no_golds else boxed_gold_failures(data / "benchmarks")).items():
        print(f"golds {name}: {len(bad)} failures")
        for b in bad:
            print("   ", b)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
