"""Is a completion's final answer equal to the gold? Fast in the common case, never hangs.

`grade` is called thousands of times per GRPO step and per eval, so it is layered:
1. extraction and normalisation in pure Python (linear time; `m1.eval.answer`);
2. exact string equality, then exact rational comparison of plain numbers;
3. a screen that keeps explosive expressions (power towers, huge factorials) from sympy;
4. math-verify in a worker process killed at the time limit (`m1.eval.verify_pool`),
   with verdicts cached, so repeated pairs (majority vote, GRPO groups) cost nothing.
Steps 1-3 settle AIME, AMC and GSM8K answers in microseconds without a process round trip.
"""

from __future__ import annotations

import functools
import logging

from m1.eval.answer import as_number, extract_answer, gold_answer, is_pathological
from m1.eval.verify_pool import get_pool

logger = logging.getLogger(__name__)

# Seconds math-verify may spend on one comparison; with extraction (milliseconds even on a
# 200k-character completion) a `grade` call stays under 2 s in all cases.
TIME_LIMIT_S = 1.5


def answers_equivalent(gold: str | None, pred: str | None, timeout: float = TIME_LIMIT_S) -> bool:
    """Whether two already-extracted answers are mathematically equal (gold first)."""
    if not gold or not pred:
        return False
    if gold == pred:
        return True
    g, p = as_number(gold), as_number(pred)
    if g is not None and p is not None:
        return g == p
    if is_pathological(gold) or is_pathological(pred):
        return False
    return _math_verify_cached(gold, pred, timeout)


@functools.lru_cache(maxsize=1 << 16)
def _math_verify_cached(gold: str, pred: str, timeout: float) -> bool:
    return bool(get_pool().compare(gold, pred, timeout))


def grade(completion: str | None, gold: object, timeout: float = TIME_LIMIT_S) -> bool:
    """True if the completion's final answer (last `\\boxed{}`) equals the gold answer.

    `gold` may be a bare answer (`"0.5"`, `"\\frac{\\pi}{2}"`, `27.0`, `"025"`), a boxed
    answer, or a GSM8K solution ending in `#### 18`.
    """
    pred = extract_answer(completion)
    if pred is None:
        return False
    return answers_equivalent(gold_answer(gold), pred, timeout)


def warm_up(workers: int = 1) -> None:
    """Start math-verify workers now, so the first slow-path `grade` pays no start-up."""
    get_pool().warm_up(workers)
