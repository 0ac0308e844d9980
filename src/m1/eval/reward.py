"""GRPO reward: 1 for a correct final answer, 0 otherwise, with an optional format penalty."""

from __future__ import annotations

from m1.eval.grader import grade, warm_up

_warm = False


def math_reward(completion: str, gold: object, format_penalty: float = 0.0) -> float:
    """1.0 if the last `\\boxed{}` equals `gold`, else 0.0; minus `format_penalty` without any `\\boxed{}`.

    The penalty teaches the policy the output format early, when almost no answer is right
    yet and the correctness signal alone is too sparse.
    """
    reward = 1.0 if grade(completion, gold) else 0.0
    if "\\boxed" not in completion and "\\fbox" not in completion:
        reward -= format_penalty
    return reward


def _text(completion) -> str:
    if isinstance(completion, list):  # TRL conversational format: [{"role": ..., "content": ...}]
        return "".join(m.get("content", "") for m in completion if isinstance(m, dict))
    return str(completion)


def math_reward_func(completions: list, answer: list, format_penalty: float = 0.0, **_: object) -> list[float]:
    """`math_reward` in TRL's reward-function signature (dataset column `answer` holds the gold).

    The first call starts the math-verify worker and waits for it, so no early reward is
    lost to the worker's start-up (grade itself never waits past its time limit).
    """
    global _warm
    if not _warm:
        warm_up()
        _warm = True
    return [math_reward(_text(c), a, format_penalty) for c, a in zip(completions, answer)]
