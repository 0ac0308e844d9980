"""Decode attention over the paged KV cache: a plain reference and a Triton kernel.

q (b, H, d) is one query token per row; the keys and values of row r are the first
seq_lens[r] positions of the blocks listed in block_tables[r]. GQA: query head h reads
kv head h // (H / KVH).

The reference gathers the blocks into a contiguous copy (fine on CPU, and the
definition the kernel is tested against). The kernel (`m1.ops.triton.paged_attention`) reads
the blocks in place. `paged_decode` picks one per call through `m1.ops.dispatch`, which
logs the first use of each.
"""

from __future__ import annotations

import math

import torch

from m1.ops import dispatch


def paged_decode_ref(q, k_cache, v_cache, block_tables, seq_lens, scale: float, max_blocks: int | None = None):
    """Gather-then-attend. `max_blocks` (host int) bounds the gather; None gathers every table column."""
    b, h, d = q.shape
    _, bs, kvh, _ = k_cache.shape
    m = block_tables.shape[1] if max_blocks is None else min(max_blocks, block_tables.shape[1])
    bt = block_tables[:, :m].long()
    k = k_cache[bt].reshape(b, m * bs, kvh, d).transpose(1, 2)  # (b, kvh, T, d)
    v = v_cache[bt].reshape(b, m * bs, kvh, d).transpose(1, 2)
    rep = h // kvh
    if rep > 1:
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    valid = torch.arange(m * bs, device=q.device)[None, :] < seq_lens[:, None]  # (b, T)
    scores = torch.einsum("bhd,bhtd->bht", q.float(), k.float()) * scale
    scores = scores.masked_fill(~valid[:, None, :], float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return torch.einsum("bht,bhtd->bhd", probs, v.float()).to(q.dtype)


def _triton_applies(q: torch.Tensor) -> bool:
    d = q.shape[-1]
    return dispatch.cuda_with_triton(q) and d >= 16 and (d & (d - 1)) == 0


def _load_triton():
    from m1.ops.triton.paged_attention import paged_decode_triton

    return paged_decode_triton


dispatch.register("paged_decode", dispatch.Impl("ref", lambda q: True, lambda: paged_decode_ref))
dispatch.register("paged_decode", dispatch.Impl("triton", _triton_applies, _load_triton))


def paged_decode(q, k_cache, v_cache, block_tables, seq_lens, scale: float | None = None, max_blocks: int | None = None):
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    fn = dispatch.choose("paged_decode", q)
    return fn(q, k_cache, v_cache, block_tables, seq_lens, scale, max_blocks=max_blocks)
