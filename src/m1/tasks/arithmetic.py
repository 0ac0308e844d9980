"""Chained small-number arithmetic: the demo's synthetic, verifiable reasoning task.

A problem starts from a number and applies labelled operations (A: add 5. B: multiply by
2. ...). The solution writes one line per operation, then the answer in ``\\boxed{}``::

    B: multiply by 2: 42*2=84

Every step is locally computable: the line first copies the operation that follows its
label in the question (a plain induction-style copy, the easiest look-up for attention to
learn), and the left operand is the previous line's result. Values
stay in 0..99 and operands are single digits, so one step is a small table look-up a tiny
model can learn; the hard difficulty differs by chain length, so its per-step errors
compound stochastically instead of needing a skill the model lacks.

Train and test are disjoint by construction: a question's split is a hash of its text,
so no seed or size can put one question in both. Each split caps the share of any one gold
answer (`MAX_ANSWER_SHARE`), so no constant answer beats chance by much.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

from m1.data import PROMPT_SUFFIX  # M1's instruction, appended to every problem to form the user prompt

SPLITS = ("train", "test")
_TEST_SHARE = 5  # one question in 5 (by hash) belongs to the test split


@dataclass(frozen=True)
class Difficulty:
    """Shape of one difficulty: chain length and the range values and operands stay in."""

    name: str
    min_steps: int
    max_steps: int
    max_value: int = 99
    max_operand: int = 9
    ops: tuple[str, ...] = ("add", "sub", "mul", "div")
    # Distinct random letters as step labels (in question order) instead of A, B, C, ...:
    # the position of a label then says nothing, so the model must learn the look-up by
    # label, which should carry over from short chains to long ones. Off by default: the
    # demo teacher learned much slower with it (easy 11% vs ~60% greedy after ~500 steps).
    random_labels: bool = False


DIFFICULTIES: dict[str, Difficulty] = {
    "easy": Difficulty("easy", min_steps=2, max_steps=3),
    "hard": Difficulty("hard", min_steps=10, max_steps=14),
}

_LABELS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class Problem:
    """One task instance. ``question`` is the bare problem; ``prompt`` adds M1's instruction."""

    question: str
    solution: str
    answer: str
    difficulty: str

    @property
    def prompt(self) -> str:
        return f"{self.question}\n{PROMPT_SUFFIX}"

    def messages(self, with_solution: bool = False) -> list[dict[str, str]]:
        """Chat turns: the user prompt, and the assistant's solution if asked for."""
        turns = [{"role": "user", "content": self.prompt}]
        if with_solution:
            turns.append({"role": "assistant", "content": self.solution})
        return turns


# op name -> (question wording, solution symbol)
_OPS = {
    "add": ("add", "+"),
    "sub": ("subtract", "-"),
    "mul": ("multiply by", "*"),
    "div": ("divide by", "/"),
}


def _valid_operands(op: str, value: int, d: Difficulty) -> list[int]:
    """Operands keeping the running value an integer in 0..max_value."""
    ks = range(1, d.max_operand + 1)
    if op == "add":
        return [k for k in ks if value + k <= d.max_value]
    if op == "sub":
        return [k for k in ks if value - k >= 0]
    if op == "mul":
        return [k for k in ks if k >= 2 and value * k <= d.max_value]
    return [k for k in ks if k >= 2 and value > 0 and value % k == 0]


def _apply(op: str, value: int, k: int) -> int:
    if op == "add":
        return value + k
    if op == "sub":
        return value - k
    if op == "mul":
        return value * k
    return value // k


_LINE = re.compile(r"^([A-Z]): (.+?) (\d+): (-?\d+)([-+*/])(\d+)=(-?\d+)$")


