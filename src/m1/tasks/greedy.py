"""Greedy accuracy of any causal LM with ``generate()`` on task problems.

Prompts are left-padded and generated in batches: the same path serves the teacher and the
hybrid, so the hybrid's handling of left padding is exercised by the demo itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from m1.tasks.arithmetic import Problem
from m1.tasks.encode import prompt_ids


@dataclass
class GreedyResult:
    accuracy: float
    correct: int
    total: int
    completions: list[str]


@torch.no_grad()
def greedy_accuracy(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    problems: list[Problem],
    grade: Callable[[str, str], bool],
    batch_size: int = 128,
    max_new_tokens: int = 160,
    desc: str = "greedy",
) -> GreedyResult:
    """Generate greedily for every problem and grade each completion against its answer."""
    model.eval()
    completions: list[str] = []
    # Sorting by prompt length keeps left padding (and wasted compute) small within a batch.
    order = sorted(range(len(problems)), key=lambda i: len(problems[i].question))
    by_index: dict[int, str] = {}
    for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch"):
        idx = order[start : start + batch_size]
        prompts = [prompt_ids(tokenizer, problems[i]) for i in idx]
        width = max(map(len, prompts))
        ids = torch.full((len(prompts), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, p in enumerate(prompts):
            ids[row, width - len(p) :] = torch.tensor(p)
            mask[row, width - len(p) :] = 1
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        texts = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
        by_index.update(zip(idx, texts))
    completions = [by_index[i] for i in range(len(problems))]
    correct = sum(grade(c, p.answer) for c, p in zip(completions, problems))
    return GreedyResult(accuracy=correct / max(1, len(problems)), correct=correct, total=len(problems), completions=completions)
