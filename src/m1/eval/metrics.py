"""pass@k, majority vote, maj@k, verify@k and a 95% interval for pass@1.

maj@k and verify@k are averaged over `n_subsets` seeded random subsets of size k of the
n samples, so curves over k are smooth and reproducible. Equivalence groups are built
once per problem, so each subset costs only a count.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Sequence
from fractions import Fraction

from m1.eval.answer import normalize_answer
from m1.eval.grader import answers_equivalent


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k).

    Computed with exact integers (Codex paper, Chen et al. 2021), so it does not lose
    precision for large n the way the product form in floating point can.
    """
    if not (0 <= c <= n) or not (1 <= k <= n):
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return float(1 - Fraction(math.comb(n - c, k), math.comb(n, k)))


def equivalence_groups(answers: Sequence[str | None]) -> list[int | None]:
    """Group id per answer (None for None); equivalent answers share the earliest one's id.

    Exact normalised duplicates are merged first, so the pairwise equivalence checks run
    only over distinct answers.
    """
    keys = [normalize_answer(a) if a is not None else None for a in answers]
    reps: list[str] = []  # one representative per group, in order of first appearance
    key_group: dict[str, int] = {}
    out: list[int | None] = []
    for key in keys:
        if not key:
            out.append(None)
            continue
        if key not in key_group:
            gid = next((i for i, r in enumerate(reps) if answers_equivalent(r, key)), None)
            if gid is None:
                gid = len(reps)
                reps.append(key)
            key_group[key] = gid
        out.append(key_group[key])
    return out


def _vote(groups: Sequence[int | None], idx: Sequence[int], weights: Sequence[float] | None = None) -> int | None:
    """Index (into the samples) of the winning answer among samples `idx` (sorted): the answer
    group with the most samples, or the most weight when `weights` are given; ties go to the earliest."""
    counts: dict[int, float] = {}
    first: dict[int, int] = {}
    for i in idx:
        g = groups[i]
        if g is None:
            continue
        counts[g] = counts.get(g, 0) + (1 if weights is None else weights[i])
        first.setdefault(g, i)
    if not counts:
        return None
    best = max(counts, key=lambda g: (counts[g], -first[g]))
    return first[best]


def majority_vote(answers: Sequence[str | None]) -> str | None:
    """The most common answer, equivalent answers pooled; ties go to the earliest; None never wins."""
    groups = equivalence_groups(answers)
    win = _vote(groups, range(len(answers)))
    return None if win is None else answers[win]


def _subsets(n: int, k: int, n_subsets: int, seed: int) -> list[list[int]]:
    if k >= n:
        return [list(range(n))]
    rng = random.Random(seed)
    return [sorted(rng.sample(range(n), k)) for _ in range(n_subsets)]


def maj_at_k(
    answers: Sequence[str | None], correct: Sequence[bool], k: int, n_subsets: int = 100, seed: int = 0,
    groups: Sequence[int | None] | None = None,
) -> float:
    """Mean correctness of the majority answer over seeded random size-k subsets."""
    groups = equivalence_groups(answers) if groups is None else groups
    subs = _subsets(len(answers), k, n_subsets, seed)
    hits = 0
    for idx in subs:
        win = _vote(groups, idx)
        hits += win is not None and bool(correct[win])
    return hits / len(subs)


def verify_at_k(scores: Sequence[float], correct: Sequence[bool], k: int, n_subsets: int = 100, seed: int = 0) -> float:
    """Mean correctness of the highest-scoring sample (ties: earliest) over size-k subsets."""
    subs = _subsets(len(scores), k, n_subsets, seed)
    hits = 0
    for idx in subs:
        best = max(idx, key=lambda i: (scores[i], -i))
        hits += bool(correct[best])
    return hits / len(subs)


def weighted_vote_at_k(answers: Sequence[str | None], scores: Sequence[float], correct: Sequence[bool], k: int,
                       n_subsets: int = 100, seed: int = 0, groups: Sequence[int | None] | None = None) -> float:
    """Verifier-weighted majority vote over seeded size-k subsets: each answer group collects the
    verifier's probability that its samples are correct (sigmoid of the score), the heaviest
    group wins (ties: earliest), and the winner's correctness is averaged.

    Best-of-k (`verify_at_k`) trusts the single top score; weighted voting lets agreement among
    samples outvote a verifier that is confident and wrong, and lets the verifier break ties
    and near-ties that plain voting leaves to chance (Uesato et al. 2022, ORM-weighted voting).
    """
    groups = equivalence_groups(answers) if groups is None else groups
    weights = [1.0 / (1.0 + math.exp(-s)) for s in scores]
    subs = _subsets(len(answers), k, n_subsets, seed)
    hits = 0
    for idx in subs:
        win = _vote(groups, idx, weights)
        hits += win is not None and bool(correct[win])
    return hits / len(subs)