def corrupt_solution(p: Problem, rng: random.Random) -> Problem:
    """``p`` with one step's result wrong (off by 1-9) and every later step computed on from the
    wrong value, as a model's slip would propagate; the boxed answer follows. The wrong value
    is one that keeps every later step valid (values in 0..max, exact divisions), so a wrong
    chain looks like a right one except for the slip. A verifier trained on such pairs learns
    to check each step's arithmetic, not to guess from a problem's length how likely an answer
    is to be right."""
    lines = p.solution.split("\n")
    steps = [i for i, line in enumerate(lines) if _LINE.match(line)]
    parsed = {i: _LINE.match(lines[i]).groups() for i in steps}
    top = max(int(g[3]) for g in parsed.values()) if parsed else 99
    top = max(top, max(int(g[6]) for g in parsed.values()))

    def carry(value: int, later: list[int]) -> list[int] | None:
        out = []
        for j in later:
            k, sym = int(parsed[j][2]), parsed[j][4]
            if sym == "/" and value % k:
                return None
            value = {"+": value + k, "-": value - k, "*": value * k, "/": value // k}[sym]
            if not 0 <= value <= max(top, 99):
                return None
            out.append(value)
        return out

    for i in rng.sample(steps, len(steps)):  # a step whose slip keeps the rest valid; the last always does
        label, word, k, a, sym, _, b = parsed[i]
        deltas = [d for d in range(-9, 10) if d and 0 <= int(b) + d <= max(top, 99)]
        rng.shuffle(deltas)
        later = steps[steps.index(i) + 1:]
        for d in deltas:
            values = carry(int(b) + d, later)
            if values is None:
                continue
            value = int(b) + d
            lines[i] = f"{label}: {word} {k}: {a}{sym}{k}={value}"
            for j, v in zip(later, values):
                label_j, word_j, k_j, _, sym_j, _, _ = parsed[j]
                lines[j] = f"{label_j}: {word_j} {k_j}: {value}{sym_j}{k_j}={v}"
                value = v
            lines[-1] = f"The answer is \\boxed{{{value}}}."
            return Problem(question=p.question, solution="\n".join(lines), answer=str(value), difficulty=p.difficulty)
    raise ValueError(f"no step of this solution can be corrupted: {p.solution!r}")


def split_of(question: str) -> str:
    """The split a question belongs to, fixed by its text so train and test never overlap."""
    h = int.from_bytes(hashlib.sha256(question.encode()).digest()[:8], "big")
    return "test" if h % _TEST_SHARE == 0 else "train"


def resolve(difficulty: str | Difficulty) -> Difficulty:
    """A difficulty by name (one of `DIFFICULTIES`) or as given."""
    if isinstance(difficulty, Difficulty):
        return difficulty
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {sorted(DIFFICULTIES)}, got {difficulty!r}")
    return DIFFICULTIES[difficulty]


def sample_problem(rng: random.Random, difficulty: str | Difficulty) -> Problem:
    """Draw one problem: op kind uniform over kinds with a valid operand, then the operand."""
    d = resolve(difficulty)
    n_steps = rng.randint(d.min_steps, d.max_steps)
    start = value = rng.randint(1, d.max_value)
    labels = rng.sample(_LABELS, n_steps) if d.random_labels else _LABELS[:n_steps]
    ops_text, lines = [], []
    for label in labels:
        choices = {op: ks for op in d.ops if (ks := _valid_operands(op, value, d))}
        op = rng.choice(sorted(choices))
        k = rng.choice(choices[op])
        new = _apply(op, value, k)
        word, sym = _OPS[op]
        ops_text.append(f"{label}: {word} {k}.")
        lines.append(f"{label}: {word} {k}: {value}{sym}{k}={new}")
        value = new
    question = f"Start with {start}. " + " ".join(ops_text) + " What is the final number?"
    solution = "\n".join(lines) + f"\nThe answer is \\boxed{{{value}}}."
    return Problem(question=question, solution=solution, answer=str(value), difficulty=d.name)


def make_split(difficulty: str | Difficulty, n: int, seed: int = 0, split: str = "train") -> list[Problem]:
    """``n`` distinct problems of one difficulty and split, the same for the same arguments."""
    d = resolve(difficulty)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    rng = random.Random(f"m1-task/{d.name}/{split}/{seed}")
    seen: set[str] = set()
    per_answer: dict[str, int] = {}
    out: list[Problem] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 200 * n + 10_000:
            raise RuntimeError(f"could not draw {n} distinct {difficulty}/{split} problems")
        p = sample_problem(rng, d)
        if p.question in seen or split_of(p.question) != split or not answer_allowed(per_answer.get(p.answer, 0), len(out)):
            continue
        seen.add(p.question)
        per_answer[p.answer] = per_answer.get(p.answer, 0) + 1
        out.append(p)
    return out


#: No answer may be the gold of much more than this share of a split, or of any prefix of
#: it: the best constant answer then scores about chance (chains drift towards small
#: values, and without the cap always answering "1" scored 5.4% on the hard test split).
MAX_ANSWER_SHARE = 0.02
ANSWER_SLACK = 2  # extra problems per answer allowed above the share (lets short prefixes start)


def answer_allowed(count: int, drawn: int) -> bool:
    """Whether one more problem with an answer already held by ``count`` of the ``drawn`` so far
    may join. It depends on the history only, so a split of n is a prefix of a split of m > n;
    any prefix of k problems holds at most ``MAX_ANSWER_SHARE * k + ANSWER_SLACK`` per answer."""
    return count + 1 <= MAX_ANSWER_SHARE * (drawn + 1) + ANSWER_SLACK
