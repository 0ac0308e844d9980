"""FlashAttention-style paged decode attention in Triton (one query token per row).

One program per (row, kv head) streams that row's blocks straight from the pool, in
place, with an online softmax; the query heads sharing the kv head (GQA) ride along as
the rows of one small matrix product, so each K/V block is read once per kv head.
Imported lazily by `m1.ops.paged_attention` when a CUDA tensor arrives.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _paged_decode_kernel(
    q_ptr, k_ptr, v_ptr, bt_ptr, sl_ptr, o_ptr, scale,
    s_qb, s_qh, s_kb, s_ks, s_kh, s_btb, s_ob, s_oh,
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, D: tl.constexpr, BS: tl.constexpr,
):
    row = tl.program_id(0)
    kvh = tl.program_id(1)
    seq_len = tl.load(sl_ptr + row)
    offs_g = tl.arange(0, GROUP_PAD)
    offs_d = tl.arange(0, D)
    offs_n = tl.arange(0, BS)
    gmask = offs_g < GROUP
    q = tl.load(q_ptr + row * s_qb + (kvh * GROUP + offs_g)[:, None] * s_qh + offs_d[None, :], mask=gmask[:, None], other=0.0)
    m_i = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([GROUP_PAD], tl.float32)
    acc = tl.zeros([GROUP_PAD, D], tl.float32)
    n_blocks = tl.cdiv(seq_len, BS)
    for j in range(0, n_blocks):
        blk = tl.load(bt_ptr + row * s_btb + j).to(tl.int64)
        base = blk * s_kb + kvh * s_kh
        kv_off = base + offs_n[:, None] * s_ks + offs_d[None, :]
        valid = (j * BS + offs_n) < seq_len
        k = tl.load(k_ptr + kv_off, mask=valid[:, None], other=0.0)
        v = tl.load(v_ptr + kv_off, mask=valid[:, None], other=0.0)
        s = tl.dot(q, tl.trans(k)) * scale
        s = tl.where(valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp(s - m_new[:, None])
        alpha = tl.exp(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    out = acc / l_i[:, None]
    tl.store(o_ptr + row * s_ob + (kvh * GROUP + offs_g)[:, None] * s_oh + offs_d[None, :], out.to(o_ptr.dtype.element_ty), mask=gmask[:, None])


def paged_decode_triton(q, k_cache, v_cache, block_tables, seq_lens, scale: float, max_blocks: int | None = None):
    """Same contract as `paged_decode_ref`; `max_blocks` is unused (the kernel stops at seq_len)."""
    b, h, d = q.shape
    _, bs, kvh, _ = k_cache.shape
    group = h // kvh
    q = q.contiguous()
    out = torch.empty_like(q)
    bt = block_tables if block_tables.dtype == torch.int32 else block_tables.to(torch.int32)
    sl = seq_lens if seq_lens.dtype == torch.int32 else seq_lens.to(torch.int32)
    _paged_decode_kernel[(b, kvh)](
        q, k_cache, v_cache, bt, sl, out, scale,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), bt.stride(0), out.stride(0), out.stride(1),
        GROUP=group, GROUP_PAD=max(16, triton.next_power_of_2(group)), D=d, BS=bs,
        num_warps=4, num_stages=2,
    )
    return out
