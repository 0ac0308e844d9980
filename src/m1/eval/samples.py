"""samples.jsonl, the eval loop's record: reading it, and every number computed from it.

One row per sample: benchmark, problem_id, sample, gold, answer, correct, num_tokens,
finish_reason, gen_time_s, text (and verifier_score with a verifier). `summarize_samples`
is a benchmark's summary.json entry; `per_problem` gives one score per problem, for paired
comparisons (the demo's targets). Everything is computed from the rows alone.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from pathlib import Path

from m1.eval.metrics import chance_baseline, equivalence_groups, k_values, maj_at_k, mean_interval, pass_at_k, verify_at_k, weighted_vote_at_k

logger = logging.getLogger(__name__)

TIMING_KEYS = ("wall_time_s", "gen_time_s", "samples_per_s")


def read_samples(path: Path) -> list[dict]:
    """Rows of samples.jsonl; a torn last line (the run was killed mid-write) is dropped."""
    if not path.exists():
        return []
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                logger.warning("%s: dropping a torn line (interrupted write)", path)
    return rows


def group_by_problem(rows: list[dict]) -> dict[str, list[dict]]:
    by: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by[r["problem_id"]].append(r)
    return {pid: sorted(rs, key=lambda r: r["sample"]) for pid, rs in by.items()}


def per_problem(rows: list[dict], n: int, score: str, k: int | None = None) -> dict[str, float]:
    """One number per problem from its first n samples: `pass@1` (the share correct), `maj@n` or
    `verify@n`, or `maj@k` / `verify@k` (averaged over seeded size-k subsets of the n, k <= n)."""
    out = {}
    for pid, rs in group_by_problem(rows).items():
        rs = rs[:n]
        correct = [r["correct"] for r in rs]
        kk = len(rs) if score.endswith("@n") or k is None else min(k, len(rs))
        if score == "pass@1":
            out[pid] = sum(correct) / len(rs)
        elif score in ("maj@n", "maj@k"):
            answers = [r["answer"] for r in rs]
            out[pid] = maj_at_k(answers, correct, kk, groups=equivalence_groups(answers))
        elif score in ("verify@n", "verify@k"):
            out[pid] = verify_at_k([r["verifier_score"] for r in rs], correct, kk)
        elif score in ("weighted_vote@n", "weighted_vote@k"):
            answers = [r["answer"] for r in rs]
            out[pid] = weighted_vote_at_k(answers, [r["verifier_score"] for r in rs], correct, kk, groups=equivalence_groups(answers))
        else:
            raise ValueError(f"unknown per-problem score {score!r}; use pass@1, maj@n/k, verify@n/k or weighted_vote@n/k")
    return out


def answer_groups(by_problem: dict[str, list[dict]], n: int, threads: int | None = None) -> dict[str, list[int | None]]:
    """`equivalence_groups` of each problem's first n answers, problems spread over threads.

    Why threads: the groups are pairwise math-verify comparisons of distinct answers, each a round
    trip to a worker process (`m1.eval.grader_pool` keeps one per grading thread), so threads run them
    in parallel. Serially, a 500 x 64 GSM8K run of a looping model spent 3.6 minutes of a GPU
    machine's time here after its generation had ended (2026-12-07). The result does not depend on
    the thread count: each problem's groups are computed on their own.
    """
    from concurrent.futures import ThreadPoolExecutor

    threads = threads or min(8, os.cpu_count() or 1)
    pids = list(by_problem)
    if threads <= 1 or len(pids) < 2:
        return {pid: equivalence_groups([r["answer"] for r in by_problem[pid][:n]]) for pid in pids}
    with ThreadPoolExecutor(max_workers=threads) as ex:
        groups = ex.map(lambda pid: equivalence_groups([r["answer"] for r in by_problem[pid][:n]]), pids)
        return dict(zip(pids, groups))


def scores_at_k(rows: list[dict], ks: list[int], groups: list[int | None] | None = None) -> tuple[dict[int, float], dict[int, float]]:
    """pass@k and maj@k of one problem's samples (`rows`, all of them) at each k: the per-problem
    values that summaries average and `m1 compare` pairs across models. `groups`: the answers'
    equivalence groups, when the caller has them already."""
    n = len(rows)
    c = sum(r["correct"] for r in rows)
    answers = [r["answer"] for r in rows]
    correct = [r["correct"] for r in rows]
    groups = equivalence_groups(answers) if groups is None else groups
    return ({k: pass_at_k(n, c, k) for k in ks}, {k: maj_at_k(answers, correct, k, groups=groups) for k in ks})


def summarize_samples(rows: list[dict], n: int) -> dict:
    """pass@1, pass@k and maj@k over k = 1, 2, 4 ... n, each with its 95% interval (problems
    bootstrapped), verify@k, tokens, timing."""
    by = group_by_problem(rows)
    if not by:
        return {"problems": 0}
    complete = {pid: rs for pid, rs in by.items() if len(rs) >= n}
    if len(complete) < len(by):
        logger.warning("%d problems have fewer than n=%d samples; summarising complete ones only", len(by) - len(complete), n)
    ks = k_values(n)
    pass1 = [sum(r["correct"] for r in rs[:n]) / n for rs in complete.values()]
    mean, lo, hi = mean_interval(pass1)
    pass_rows: dict[int, list[float]] = {k: [] for k in ks}  # per problem: the means and their intervals
    maj_rows: dict[int, list[float]] = {k: [] for k in ks}
    ver_k = {k: 0.0 for k in ks}
    wvote_k = {k: 0.0 for k in ks}
    has_ver = all("verifier_score" in r for rs in complete.values() for r in rs)
    all_groups = answer_groups(complete, n)
    for pid, rs in complete.items():
        rs = rs[:n]
        answers = [r["answer"] for r in rs]
        correct = [r["correct"] for r in rs]
        groups = all_groups[pid]
        passes, majs = scores_at_k(rs, ks, groups)
        for k in ks:
            pass_rows[k].append(passes[k])
            maj_rows[k].append(majs[k])
            if has_ver:
                scores = [r["verifier_score"] for r in rs]
                ver_k[k] += verify_at_k(scores, correct, k)
                wvote_k[k] += weighted_vote_at_k(answers, scores, correct, k, groups=groups)
    P = len(complete)
    all_rows = [r for rs in complete.values() for r in rs[:n]]
    gen_time = sum(r["gen_time_s"] for r in all_rows)
    out = {
        "problems": P,
        "n": n,
        "pass@1": {"mean": mean, "ci95": [lo, hi]},
        "pass@k": {str(k): sum(v) / P for k, v in pass_rows.items()},
        "maj@k": {str(k): sum(v) / P for k, v in maj_rows.items()},
        "pass@k_ci95": {str(k): list(mean_interval(v)[1:]) for k, v in pass_rows.items()},
        "maj@k_ci95": {str(k): list(mean_interval(v)[1:]) for k, v in maj_rows.items()},
        "mean_tokens": sum(r["num_tokens"] for r in all_rows) / len(all_rows),
        "truncated_frac": sum(r["finish_reason"] == "length" for r in all_rows) / len(all_rows),
        "no_answer_frac": sum(r["answer"] is None for r in all_rows) / len(all_rows),
        "wall_time_s": gen_time,
        "gen_time_s": gen_time,
        "samples_per_s": len(all_rows) / gen_time if gen_time > 0 else float("inf"),
    }
    chance = chance_baseline([rs[0].get("gold") for rs in complete.values()], ks)
    if chance is not None:
        out["chance"] = chance
    if has_ver:
        out["verify@k"] = {str(k): v / P for k, v in ver_k.items()}
        out["weighted_vote@k"] = {str(k): v / P for k, v in wvote_k.items()}
    return out
