"""JSONL files in the two shapes the training and evaluation stages read.

- prompts (GRPO, evaluation): ``{"prompt": [user turn], "problem", "answer", "difficulty"}``,
  TRL's conversational prompt-only format plus the gold answer the grader needs;
- messages (SFT, distillation): ``{"messages": [user, assistant], "solution", "answer", ...}``,
  TRL's conversational language-modelling format.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from m1.tasks.arithmetic import Problem


def prompt_record(p: Problem) -> dict:
    return {"prompt": p.messages(), "problem": p.question, "answer": p.answer, "difficulty": p.difficulty}


def messages_record(p: Problem) -> dict:
    return {
        "messages": p.messages(with_solution=True),
        "problem": p.question,
        "solution": p.solution,
        "answer": p.answer,
        "difficulty": p.difficulty,
    }


def write_jsonl(path: str | Path, records: Iterable[dict]) -> int:
    """Write one JSON object per line; returns the number written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
            n += 1
    return n


def read_problems(path: str | Path) -> list[Problem]:
    """Problems back from either JSONL shape (the solution is empty for prompt-only files)."""
    out = []
    with Path(path).open() as f:
        for line in f:
            r = json.loads(line)
            out.append(Problem(question=r["problem"], solution=r.get("solution", ""), answer=r["answer"], difficulty=r["difficulty"]))
    return out
