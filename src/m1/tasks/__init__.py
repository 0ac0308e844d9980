"""The demo's synthetic reasoning task: chained small-number arithmetic with boxed answers.

Light to import (no torch); the tokenizer and the teacher live in their own modules
(`m1.tasks.tokenizer`, `m1.tasks.teacher`); accuracy is measured by `m1.eval`.
"""

from m1.tasks.arithmetic import DIFFICULTIES, PROMPT_SUFFIX, SPLITS, Difficulty, Problem, make_split, sample_problem, split_of
from m1.tasks.export import messages_record, prompt_record, read_problems, write_jsonl

__all__ = [
    "DIFFICULTIES",
    "PROMPT_SUFFIX",
    "SPLITS",
    "Difficulty",
    "Problem",
    "make_split",
    "sample_problem",
    "split_of",
    "messages_record",
    "prompt_record",
    "read_problems",
    "write_jsonl",
]
