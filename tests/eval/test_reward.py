from m1.eval.reward import math_reward, math_reward_func


def test_math_reward_is_one_or_zero():
    assert math_reward("so \\boxed{\\frac12}", "0.5") == 1.0
    assert math_reward("so \\boxed{3}", "0.5") == 0.0


def test_format_penalty_only_without_a_box():
    assert math_reward("the answer is 0.5", "0.5", format_penalty=0.2) == 1.0 - 0.2  # graded by the fallback
    assert math_reward("nothing", "0.5", format_penalty=0.2) == -0.2
    assert math_reward("\\boxed{4}", "0.5", format_penalty=0.2) == 0.0


def test_trl_signature_accepts_conversational_completions():
    completions = [[{"role": "assistant", "content": "\\boxed{7}"}], "\\boxed{8}"]
    assert math_reward_func(completions, answer=["7", "7"], prompts=None) == [1.0, 0.0]
