"""Sampling with counter-based randomness: per-request reproducible, batch-independent,
and free of host syncs (so it sits inside the captured decode graph).

Each sample owns a 32-bit key (from seed, request index and sample index); the uniform
number for its token at position p is hash(key, p). Integer hashing is exact on every
device, so the stream is the same on CPU and GPU and whatever the batch holds. One
uniform per row is enough: the token is drawn by inverting the CDF of the (possibly
top-p/top-k truncated) distribution.

`logprob` is log_softmax(logits / T) at the chosen token before truncation, and the
raw log_softmax at T = 0: the quantity GRPO compares with the trainer. The untruncated draw
(no top-p, no top-k: the common case) is one op, `m1.ops.sampling.draw`, a Triton kernel on CUDA.
"""

from __future__ import annotations

import torch

from m1.ops.sampling import draw, invert_cdf

_M32 = 0xFFFFFFFF


def _mix32(x):
    """lowbias32 (Wellons): a 32-bit integer hash. Works on Python ints and int64 tensors alike."""
    x = x & _M32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32
    x = x ^ (x >> 16)
    return x


def sample_key(seed: int, request_index: int, sample_index: int) -> int:
    """The random stream of one sample: a function of its request's seed and indices only."""
    k = _mix32((seed & _M32) ^ _mix32(seed >> 32))
    k = _mix32(k ^ _mix32(request_index + 0x9E3779B9))
    return _mix32(k ^ _mix32(sample_index + 0x85EBCA6B))


def uniform(key: torch.Tensor, counter: torch.Tensor) -> torch.Tensor:
    """(b,) int64 keys and counters -> (b,) float32 in the open interval (0, 1)."""
    h = _mix32(key ^ _mix32(counter + 0x27D4EB2F))
    return ((h >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))


def sample(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_p: torch.Tensor,
    top_k: torch.Tensor,
    key: torch.Tensor,
    counter: torch.Tensor,
    truncate: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (b, V), any float dtype (computed in fp32); per-row temperature/top_p (float),
    top_k/key/counter (int64).

    Returns (tokens (b,) int64, logprobs (b,) fp32). `truncate` selects the sorted path
    (needed only when some row has top_p < 1 or top_k > 0); it is a Python flag so each
    captured graph has one fixed shape of work.
    """
    u = uniform(key, counter)
    if not truncate:  # the common case: one op over the full vocabulary (m1.ops.sampling, a kernel on CUDA)
        return draw(logits, temperature, u)
    logits = logits.float()
    greedy = logits.argmax(-1)
    t = torch.where(temperature > 0, temperature, torch.ones_like(temperature))
    logp = torch.log_softmax(logits / t.unsqueeze(1), dim=-1)
    sorted_logp, order = logp.sort(dim=-1, descending=True)
    probs = sorted_logp.exp()
    before = probs.cumsum(-1) - probs  # mass strictly above each token
    v = probs.shape[-1]
    rank = torch.arange(v, device=logits.device).unsqueeze(0)
    drop = (before >= top_p.unsqueeze(1)) & (top_p < 1.0).unsqueeze(1)
    drop |= (top_k > 0).unsqueeze(1) & (rank >= top_k.unsqueeze(1))
    probs = probs.masked_fill(drop, 0.0)
    drawn = order.gather(1, invert_cdf(probs, u).unsqueeze(1)).squeeze(1)
    tokens = torch.where(temperature > 0, drawn, greedy)
    return tokens, logp.gather(1, tokens.unsqueeze(1)).squeeze(1)
