"""Test-time scaling: accuracy against samples and against a wall-clock budget.

Following the M1 paper, a budget of T seconds per problem buys k(T) = floor(T x samples/s)
samples, with samples/s measured for each model during its own eval run; a faster model
gets more samples for the same time. Models are compared on the same problems, over one
time grid (`time_grid`). `m1 scaling` and the demo's report both draw their curves here.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from m1.eval.metrics import equivalence_groups, k_values, maj_at_k, pass_at_k  # noqa: E402
from m1.eval.samples import group_by_problem  # noqa: E402

GRID_POINTS = 16


def accuracy_at(rows: list[dict], n: int, k: int) -> tuple[float, float]:
    """(pass@k, maj@k) averaged over problems, for any 1 <= k <= n."""
    by = group_by_problem(rows)
    p = m = 0.0
    for rs in by.values():
        rs = rs[:n]
        correct = [r["correct"] for r in rs]
        answers = [r["answer"] for r in rs]
        p += pass_at_k(n, sum(correct), k)
        m += maj_at_k(answers, correct, k, groups=equivalence_groups(answers))
    return p / len(by), m / len(by)


def accuracy_by_k(rows: list[dict], n: int) -> list[tuple[int, float, float]]:
    """(k, pass@k, maj@k) for k = 1, 2, 4 ... n."""
    return [(k, *accuracy_at(rows, n, k)) for k in k_values(n)]


def time_grid(models: list[tuple[float, int]], points: int = GRID_POINTS) -> list[float]:
    """One log-spaced grid of budgets T (seconds per problem) for models given as (samples/s, n):
    from the budget that buys the fastest model one sample to the one that buys every model all n."""
    t_lo = 1.0 / max(sps for sps, _ in models)
    t_hi = max(n / sps for sps, n in models)
    return [t_lo * (t_hi / t_lo) ** (j / (points - 1)) for j in range(points)] if t_hi > t_lo else [t_lo]


def budget_curve(rows: list[dict], n: int, samples_per_s: float, budgets: list[float]) -> list[tuple[float, int, float, float]]:
    """(T, k(T), pass@k(T), maj@k(T)) for each budget T with k(T) >= 1 (k is capped at n)."""
    out = []
    for t in budgets:
        k = min(n, math.floor(t * samples_per_s))
        if k >= 1:
            out.append((t, k, *accuracy_at(rows, n, k)))
    return out


def plot_scaling(curves: dict[str, dict], path: Path, benchmark: str) -> None:
    """Two panels: accuracy vs samples, and accuracy vs seconds of budget per problem."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    ys: list[float] = []
    all_ks: set[int] = set()
    for model, c in curves.items():
        ks = [k for k, _, _ in c["by_k"]]
        a1.plot(ks, [m for _, _, m in c["by_k"]], marker="o", label=f"{model} maj@k")
        a1.plot(ks, [p for _, p, _ in c["by_k"]], linestyle="--", label=f"{model} pass@k")
        ts = [t for t, _, _, _ in c["by_time"]]
        a2.plot(ts, [m for *_, m in c["by_time"]], marker="o", label=f"{model} maj@k(T)")
        a2.plot(ts, [p for _, _, p, _ in c["by_time"]], linestyle="--", label=f"{model} pass@k(T)")
        ys += [v for _, p, m in c["by_k"] for v in (p, m)] + [v for *_, p, m in c["by_time"] for v in (p, m)]
        all_ks |= set(ks)
    a1.set_xscale("log", base=2)
    a1.set_xticks(sorted(all_ks), [str(k) for k in sorted(all_ks)])  # one label per k drawn, no overlap
    a1.xaxis.set_minor_formatter(NullFormatter())
    a1.set_xlabel("samples k")
    a2.set_xscale("log")
    a2.set_xlabel("wall-clock budget per problem T (s); k(T) = floor(T x samples/s)")
    a2.xaxis.set_major_formatter(ScalarFormatter())
    a2.xaxis.set_minor_formatter(NullFormatter())
    lo, hi = (min(ys), max(ys)) if ys else (0.0, 1.0)
    pad = max(0.02, 0.1 * (hi - lo))
    for a in (a1, a2):
        a.set_ylabel("accuracy")
        a.set_ylim(max(0.0, lo - pad), min(1.0, hi + pad))  # the data's range, not always 0..1
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    fig.suptitle(f"test-time scaling on {benchmark}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
