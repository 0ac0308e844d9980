"""Is a completion's final answer equal to the gold? Fast in the common case, never hangs.

`grade` is called thousands of times per GRPO step and per eval, so it is layered:
1. extraction and normalisation in pure Python (linear time; `m1.eval.answer`);
2. exact string equality, then exact rational comparison of plain numbers;
3. a screen that keeps explosive expressions (power towers, huge factorials) from sympy;
4. math-verify in a worker process killed at the time limit (`m1.eval.grader_pool`),
   with verdicts cached, so repeated pairs (majority vote, GRPO groups) cost nothing.
Steps 1-3 settle AIME, AMC and GSM8K answers in microseconds without a process round trip.
"""

from __future__ import annotations

import functools
import logging

import re

from m1.eval.answer import (
    as_number,
    compact,
    extract_answer,
    gold_answer,
    is_pathological,
    is_unevaluated_arithmetic,
    last_equation_side,
    normalize_answer,
    numbers_equal,
    split_top_level,
    strip_outer_parens,
)
from m1.eval.grader_pool import get_pool

logger = logging.getLogger(__name__)

# Seconds math-verify may spend on one comparison; with extraction (milliseconds even on a
# 200k-character completion) a `grade` call stays under 2 s in all cases.
TIME_LIMIT_S = 1.7


def answers_equivalent(gold: str | None, pred: str | None, timeout: float = TIME_LIMIT_S) -> bool:
    """Whether two extracted answers are mathematically equal (gold first: the order matters
    for assignments, `x = 3` matches a gold of `3`, and for math-verify)."""
    if not gold or not pred:
        return False
    gold, pred = normalize_answer(gold), normalize_answer(pred)
    if not gold or not pred:
        return False
    fast = _fast_verdict(gold, pred)
    if fast is not None:
        return fast
    if is_pathological(gold) or is_pathological(pred):  # before the list and chain rules, which call math-verify too
        return False
    if _lists_match(gold, pred, timeout):
        return True
    if _same_lhs_chains_match(gold, pred, timeout):
        return True
    return _math_verify_cached(gold, pred, timeout)


def _fast_verdict(gold: str, pred: str) -> bool | None:
    """Decide without sympy when both sides are strings-equal or plain numbers; else None."""
    if gold == pred or compact(gold) == compact(pred):
        return True
    if "matrix" in gold and compact(gold.replace("\\\\", "")) == compact(pred.replace("\\\\", "")):
        return True  # a gold whose matrix row breaks were stripped (Qwen's harness does this)
    if gold.isalpha() and pred.isalpha():
        return gold.lower() == pred.lower()
    g = as_number(gold)
    if g is None:
        return None
    p = as_number(pred)
    if p is None and "=" not in gold:
        rhs = last_equation_side(pred)
        p = as_number(rhs) if rhs is not None else None
    if p is not None:
        return numbers_equal(g, p)
    if is_unevaluated_arithmetic(pred):
        return False  # "15 + 43" for 58 restates the question; a numeric gold wants the number
    return None


def _lists_match(gold: str, pred: str, timeout: float) -> bool:
    """Bare answer lists (`-5, 7`) match as multisets, element by element.

    Catches what math-verify misses: a gold list against a parenthesised prediction
    (`-2,-2` vs `(-2, -2)`), items written as assignments (`a = -2, b = -2`) or joined by
    "and", and repeated values (a set would collapse `-2,-2`).
    """
    if gold[:1] in "([{" and gold[-1:] in ")]}":
        return False  # a tuple/interval/set gold: order and brackets matter, math-verify decides
    golds = split_top_level(gold)
    if len(golds) < 2:
        return False
    preds = split_top_level(strip_outer_parens(re.sub(r"\\text\{\s*(?:and|or)\s*\}|\band\b", ",", pred)))
    if len(preds) != len(golds):
        return False
    preds = [last_equation_side(p) or p for p in preds]
    unused = list(preds)
    for g in golds:
        hit = next((i for i, p in enumerate(unused) if answers_equivalent(g, p, timeout)), None)
        if hit is None:
            return False
        unused.pop(hit)
    return True


def _same_lhs_chains_match(gold: str, pred: str, timeout: float) -> bool:
    """`x = 5+5+1 = 11` for `x = 11`: equations about the same left side match on their last sides.

    An equation chain states its result last; math-verify compares the whole chain as
    lhs - rhs of its first `=` and so misses it. Only the same left side (spacing and
    single-character braces aside) counts: `y = 2x` is not `x = y/2` here.
    """
    if len(split_top_level(gold)) > 1 or len(split_top_level(pred)) > 1:
        return False  # a list of equations (`f(x)=-1,f(x)=x+1`), not one chain
    g_sides, p_sides = split_top_level(gold, "="), split_top_level(pred, "=")
    if len(g_sides) < 2 or len(p_sides) < 2 or len(g_sides) + len(p_sides) == 4:
        return False  # two plain equations: math-verify compares them (lhs - rhs up to sign)
    if compact(g_sides[0]) != compact(p_sides[0]):
        return False
    g_last, p_last = last_equation_side(gold), last_equation_side(pred)
    return bool(g_last and p_last) and answers_equivalent(g_last, p_last, timeout)


@functools.lru_cache(maxsize=1 << 16)
def _math_verify_cached(gold: str, pred: str, timeout: float) -> bool:
    return bool(get_pool().compare(gold, pred, timeout))


def grade(completion: str | None, gold: object, timeout: float = TIME_LIMIT_S, lenient: bool = False) -> bool:
    """True if the completion's final answer equals the gold answer.

    The final answer is the last `\\boxed{}`, else a `#### x` or final-answer statement in the
    closing lines (`m1.eval.answer.extract_answer`). `lenient=True`, for models that do not
    box, also takes a number that a closing statement states ("... is 9.", "so x = 5") when
    the gold is a number.
    `gold` may be a bare answer (`"0.5"`, `"\\frac{\\pi}{2}"`, `27.0`, `"025"`), a boxed
    answer, or a GSM8K solution ending in `#### 18`.
    """
    pred = final_answer(completion, gold, lenient)
    if pred is None:
        return False
    return answers_equivalent(gold_answer(gold), pred, timeout)


def final_answer(completion: str | None, gold: object, lenient: bool = False) -> str | None:
    """The answer `grade` compares: lenient extraction applies only when the gold is a number."""
    return extract_answer(completion, lenient=lenient and as_number(gold_answer(gold)) is not None)


def answer_and_verdict(completion: str | None, gold: str, lenient: bool = False) -> tuple[str | None, bool]:
    """A samples.jsonl row's `answer` and `correct`: how `m1 eval` grades a sample as it runs and
    how `m1 regrade` grades it again, so the two cannot drift apart."""
    ans = final_answer(completion, gold, lenient=lenient)
    return ans, answers_equivalent(gold, ans)


def warm_up(workers: int = 1) -> None:
    """Start math-verify workers now, so the first slow-path `grade` pays no start-up."""
    get_pool().warm_up(workers)