def mean_interval(values: Sequence[float], n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean over problems and its 95% percentile-bootstrap interval (problems resampled).

    Bootstrapping over problems needs no normality assumption, which matters for the small
    benchmarks (30 AIME problems) where per-problem pass rates pile up at 0 and 1.
    """
    if not values:
        raise ValueError("no values")
    n = len(values)
    mean = sum(values) / n
    boots = sorted(sum(values[i] for i in idx) / n for idx in _bootstrap_draws(n, n_boot, seed))
    return mean, boots[int(0.025 * n_boot)], boots[min(n_boot - 1, int(0.975 * n_boot))]


@functools.lru_cache(maxsize=8)
def _bootstrap_draws(n: int, n_boot: int, seed: int) -> tuple[tuple[int, ...], ...]:
    """The problem indices of each bootstrap draw. They depend only on (n, n_boot, seed), so a
    summary's many intervals over the same problems (pass@k and maj@k at every k) share one set
    of draws instead of drawing 2,000 x n random indices for each."""
    rng = random.Random(seed)
    return tuple(tuple(rng.randrange(n) for _ in range(n)) for _ in range(n_boot))


def paired_difference_interval(a: Sequence[float], b: Sequence[float], n_boot: int = 2000,
                               seed: int = 0) -> tuple[float, float, float]:
    """mean(a) - mean(b) over the same problems, and its 95% paired-bootstrap interval.

    ``a[i]`` and ``b[i]`` are two systems' scores on problem i; each bootstrap draw resamples
    problems and keeps the pair together, so the interval reflects the difference alone,
    not the spread of problem difficulty that the two share.
    """
    if len(a) != len(b):
        raise ValueError(f"paired scores need equal lengths, got {len(a)} and {len(b)}")
    return mean_interval([x - y for x, y in zip(a, b)], n_boot=n_boot, seed=seed)


def ratio_interval(a: Sequence[float], b: Sequence[float], n_boot: int = 2000,
                   seed: int = 0) -> tuple[float, float, float]:
    """mean(a) / mean(b) over the same problems, and its 95% paired-bootstrap interval.

    How much of system b's score system a keeps (a hybrid's share of its teacher's pass@k):
    each draw resamples problems with the pair kept together, as `paired_difference_interval`
    does. A draw whose mean(b) is 0 counts as an infinite ratio, so it widens the interval
    rather than vanishing from it; the ratio itself is `inf` when mean(b) is 0.
    """
    if len(a) != len(b):
        raise ValueError(f"paired scores need equal lengths, got {len(a)} and {len(b)}")
    if not a:
        raise ValueError("no values")
    n = len(a)

    def ratio(sa: float, sb: float) -> float:
        return sa / sb if sb > 0 else (math.inf if sa > 0 else 1.0)

    boots = sorted(ratio(sum(a[i] for i in idx), sum(b[i] for i in idx)) for idx in _bootstrap_draws(n, n_boot, seed))
    return ratio(sum(a), sum(b)), boots[int(0.025 * n_boot)], boots[min(n_boot - 1, int(0.975 * n_boot))]


def constant_answer_baseline(golds: Sequence[str]) -> tuple[str | None, float]:
    """The most frequent gold answer and the accuracy of always answering it (chance level)."""
    if not golds:
        return None, 0.0
    counts: dict[str, int] = {}
    for g in golds:
        counts[g] = counts.get(g, 0) + 1
    best = max(counts, key=lambda g: (counts[g], -list(counts).index(g)))
    return best, counts[best] / len(golds)


def guessing_pass_at_k(golds: Sequence[str], ks: Sequence[int]) -> dict[int, float]:
    """pass@k of a guesser that knows the benchmark's answers but not which problem has which: each
    of its k guesses is drawn (with replacement) from the *other* problems' gold answers.

    Why: pass@k at large k rewards guessing wherever answers repeat. On GSM8K's first 500 test
    problems (small integers recur) this guesser reaches pass@64 of 40%, above SmolLM2-135M-Instruct's
    26%, so a model's pass@k means little until it clears this line. For problem i with gold g,
    one guess hits with q = (count(g) - 1) / (P - 1), and k guesses with 1 - (1 - q)^k; the mean
    over problems is returned. Golds are compared as exact strings (equivalent forms such as
    "0.5" and "1/2" are not merged), so the line is, if anything, low.
    """
    P = len(golds)
    if P < 2:
        return {k: 0.0 for k in ks}
    counts: dict[str, int] = {}
    for g in golds:
        counts[g] = counts.get(g, 0) + 1
    qs = [(counts[g] - 1) / (P - 1) for g in golds]
    return {k: sum(1.0 - (1.0 - q) ** k for q in qs) / P for k in ks}


def chance_baseline(golds: Sequence[str | None], ks: Sequence[int]) -> dict | None:
    """The chance line of a run (None when a gold is missing): `guessing_pass_at_k` at each k, keyed
    by str(k), and the constant answer with its accuracy. `m1 eval` and `m1 compare` both report it."""
    if not golds or any(g is None for g in golds):
        return None
    golds = [str(g) for g in golds]
    constant, accuracy = constant_answer_baseline(golds)
    return {"pass@k": {str(k): v for k, v in guessing_pass_at_k(golds, ks).items()},
            "constant_answer": constant, "constant_accuracy": accuracy}


def k_values(n: int) -> list[int]:
    """1, 2, 4, ... up to n (n itself included)."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    ks.append(n)
    return ks
