"""The task generator: determinism, disjoint splits, and solutions that check out."""

from __future__ import annotations

import re

import pytest

from m1.eval import extract_answer, grade
from m1.tasks import DIFFICULTIES, PROMPT_SUFFIX, make_split, split_of

LINE = re.compile(r"^([A-Z]): (add|subtract|multiply by|divide by) (\d): (\d+)([-+*/])(\d)=(\d+)$")
SYMBOL = {"add": "+", "subtract": "-", "multiply by": "*", "divide by": "/"}


@pytest.mark.parametrize("difficulty", ["easy", "hard"])
def test_same_arguments_same_problems(difficulty):
    assert make_split(difficulty, 50, seed=3) == make_split(difficulty, 50, seed=3)
    assert make_split(difficulty, 50, seed=3) != make_split(difficulty, 50, seed=4)


def test_prefix_of_a_larger_split_is_the_smaller_split():
    # Growing n only appends, so quick and full runs share their first problems.
    assert make_split("hard", 100, seed=1, split="test")[:40] == make_split("hard", 40, seed=1, split="test")


@pytest.mark.parametrize("difficulty", ["easy", "hard"])
def test_train_and_test_are_disjoint_across_seeds(difficulty):
    test = {p.question for s in (0, 1) for p in make_split(difficulty, 1000, seed=s, split="test")}
    train = {p.question for s in (0, 1, 2) for p in make_split(difficulty, 3000, seed=s, split="train")}
    assert not test & train
    assert all(split_of(q) == "test" for q in test)


def test_problems_within_a_split_are_distinct():
    ps = make_split("easy", 2000, seed=0)
    assert len({p.question for p in ps}) == len(ps)


def test_hard_test_set_can_hold_a_thousand_problems():
    assert len(make_split("hard", 1000, seed=0, split="test")) == 1000


def _replay(question: str) -> tuple[int, list[tuple[str, str, int]]]:
    start = int(re.match(r"Start with (\d+)\.", question).group(1))
    ops = re.findall(r"([A-Z]): (add|subtract|multiply by|divide by) (\d)\.", question)
    return start, [(label, word, int(k)) for label, word, k in ops]


@pytest.mark.parametrize("difficulty", ["easy", "hard"])
def test_every_solution_line_is_correct_and_the_boxed_answer_is_the_result(difficulty):
    d = DIFFICULTIES[difficulty]
    for p in make_split(difficulty, 300, seed=0) + make_split(difficulty, 300, seed=0, split="test"):
        value, ops = _replay(p.question)
        assert d.min_steps <= len(ops) <= d.max_steps
        lines = p.solution.split("\n")
        assert len(lines) == len(ops) + 1
        for (label, word, k), line in zip(ops, lines):
            m = LINE.match(line)
            assert m, line
            assert m.group(1, 2, 3) == (label, word, str(k))
            assert int(m.group(4)) == value and m.group(5) == SYMBOL[word] and int(m.group(6)) == k
            new = eval(f"{value}{SYMBOL[word]}{k}")  # noqa: S307 - our own digits and operators
            assert new == int(new) and 0 <= new <= d.max_value
            assert int(m.group(7)) == new
            value = int(new)
        assert lines[-1] == f"The answer is \\boxed{{{value}}}."
        assert p.answer == str(value)
        assert extract_answer(p.solution) == p.answer
        assert grade(p.solution, p.answer)


def test_prompt_is_the_question_plus_m1_instruction():
    p = make_split("easy", 1, seed=0)[0]
    assert p.prompt == f"{p.question}\n{PROMPT_SUFFIX}"
    assert p.messages() == [{"role": "user", "content": p.prompt}]
    assert p.messages(with_solution=True)[1] == {"role": "assistant", "content": p.solution}


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="difficulty"):
        make_split("medium", 1)
    with pytest.raises(ValueError, match="split"):
        make_split("easy", 1, split="dev")


@pytest.mark.parametrize("difficulty", ["easy", "hard"])
def test_no_constant_answer_beats_three_percent(difficulty):
    """The best constant answer (the most frequent gold) scores <= 3% on every split the demo draws."""
    from collections import Counter

    for split, n in (("test", 200), ("test", 1000), ("train", 2000)):
        ps = make_split(difficulty, n, seed=0, split=split)
        assert Counter(p.answer for p in ps).most_common(1)[0][1] / n <= 0.03, (split, n)
