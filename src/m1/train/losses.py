"""Distillation divergences, chunked over tokens so full logits never sit in memory.

For 8192 tokens and a 128K vocabulary, fp32 logits of one sequence take 4 GiB, and
autograd would keep the student's and teacher's (plus softmaxes) alive for backward.
`chunked_divergence` instead takes final *hidden states* of the tokens that count
(assistant tokens only), and walks them in chunks: each chunk projects through both LM
heads, computes its divergence sum, and is wrapped in activation checkpointing, so only
the chunk's hidden states are saved and its logits are recomputed in backward. Peak
memory is one chunk's (chunk x vocab) logits, whatever the sequence length.

Per-token divergences between teacher p_T and student p_S (both softmax(logits / T)):
- ``forward_kl``: KL(p_T || p_S), mass-covering (MambaInLlama);
- ``reverse_kl``: KL(p_S || p_T), mode-seeking (M1);
- ``jsd``: beta KL(p_T || m) + (1 - beta) KL(p_S || m), m = beta p_T + (1 - beta) p_S.

The function returns the *sum* over tokens; the caller divides by its token count, so
the normalisation is always explicit at the call site.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

DIVERGENCES = ("reverse_kl", "forward_kl", "jsd")


def token_divergence(s_logp: torch.Tensor, t_logp: torch.Tensor, kind: str, beta: float = 0.5) -> torch.Tensor:
    """Per-row divergence from log-probabilities of shape (N, V); returns (N,)."""
    if kind == "forward_kl":
        return (t_logp.exp() * (t_logp - s_logp)).sum(-1)
    if kind == "reverse_kl":
        return (s_logp.exp() * (s_logp - t_logp)).sum(-1)
    if kind == "jsd":
        if not 0.0 < beta < 1.0:
            raise ValueError(f"jsd beta must be in (0, 1), got {beta}")
        m = torch.logsumexp(torch.stack([t_logp + math.log(beta), s_logp + math.log(1 - beta)]), dim=0)
        kl_t = (t_logp.exp() * (t_logp - m)).sum(-1)
        kl_s = (s_logp.exp() * (s_logp - m)).sum(-1)
        return beta * kl_t + (1 - beta) * kl_s
    raise ValueError(f"unknown divergence {kind!r}; choose one of {DIVERGENCES}")


def _scaled(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """fp32 logits / temperature; at temperature 1 no division (x / 1 is x exactly): it would be a
    full pass over (chunk x vocab) forward, in the recompute and in backward."""
    logits = logits.float()
    return logits if temperature == 1.0 else logits / temperature


def _chunk_sum(s_hidden, t_hidden, s_weight, t_weight, kind, beta, temperature):
    s_logits = _scaled(F.linear(s_hidden, s_weight), temperature)
    with torch.no_grad():
        t_logp = F.log_softmax(_scaled(F.linear(t_hidden, t_weight), temperature), dim=-1)
    s_logp = F.log_softmax(s_logits, dim=-1)
    return token_divergence(s_logp, t_logp, kind, beta).sum()


def chunked_divergence(
    s_hidden: torch.Tensor,
    t_hidden: torch.Tensor,
    s_head: torch.nn.Module,
    t_head: torch.nn.Module,
    kind: str,
    chunk_size: int = 1024,
    beta: float = 0.5,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Sum over rows of the divergence between teacher and student next-token distributions.

    ``s_hidden`` (N, H_s) and ``t_hidden`` (N, H_t) are the final hidden states of the
    tokens to score (already selected: assistant positions only). Heads must be bias-free
    linear layers (as in every Llama-family model).
    """
    if kind not in DIVERGENCES:
        raise ValueError(f"unknown divergence {kind!r}; choose one of {DIVERGENCES}")
    if s_head.bias is not None or t_head.bias is not None:
        raise ValueError("chunked_divergence expects bias-free LM heads")
    if s_head.weight.shape[0] != t_head.weight.shape[0]:
        raise ValueError(f"student vocab {s_head.weight.shape[0]} != teacher vocab {t_head.weight.shape[0]}")
    total = s_hidden.new_zeros((), dtype=torch.float32)
    t_hidden = t_hidden.detach()
    for start in range(0, s_hidden.shape[0], chunk_size):
        s = s_hidden[start : start + chunk_size]
        t = t_hidden[start : start + chunk_size]
        if torch.is_grad_enabled() and s.requires_grad:
            total = total + checkpoint(_chunk_sum, s, t, s_head.weight, t_head.weight, kind, beta, temperature, use_reentrant=False)
        else:
            total = total + _chunk_sum(s, t, s_head.weight, t_head.weight, kind, beta, temperature)
    return total


def next_token_positions(labels: torch.Tensor) -> torch.Tensor:
    """Boolean (B, L) mask of positions whose *next* token is a training target (labels != -100)."""
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != -100
    return mask
