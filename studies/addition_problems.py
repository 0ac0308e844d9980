"""A benchmark the 135M teacher solves above chance: two-digit additions, as m1 eval JSONL.

Why: on GSM8K and MATH500 SmolLM2-135M-Instruct scores at or below what guessing from the benchmark's
own answers scores (studies/results/gen_study_2026-12-07/), so a hybrid's share of its pass@k compares
two guessers. On 100 of these problems, greedy, the teacher scored 9.0% (95% CI 4.0-15.0) against a
chance line of 0.7%.

    python studies/addition_problems.py OUT.jsonl --n 500 --seed 0
"""

from __future__ import annotations

import argparse
import json
import random


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    rng = random.Random(a.seed)
    with open(a.out, "w") as f:
        for _ in range(a.n):
            x, y = rng.randint(10, 99), rng.randint(10, 99)
            f.write(json.dumps({"problem": f"What is {x} + {y}?", "answer": str(x + y)}) + "\n")


if __name__ == "__main__":
    main()
