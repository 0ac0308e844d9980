"""Turn problems into token ids for training: chat-formatted, loss on the assistant turn only."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from m1.tasks.arithmetic import Problem

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]


def prompt_ids(tokenizer: PreTrainedTokenizerBase, problem: Problem) -> list[int]:
    """The chat prompt up to and including the assistant header, as generation sees it."""
    return list(tokenizer.apply_chat_template(problem.messages(), add_generation_prompt=True, tokenize=True, return_dict=False))


def encode_example(tokenizer: PreTrainedTokenizerBase, problem: Problem) -> Example:
    """Prompt + solution + eos, with the prompt masked out of the loss.

    The template renders the assistant turn as ``<|assistant|>`` + content + eos, and special
    tokens split pre-tokenisation, so encoding the two parts apart gives the same ids as the
    whole conversation (a test checks this).
    """
    prompt = prompt_ids(tokenizer, problem)
    answer = tokenizer(problem.solution, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return Example(input_ids=prompt + answer, labels=[IGNORE_INDEX] * len(prompt) + answer)


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch for training (padding is masked from both attention and loss)."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}
