"""Mean sampled reward of a policy on task problems (the quantity GRPO maximises)."""

from __future__ import annotations

import torch

from m1.eval.reward import math_reward
from m1.tasks.encode import prompt_ids


@torch.no_grad()
def sampled_reward(model, tokenizer, problems, n: int = 8, temperature: float = 0.9, max_new_tokens: int = 48, seed: int = 0) -> float:
    """Mean of m1's reward over ``n`` samples per problem at ``temperature`` (left-padded batched generate)."""
    model.eval()
    prompts = [prompt_ids(tokenizer, p) for p in problems for _ in range(n)]
    golds = [p.answer for p in problems for _ in range(n)]
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    torch.manual_seed(seed)
    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                         max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    texts = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
    return sum(math_reward(t, g) for t, g in zip(texts, golds)) / len(texts)
