"""Decode attention over the paged KV cache: a plain reference and a Triton kernel.

q (b, H, d) is one query token per row; the keys and values of row r are the first
seq_lens[r] positions of the blocks listed in block_tables[r]. GQA: query head h reads
kv head h // (H / KVH).

Three implementations, picked per call through `m1.ops.dispatch` (which logs the first
use of each):

- `ref`: gathers the blocks into a contiguous copy, repeats the KV heads for GQA and
  attends in plain PyTorch: the definition the others are tested against.
- `sdpa` (CPU, fp32/bf16): the engine's CPU decode path: one `scaled_dot_product_attention`
  call in which the query heads of a KV group are that group's queries, so the KV heads
  are never repeated. It reads a view of the pool when each row's context is one block
  and the rows' blocks are one contiguous range (the engine's CPU layout, one block per
  sequence, with every slot busy). When a few sequences have finished and left gaps in that
  range (at most a quarter of the batch, `GAP_FRACTION`), it attends over the whole range on the
  view, idle rows included, and keeps the busy rows: the gather it replaces copied every busy
  row's context on every step (SmolLM2 sampling 64 rows of calibration text on 2 cores: 12.7 s of
  56 s in `index_select`). Otherwise it gathers the blocks, into a reused buffer when the caller
  passes a `Workspace` (a fresh multi-MB tensor page-faults on every step).
  Measured at batch 192 x 350 positions (SmolLM2's 9/3 heads x 64), per layer: ref 126 ms,
  gather + SDPA 11 ms, SDPA on the view 9 ms.
- `triton` (CUDA, `m1.ops.triton.paged_attention`): reads the blocks in place.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from m1.ops import dispatch
from m1.ops.slots import covering_range

GAP_FRACTION = 0.25  # idle rows the CPU path attends over, as a fraction of the batch, rather than gather


def paged_decode_ref(q, k_cache, v_cache, block_tables, seq_lens, scale: float, max_blocks: int | None = None,
                     workspace=None, max_len: int | None = None):
    """Gather-then-attend. `max_blocks` (host int) bounds the gather; None gathers every table column.
    `workspace` and `max_len` are accepted and unused (the reference reads whole blocks, allocating them)."""
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


def paged_decode_sdpa(q, k_cache, v_cache, block_tables, seq_lens, scale: float, max_blocks: int | None = None,
                      workspace=None, max_len: int | None = None):
    """One SDPA call with GQA as query rows, over a view of the pool when every row's context is its
    first block and those blocks fill a range of the pool but for at most `GAP_FRACTION` of the batch
    (the engine's one-block-per-sequence CPU layout, a few sequences finished), else over a gather of
    the blocks (into `workspace` when given).
    `max_len` (host int, > every seq_len) bounds the positions read."""
    b, h, d = q.shape
    _, bs, kvh, _ = k_cache.shape
    m = block_tables.shape[1] if max_blocks is None else min(max_blocks, block_tables.shape[1])
    cover = covering_range(block_tables[:, 0], int(GAP_FRACTION * b)) if m == 1 else None
    pos = None
    if cover is not None:  # no copy: rows lo .. lo + span - 1 of the pool; idle ones (gaps) get length 1, output dropped
        lo, span = cover
        T = bs if max_len is None else min(bs, max_len)
        k, v = k_cache[lo:lo + span, :T], v_cache[lo:lo + span, :T]
        pos = (block_tables[:, 0] - lo).long()
        if span == b and bool((pos[1:] > pos[:-1]).all()):
            pos = None  # already the pool's rows in order
        else:
            q = q.new_zeros(span, h, d).index_copy_(0, pos, q)
            seq_lens = seq_lens.new_ones(span).index_copy_(0, pos, seq_lens)
            b = span
    else:
        idx = block_tables[:, :m].reshape(-1)
        if workspace is None:
            k, v = k_cache.index_select(0, idx), v_cache.index_select(0, idx)
        else:
            shape = (b * m, bs, kvh, d)
            k = torch.index_select(k_cache, 0, idx, out=workspace.get("paged_k", shape, k_cache.dtype, k_cache.device))
            v = torch.index_select(v_cache, 0, idx, out=workspace.get("paged_v", shape, v_cache.dtype, v_cache.device))
        T = m * bs if max_len is None else min(m * bs, max_len)
        k, v = k.view(b, m * bs, kvh, d)[:, :T], v.view(b, m * bs, kvh, d)[:, :T]
    valid = torch.arange(T, device=q.device)[None, :] < seq_lens[:, None]  # (b, T)
    # Query head g * rep + r reads KV head g: the rep query heads of a group are that group's query rows.
    out = F.scaled_dot_product_attention(q.reshape(b, kvh, h // kvh, d), k.transpose(1, 2).to(q.dtype),
                                         v.transpose(1, 2).to(q.dtype), attn_mask=valid[:, None, None, :], scale=scale)
    out = out.reshape(b, h, d)
    return out if pos is None else out.index_select(0, pos)


def _sdpa_applies(q: torch.Tensor) -> bool:
    return q.device.type == "cpu" and q.dtype in (torch.float32, torch.bfloat16)


def _triton_applies(q: torch.Tensor) -> bool:
    d = q.shape[-1]
    return dispatch.cuda_with_triton(q) and d >= 16 and (d & (d - 1)) == 0


def _load_triton():
    from m1.ops.triton.paged_attention import paged_decode_triton

    return paged_decode_triton


dispatch.register("paged_decode", dispatch.Impl("ref", lambda q: True, lambda: paged_decode_ref))
dispatch.register("paged_decode", dispatch.Impl("sdpa", _sdpa_applies, lambda: paged_decode_sdpa, grad=False))
dispatch.register("paged_decode", dispatch.Impl("triton", _triton_applies, _load_triton))


def paged_decode(q, k_cache, v_cache, block_tables, seq_lens, scale: float | None = None, max_blocks: int | None = None,
                 workspace=None, max_len: int | None = None):
    """`max_blocks` / `max_len` (host ints) bound the blocks / positions any row reads; `workspace`
    (an `m1.ops.workspace.Workspace`) lends the CPU gather its buffers. Kernels ignore the last two."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    grad = dispatch.needs_grad(q, k_cache, v_cache)
    fn = dispatch.choose("paged_decode", q, grad)
    kw = {} if dispatch.chosen_name("paged_decode", q, grad) == "triton" else {"workspace": workspace, "max_len": max_len}
    return fn(q, k_cache, v_cache, block_tables, seq_lens, scale, max_blocks=max_blocks, **kw)
