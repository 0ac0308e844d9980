"""Chunked SSD (Mamba-2 scan) forward and backward in Triton.

Why hand-written: fla-core 0.6's `chunk_simple_gla` computes the same recurrence and its
forward is correct on Triton 3.6, but its gated chunk *backward* refuses Triton < 3.7.1
on Hopper (a known miscompile of `chunk_bwd_dqkwg`), and the H200 image ships Triton 3.6.
Training therefore needs a backward of our own; the forward is written alongside it so
the backward can reuse the per-chunk states it saves. Two implementations live here and
are registered separately with `m1.ops.dispatch` (see `m1.ops.ssd`): `ssd_chunked_own`
("triton", forward + backward) and `ssd_chunked_fla_fwd` ("fla", fla-core's forward, chosen
for gradient-free calls such as prefill when fla-core is installed), so `force()` pins
either and the dispatch log names the one that ran.

The algorithm is the usual chunked SSD. With a_t = dt_t * A_h, a chunk of L steps,
acum the within-chunk cumulative sum of a, a_end its total, X = dt * x:

  forward
    1. chunk state   cs_k    = sum_s exp(a_end - acum_s) X_s B_s^T              (p x n)
    2. state passing S_in[k+1] = exp(a_end_k) S_in[k] + cs_k, S_in[first] = h0
    3. chunk scan    y_l     = exp(acum_l) S_in C_l + sum_{s<=l} (C_l.B_s) exp(acum_l-acum_s) X_s + D x_l
  backward (G_k = dL/dS_in[k+1], the gradient of the chunk's end state)
    1. local dstate  dS_loc_k = sum_l exp(acum_l) dy_l C_l^T
    2. reverse state passing: G_k, d a_end_k, dh0
    3. dx kernel     dX = M^T dy + exp(a_end - acum) B G^T, and the intra-chunk d acum terms
    4. dB/dC kernel  dB, dC, and the remaining d acum terms
    5. finalize      d acum -> d a (reverse cumsum within the chunk) -> ddt, dA

Chunks never cross a sequence: every row (or every packed sequence of `cu_seqlens`) is cut
into chunks from its own start, and a chunk table (batch row, start token, length) drives
every kernel. Padding inside a chunk is masked to zero, which is the same as dt = 0.

Conventions are those of `m1.ops.ssd`: x (b, l, h, p), dt (b, l, h) positive, A (h,),
B and C (b, l, g, n), D (h,) or None, states (b, h, p, n) fp32. The matrix products take
bf16/fp16 operands when the inputs are bf16/fp16, and tf32 for fp32 inputs; states and
accumulators are fp32 throughout.
"""

from __future__ import annotations

import logging

import torch
import triton
import triton.language as tl

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- kernels


@triton.jit
def _load_chunk_decay(dt_ptr, A_ptr, bi, t0, ln, h, s_dt_b, s_dt_l, L: tl.constexpr):
    """dt (fp32, zero past the chunk's end) and the within-chunk cumulative decay."""
    offs_l = tl.arange(0, L)
    mask_l = offs_l < ln
    dt = tl.load(dt_ptr + bi * s_dt_b + (t0 + offs_l) * s_dt_l + h, mask=mask_l, other=0.0).to(tl.float32)
    A = tl.load(A_ptr + h).to(tl.float32)
    a = dt * A
    acum = tl.cumsum(a, axis=0)
    a_end = tl.sum(a, axis=0)
    return offs_l, mask_l, dt, acum, a_end


@triton.jit
def _chunk_state_fwd_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, st_ptr, aend_ptr, ch_b_ptr, ch_t0_ptr, ch_len_ptr,
    s_x_b, s_x_l, s_x_h, s_dt_b, s_dt_l, s_B_b, s_B_l, s_B_g,
    H, HPG, P, N,
    L: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr, NNB: tl.constexpr,
):
    k = tl.program_id(0)
    h = tl.program_id(1)
    pb = tl.program_id(2) // NNB
    nb = tl.program_id(2) % NNB
    bi = tl.load(ch_b_ptr + k)
    t0 = tl.load(ch_t0_ptr + k)
    ln = tl.load(ch_len_ptr + k)
    offs_l, mask_l, dt, acum, a_end = _load_chunk_decay(dt_ptr, A_ptr, bi, t0, ln, h, s_dt_b, s_dt_l, L)
    offs_p = pb * BP + tl.arange(0, BP)
    offs_n = nb * BN + tl.arange(0, BN)
    x = tl.load(
        x_ptr + bi * s_x_b + (t0 + offs_l)[:, None] * s_x_l + h * s_x_h + offs_p[None, :],
        mask=mask_l[:, None] & (offs_p[None, :] < P), other=0.0,
    )
    Bt = tl.load(
        B_ptr + bi * s_B_b + (t0 + offs_l)[:, None] * s_B_l + (h // HPG) * s_B_g + offs_n[None, :],
        mask=mask_l[:, None] & (offs_n[None, :] < N), other=0.0,
    )
    w = tl.exp(a_end - acum) * dt
    xw = (x.to(tl.float32) * w[:, None]).to(x.dtype)
    acc = tl.dot(tl.trans(xw), Bt)  # (BP, BN)
    tl.store(
        st_ptr + ((k * H + h) * P + offs_p[:, None]) * N + offs_n[None, :], acc,
        mask=(offs_p[:, None] < P) & (offs_n[None, :] < N),
    )
    if (pb == 0) & (nb == 0):
        tl.store(aend_ptr + k * H + h, a_end)


@triton.jit
def _state_passing_fwd_kernel(
    st_ptr, aend_ptr, h0_ptr, final_ptr, seq_c0_ptr, seq_nc_ptr,
    H, PN, MAXC, HAS_H0: tl.constexpr, BS: tl.constexpr,
):
    """In place: st[k] holds chunk k's own state on entry and the state entering chunk k on exit."""
    s = tl.program_id(0)
    h = tl.program_id(1)
    offs = tl.program_id(2) * BS + tl.arange(0, BS)
    mask = offs < PN
    c0 = tl.load(seq_c0_ptr + s)
    nc = tl.load(seq_nc_ptr + s)
    if HAS_H0:
        S = tl.load(h0_ptr + (s * H + h) * PN + offs, mask=mask, other=0.0).to(tl.float32)
    else:
        S = tl.zeros([BS], dtype=tl.float32)
    # a host-side bound and a mask (not `range(nc)`) so the kernel also runs under TRITON_INTERPRET
    for i in range(MAXC):
        ok = i < nc
        k = c0 + i
        ae = tl.load(aend_ptr + k * H + h, mask=ok, other=0.0)
        cs = tl.load(st_ptr + (k * H + h) * PN + offs, mask=mask & ok, other=0.0)
        tl.debug_barrier()  # in place: every read of st[k] before any write (replicated layouts)
        tl.store(st_ptr + (k * H + h) * PN + offs, S, mask=mask & ok)
        S = tl.where(ok, tl.exp(ae) * S + cs, S)
    tl.store(final_ptr + (s * H + h) * PN + offs, S, mask=mask)


@triton.jit
def _chunk_scan_fwd_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, st_ptr, y_ptr, ch_b_ptr, ch_t0_ptr, ch_len_ptr,
    s_x_b, s_x_l, s_x_h, s_dt_b, s_dt_l, s_B_b, s_B_l, s_B_g,
    H, HPG, P, N,
    L: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr, NNB: tl.constexpr, HAS_D: tl.constexpr,
):
    k = tl.program_id(0)
    h = tl.program_id(1)
    pb = tl.program_id(2)
    bi = tl.load(ch_b_ptr + k)
    t0 = tl.load(ch_t0_ptr + k)
    ln = tl.load(ch_len_ptr + k)
    offs_l, mask_l, dt, acum, a_end = _load_chunk_decay(dt_ptr, A_ptr, bi, t0, ln, h, s_dt_b, s_dt_l, L)
    offs_p = pb * BP + tl.arange(0, BP)
    mask_p = offs_p < P
    g = h // HPG
    acc_off = tl.zeros([L, BP], dtype=tl.float32)
    cb = tl.zeros([L, L], dtype=tl.float32)
    for nb in range(NNB):
        offs_n = nb * BN + tl.arange(0, BN)
        mask_n = offs_n < N
        bc_off = bi * s_B_b + (t0 + offs_l)[:, None] * s_B_l + g * s_B_g + offs_n[None, :]
        Ct = tl.load(C_ptr + bc_off, mask=mask_l[:, None] & mask_n[None, :], other=0.0)
        Bt = tl.load(B_ptr + bc_off, mask=mask_l[:, None] & mask_n[None, :], other=0.0)
        # S_in^T block (BN, BP)
        St = tl.load(
            st_ptr + ((k * H + h) * P + offs_p[None, :]) * N + offs_n[:, None],
            mask=mask_n[:, None] & mask_p[None, :], other=0.0,
        )
        acc_off += tl.dot(Ct, St.to(Ct.dtype))
        cb += tl.dot(Ct, tl.trans(Bt))
    acc = acc_off * tl.exp(acum)[:, None]
    causal = offs_l[:, None] >= offs_l[None, :]
    decay = tl.exp(tl.where(causal, acum[:, None] - acum[None, :], float("-inf")))
    x = tl.load(
        x_ptr + bi * s_x_b + (t0 + offs_l)[:, None] * s_x_l + h * s_x_h + offs_p[None, :],
        mask=mask_l[:, None] & mask_p[None, :], other=0.0,
    )
    m = cb * decay * dt[None, :]
    acc += tl.dot(m.to(x.dtype), x)
    if HAS_D:
        acc += tl.load(D_ptr + h).to(tl.float32) * x.to(tl.float32)
    tl.store(
        y_ptr + bi * s_x_b + (t0 + offs_l)[:, None] * s_x_l + h * s_x_h + offs_p[None, :],
        acc.to(y_ptr.dtype.element_ty), mask=mask_l[:, None] & mask_p[None, :],
    )


@triton.jit
def _chunk_dstate_bwd_kernel(
    dy_ptr, dt_ptr, A_ptr, C_ptr, ds_ptr, ch_b_ptr, ch_t0_ptr, ch_len_ptr,
    s_x_b, s_x_l, s_x_h, s_dt_b, s_dt_l, s_B_b, s_B_l, s_B_g,
    H, HPG, P, N,
    L: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr, NNB: tl.constexpr,
):
    """dS_loc[k] = sum_l exp(acum_l) dy_l C_l^T: the chunk's outputs' pull on its entering state."""
    k = tl.program_id(0)
    h = tl.program_id(1)
    pb = tl.program_id(2) // NNB
    nb = tl.program_id(2) % NNB
    bi = tl.load(ch_b_ptr + k)
    t0 = tl.load(ch_t0_ptr + k)
    ln = tl.load(ch_len_ptr + k)
    offs_l, mask_l, dt, acum, a_end = _load_chunk_decay(dt_ptr, A_ptr, bi, t0, ln, h, s_dt_b, s_dt_l, L)
    offs_p = pb * BP + tl.arange(0, BP)
    offs_n = nb * BN + tl.arange(0, BN)
    dy = tl.load(
        dy_ptr + bi * s_x_b + (t0 + offs_l)[:, None] * s_x_l + h * s_x_h + offs_p[None, :],
        mask=mask_l[:, None] & (offs_p[None, :] < P), other=0.0,
    )
    Ct = tl.load(
        C_ptr + bi * s_B_b + (t0 + offs_l)[:, None] * s_B_l + (h // HPG) * s_B_g + offs_n[None, :],
        mask=mask_l[:, None] & (offs_n[None, :] < N), other=0.0,
    )
    dyw = (dy.to(tl.float32) * tl.exp(acum)[:, None]).to(Ct.dtype)
    acc = tl.dot(tl.trans(dyw), Ct)
    tl.store(
        ds_ptr + ((k * H + h) * P + offs_p[:, None]) * N + offs_n[None, :], acc,
        mask=(offs_p[:, None] < P) & (offs_n[None, :] < N),
    )


@triton.jit
def _state_passing_bwd_kernel(
    st_ptr, ds_ptr, aend_ptr, dfinal_ptr, dh0_ptr, daend_ptr, seq_c0_ptr, seq_nc_ptr,
    H, PN, NCHUNK, MAXC,
    HAS_DFINAL: tl.constexpr, HAS_H0: tl.constexpr, BS: tl.constexpr,
):
    """In place: ds[k] holds dS_loc[k] on entry and G_k = dL/dS_in[k+1] on exit.

    Also writes this block's share of d a_end_k = exp(a_end_k) <G_k, S_in[k]>."""
    s = tl.program_id(0)
    h = tl.program_id(1)
    blk = tl.program_id(2)
    offs = blk * BS + tl.arange(0, BS)
    mask = offs < PN
    c0 = tl.load(seq_c0_ptr + s)
    nc = tl.load(seq_nc_ptr + s)
    if HAS_DFINAL:
        dS = tl.load(dfinal_ptr + (s * H + h) * PN + offs, mask=mask, other=0.0).to(tl.float32)
    else:
        dS = tl.zeros([BS], dtype=tl.float32)
    for i in range(MAXC):
        ok = i < nc
        k = c0 + nc - 1 - i
        ae = tl.exp(tl.load(aend_ptr + k * H + h, mask=ok, other=0.0))
        sin = tl.load(st_ptr + (k * H + h) * PN + offs, mask=mask & ok, other=0.0)
        dl = tl.load(ds_ptr + (k * H + h) * PN + offs, mask=mask & ok, other=0.0)
        tl.debug_barrier()  # in place: every read of ds[k] before any write
        tl.store(ds_ptr + (k * H + h) * PN + offs, dS, mask=mask & ok)
        tl.store(daend_ptr + (blk * NCHUNK + k) * H + h, ae * tl.sum(dS * sin, axis=0), mask=ok)
        dS = tl.where(ok, dl + ae * dS, dS)
    if HAS_H0:
        tl.store(dh0_ptr + (s * H + h) * PN + offs, dS, mask=mask)


@triton.jit
def _chunk_dx_bwd_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, ds_ptr, dy_ptr, dx_ptr, ddtp_ptr, dacum_ptr, dDp_ptr,
    ch_b_ptr, ch_t0_ptr, ch_len_ptr,
    s_x_b, s_x_l, s_x_h, s_dt_b, s_dt_l, s_B_b, s_B_l, s_B_g,
    H, HPG, P, N, NCHUNK, TOK,
    L: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr, NNB: tl.constexpr, HAS_D: tl.constexpr,
):
    """dX = M^T dy + exp(a_end - acum) B G^T for one p block; dx, sum_p dX x, and the
    intra-chunk d acum terms (rowsum - colsum of dM * M) of this p block."""
    k = tl.program_id(0)
    h = tl.program_id(1)
    pb = tl.program_id(2)
    bi = tl.load(ch_b_ptr + k)
    t0 = tl.load(ch_t0_ptr + k)
    ln = tl.load(ch_len_ptr + k)
    offs_l, mask_l, dt, acum, a_end = _load_chunk_decay(dt_ptr, A_ptr, bi, t0, ln, h, s_dt_b, s_dt_l, L)
    offs_p = pb * BP + tl.arange(0, BP)
    mask_p = offs_p < P
    g = h // HPG
    cb = tl.zeros([L, L], dtype=tl.float32)
    bg = tl.zeros([L, BP], dtype=tl.float32)
    for nb in range(NNB):
        offs_n = nb * BN + tl.arange(0, BN)
        mask_n = offs_n < N
        bc_off = bi * s_B_b + (t0 + offs_l)[:, None] * s_B_l + g * s_B_g + offs_n[None, :]
        Ct = tl.load(C_ptr + bc_off, mask=mask_l[:, None] & mask_n[None, :], other=0.0)
        Bt = tl.load(B_ptr + bc_off, mask=mask_l[:, None] & mask_n[None, :], other=0.0)
        Gt = tl.load(  # G^T block (BN, BP)
            ds_ptr + ((k * H + h) * P + offs_p[None, :]) * N + offs_n[:, None],
            mask=mask_n[:, None] & mask_p[None, :], other=0.0,
        )
        cb += tl.dot(Ct, tl.trans(Bt))
        bg += tl.dot(Bt, Gt.to(Bt.dtype))
    xy_off = bi * s_x_b + (t0 + offs_l)[:, None] * s_x_l + h * s_x_h + offs_p[None, :]
    mask_lp = mask_l[:, None] & mask_p[None, :]
    x = tl.load(x_ptr + xy_off, mask=mask_lp, other=0.0)
    dy = tl.load(dy_ptr + xy_off, mask=mask_lp, other=0.0)
    causal = offs_l[:, None] >= offs_l[None, :]
    decay = tl.exp(tl.where(causal, acum[:, None] - acum[None, :], float("-inf")))
    m = cb * decay  # M[l, s]
    xf = x.to(tl.float32)
    # d/dX[s] = sum_l M[l, s] dy_l (intra-chunk) + exp(a_end - acum_s) (B G^T)[s] (chunk state)
    dX = tl.dot(tl.trans(m.to(dy.dtype)), dy) + tl.exp(a_end - acum)[:, None] * bg
    dx = dX * dt[:, None]
    ddt_part = tl.sum(dX * xf, axis=1)
    if HAS_D:
        Dh = tl.load(D_ptr + h).to(tl.float32)
        dx += Dh * dy.to(tl.float32)
        tl.store(dDp_ptr + (pb * NCHUNK + k) * H + h, tl.sum(tl.sum(dy.to(tl.float32) * xf, axis=1), axis=0))
    tl.store(dx_ptr + xy_off, dx.to(dx_ptr.dtype.element_ty), mask=mask_lp)
    tl.store(ddtp_ptr + pb * TOK * H + (bi * s_dt_b + (t0 + offs_l) * s_dt_l) + h, ddt_part, mask=mask_l)
    # intra-chunk decay gradient: Q = dM * M with dM = dy X^T (this p block's share)
    X = (xf * dt[:, None]).to(x.dtype)
    dM = tl.dot(dy, tl.trans(X))
    q = dM * m
    dacum = tl.sum(q, axis=1) - tl.sum(q, axis=0)
    tl.store(dacum_ptr + ((pb * NCHUNK + k) * H + h) * L + offs_l, dacum)


@triton.jit
def _chunk_dbdc_bwd_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, st_ptr, ds_ptr, dy_ptr, dB_ptr, dC_ptr, dacum_ptr, daend_ptr,
    ch_b_ptr, ch_t0_ptr, ch_len_ptr,
    s_x_b, s_x_l, s_x_h, s_dt_b, s_dt_l, s_B_b, s_B_l, s_B_g, s_dB_b, s_dB_l, s_dB_h,
    H, HPG, P, N, NCHUNK,
    L: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr, NPB: tl.constexpr,
):
    """dB and dC (per head) for one n block, with the d acum terms of the entering state
    (through y) and of the chunk state, and this block's share of d a_end."""
    k = tl.program_id(0)
    h = tl.program_id(1)
    nb = tl.program_id(2)
    bi = tl.load(ch_b_ptr + k)
    t0 = tl.load(ch_t0_ptr + k)
    ln = tl.load(ch_len_ptr + k)
    offs_l, mask_l, dt, acum, a_end = _load_chunk_decay(dt_ptr, A_ptr, bi, t0, ln, h, s_dt_b, s_dt_l, L)
    offs_n = nb * BN + tl.arange(0, BN)
    mask_n = offs_n < N
    g = h // HPG
    dM = tl.zeros([L, L], dtype=tl.float32)
    dbs = tl.zeros([L, BN], dtype=tl.float32)
    dco = tl.zeros([L, BN], dtype=tl.float32)
    for pb in range(NPB):
        offs_p = pb * BP + tl.arange(0, BP)
        mask_p = offs_p < P
        xy_off = bi * s_x_b + (t0 + offs_l)[:, None] * s_x_l + h * s_x_h + offs_p[None, :]
        mask_lp = mask_l[:, None] & mask_p[None, :]
        x = tl.load(x_ptr + xy_off, mask=mask_lp, other=0.0)
        dy = tl.load(dy_ptr + xy_off, mask=mask_lp, other=0.0)
        X = (x.to(tl.float32) * dt[:, None]).to(x.dtype)
        st_off = ((k * H + h) * P + offs_p[:, None]) * N + offs_n[None, :]
        mask_pn = mask_p[:, None] & mask_n[None, :]
        Gt = tl.load(ds_ptr + st_off, mask=mask_pn, other=0.0)
        St = tl.load(st_ptr + st_off, mask=mask_pn, other=0.0)
        dM += tl.dot(dy, tl.trans(X))
        dbs += tl.dot(X, Gt.to(X.dtype))
        dco += tl.dot(dy, St.to(dy.dtype))
    bc_off = bi * s_B_b + (t0 + offs_l)[:, None] * s_B_l + g * s_B_g + offs_n[None, :]
    mask_ln = mask_l[:, None] & mask_n[None, :]
    Ct = tl.load(C_ptr + bc_off, mask=mask_ln, other=0.0)
    Bt = tl.load(B_ptr + bc_off, mask=mask_ln, other=0.0)
    causal = offs_l[:, None] >= offs_l[None, :]
    decay = tl.exp(tl.where(causal, acum[:, None] - acum[None, :], float("-inf")))
    dmd = dM * decay
    w_end = tl.exp(a_end - acum)
    dbs = dbs * w_end[:, None]
    dco = dco * tl.exp(acum)[:, None]
    dB = tl.dot(tl.trans(dmd.to(Ct.dtype)), Ct) + dbs
    dC = tl.dot(dmd.to(Bt.dtype), Bt) + dco
    t_s = tl.sum(Bt.to(tl.float32) * dbs, axis=1)
    dacum = tl.sum(Ct.to(tl.float32) * dco, axis=1) - t_s
    out_off = bi * s_dB_b + (t0 + offs_l)[:, None] * s_dB_l + h * s_dB_h + offs_n[None, :]
    tl.store(dB_ptr + out_off, dB, mask=mask_ln)
    tl.store(dC_ptr + out_off, dC, mask=mask_ln)
    tl.store(dacum_ptr + ((nb * NCHUNK + k) * H + h) * L + offs_l, dacum)
    tl.store(daend_ptr + (nb * NCHUNK + k) * H + h, tl.sum(t_s, axis=0))


@triton.jit
def _finalize_bwd_kernel(
    dt_ptr, A_ptr, dacum_ptr, daend_ptr, ddtp_ptr, ddt_ptr, dAp_ptr, ch_b_ptr, ch_t0_ptr, ch_len_ptr,
    s_dt_b, s_dt_l, H, L: tl.constexpr,
):
    """d acum (+ d a_end at the chunk's last step) -> d a by a reverse cumsum; then
    ddt = sum_p dX x + A d a and this chunk's share of dA = sum dt d a."""
    k = tl.program_id(0)
    h = tl.program_id(1)
    bi = tl.load(ch_b_ptr + k)
    t0 = tl.load(ch_t0_ptr + k)
    ln = tl.load(ch_len_ptr + k)
    offs_l, mask_l, dt, acum, a_end = _load_chunk_decay(dt_ptr, A_ptr, bi, t0, ln, h, s_dt_b, s_dt_l, L)
    dacum = tl.load(dacum_ptr + (k * H + h) * L + offs_l)
    daend = tl.load(daend_ptr + k * H + h)
    dacum = tl.where(offs_l == ln - 1, dacum + daend, dacum)
    dacum = tl.where(mask_l, dacum, 0.0)
    da = tl.cumsum(dacum, axis=0, reverse=True)
    A = tl.load(A_ptr + h).to(tl.float32)
    tok = bi * s_dt_b + (t0 + offs_l) * s_dt_l + h
    ddt = tl.load(ddtp_ptr + tok, mask=mask_l, other=0.0) + A * da
    tl.store(ddt_ptr + tok, ddt, mask=mask_l)
    tl.store(dAp_ptr + k * H + h, tl.sum(tl.where(mask_l, dt * da, 0.0), axis=0))


# ----------------------------------------------------------------------------- host side


def _chunk_table(b: int, l: int, L: int, cu_seqlens, device):
    """(ch_b, ch_t0, ch_len, seq_c0, seq_nc) as int32 device tensors, and the most chunks of any sequence.

    Equal-length rows need no host sync; packed sequences read cu_seqlens on the host once
    (the grid size depends on the number of chunks)."""
    if cu_seqlens is None:
        nc = triton.cdiv(l, L)
        ks = torch.arange(b * nc, device=device, dtype=torch.int32)
        ch_b = ks // nc
        ch_t0 = (ks % nc) * L
        ch_len = torch.clamp(l - ch_t0, max=L)
        seq_c0 = torch.arange(b, device=device, dtype=torch.int32) * nc
        seq_nc = torch.full((b,), nc, device=device, dtype=torch.int32)
        return ch_b, ch_t0, ch_len.to(torch.int32), seq_c0, seq_nc, nc
    bounds = cu_seqlens.tolist()
    ch_t0, ch_len, seq_c0, seq_nc = [], [], [], []
    for s, e in zip(bounds[:-1], bounds[1:]):
        seq_c0.append(len(ch_t0))
        n = triton.cdiv(e - s, L)
        seq_nc.append(n)
        for i in range(n):
            ch_t0.append(s + i * L)
            ch_len.append(min(L, e - s - i * L))
    t = lambda v: torch.tensor(v, dtype=torch.int32).to(device)  # noqa: E731
    return t([0] * len(ch_t0)), t(ch_t0), t(ch_len), t(seq_c0), t(seq_nc), max(seq_nc, default=0)


def _blocks(P: int, N: int):
    # Tiles of 16 or 64 only (a 32 is masked up to 64): on Triton 3.6 / H200 a bf16 run with
    # 32-wide p blocks (P=32, N=64) hit an illegal memory access; 16 and 64 were verified.
    BP = 16 if P <= 16 else 64
    BN = 16 if N <= 16 else 64
    return BP, BN, triton.cdiv(P, BP), triton.cdiv(N, BN)


def _strides(x, dt, B):
    return (x.stride(0), x.stride(1), x.stride(2), dt.stride(0), dt.stride(1), B.stride(0), B.stride(1), B.stride(2))


def _fwd(x, dt, A, B, C, D, h0, table, L):
    b, l, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    HPG = H // G
    ch_b, ch_t0, ch_len, seq_c0, seq_nc, _ = table
    K, S = ch_b.numel(), seq_c0.numel()
    BP, BN, NPB, NNB = _blocks(P, N)
    st = torch.empty(K, H, P, N, device=x.device, dtype=torch.float32)
    aend = torch.empty(K, H, device=x.device, dtype=torch.float32)
    strides = _strides(x, dt, B)
    _chunk_state_fwd_kernel[(K, H, NPB * NNB)](
        x, dt, A, B, st, aend, ch_b, ch_t0, ch_len, *strides, H, HPG, P, N, L=L, BP=BP, BN=BN, NNB=NNB, num_warps=4
    )
    final = torch.empty(S, H, P, N, device=x.device, dtype=torch.float32)
    BS = min(1024, triton.next_power_of_2(P * N))
    _state_passing_fwd_kernel[(S, H, triton.cdiv(P * N, BS))](
        st, aend, h0 if h0 is not None else st, final, seq_c0, seq_nc, H, P * N, table[5], HAS_H0=h0 is not None, BS=BS, num_warps=4
    )
    y = torch.empty_like(x)
    _chunk_scan_fwd_kernel[(K, H, NPB)](
        x, dt, A, B, C, D if D is not None else A, st, y, ch_b, ch_t0, ch_len, *strides, H, HPG, P, N,
        L=L, BP=BP, BN=BN, NNB=NNB, HAS_D=D is not None, num_warps=4,
    )
    return y, final, st, aend


def _bwd(dy, dfinal, x, dt, A, B, C, D, h0, st, aend, table, L):
    b, l, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    HPG = H // G
    ch_b, ch_t0, ch_len, seq_c0, seq_nc, _ = table
    K, S = ch_b.numel(), seq_c0.numel()
    BP, BN, NPB, NNB = _blocks(P, N)
    dev = x.device
    strides = _strides(x, dt, B)
    f32 = torch.float32
    ds = torch.empty(K, H, P, N, device=dev, dtype=f32)
    _chunk_dstate_bwd_kernel[(K, H, NPB * NNB)](
        dy, dt, A, C, ds, ch_b, ch_t0, ch_len, *strides, H, HPG, P, N, L=L, BP=BP, BN=BN, NNB=NNB, num_warps=4
    )
    BS = min(1024, triton.next_power_of_2(P * N))
    NSB = triton.cdiv(P * N, BS)
    dh0 = torch.empty(S, H, P, N, device=dev, dtype=f32) if h0 is not None else None
    daend_pass = torch.empty(NSB, K, H, device=dev, dtype=f32)
    _state_passing_bwd_kernel[(S, H, NSB)](
        st, ds, aend, dfinal if dfinal is not None else ds, dh0 if dh0 is not None else ds, daend_pass,
        seq_c0, seq_nc, H, P * N, K, table[5], HAS_DFINAL=dfinal is not None, HAS_H0=h0 is not None, BS=BS, num_warps=4,
    )
    dx = torch.empty_like(x)
    tok = b * l
    ddtp = torch.empty(NPB, b, l, H, device=dev, dtype=f32)
    dacum_p = torch.empty(NPB, K, H, L, device=dev, dtype=f32)
    dDp = torch.empty(NPB, K, H, device=dev, dtype=f32)
    _chunk_dx_bwd_kernel[(K, H, NPB)](
        x, dt, A, B, C, D if D is not None else A, ds, dy, dx, ddtp, dacum_p, dDp, ch_b, ch_t0, ch_len,
        *strides, H, HPG, P, N, K, tok, L=L, BP=BP, BN=BN, NNB=NNB, HAS_D=D is not None, num_warps=4,
    )
    dBh = torch.empty(b, l, H, N, device=dev, dtype=f32)
    dCh = torch.empty(b, l, H, N, device=dev, dtype=f32)
    dacum_n = torch.empty(NNB, K, H, L, device=dev, dtype=f32)
    daend_n = torch.empty(NNB, K, H, device=dev, dtype=f32)
    _chunk_dbdc_bwd_kernel[(K, H, NNB)](
        x, dt, A, B, C, st, ds, dy, dBh, dCh, dacum_n, daend_n, ch_b, ch_t0, ch_len,
        *strides, dBh.stride(0), dBh.stride(1), dBh.stride(2), H, HPG, P, N, K,
        L=L, BP=BP, BN=BN, NPB=NPB, num_warps=4,
    )
    dacum = dacum_p.sum(0) + dacum_n.sum(0)
    daend = daend_pass.sum(0) + daend_n.sum(0)
    ddtp_sum = ddtp.sum(0) if NPB > 1 else ddtp[0]
    ddt = torch.empty(b, l, H, device=dev, dtype=f32)
    dAp = torch.empty(K, H, device=dev, dtype=f32)
    _finalize_bwd_kernel[(K, H)](
        dt, A, dacum, daend, ddtp_sum, ddt, dAp, ch_b, ch_t0, ch_len, dt.stride(0), dt.stride(1), H, L=L, num_warps=2
    )
    dA = dAp.sum(0)
    dD = dDp.sum((0, 1)) if D is not None else None
    if HPG > 1:
        dB = dBh.view(b, l, G, HPG, N).sum(3)
        dC = dCh.view(b, l, G, HPG, N).sum(3)
    else:
        dB, dC = dBh, dCh
    return dx, ddt, dA, dB, dC, dD, dh0


class _SSDChunked(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, h0, chunk_size, cu_seqlens):
        table = _chunk_table(x.shape[0], x.shape[1], chunk_size, cu_seqlens, x.device)
        y, final, st, aend = _fwd(x, dt, A, B, C, D, h0, table, chunk_size)
        ctx.save_for_backward(x, dt, A, B, C, D, h0, st, aend, *table[:5])
        ctx.chunk_size, ctx.maxc = chunk_size, table[5]
        ctx.has_D, ctx.has_h0 = D is not None, h0 is not None
        return y, final

    @staticmethod
    def backward(ctx, dy, dfinal):
        x, dt, A, B, C, D, h0, st, aend, *table = ctx.saved_tensors
        dy = torch.zeros_like(x) if dy is None else dy.to(x.dtype).contiguous()
        dfinal = None if dfinal is None else dfinal.float().contiguous()
        dx, ddt, dA, dB, dC, dD, dh0 = _bwd(dy, dfinal, x, dt, A, B, C, D, h0, st, aend, (*table, ctx.maxc), ctx.chunk_size)
        return (
            dx, ddt.to(dt.dtype), dA.to(A.dtype), dB.to(B.dtype), dC.to(C.dtype),
            dD.to(D.dtype) if ctx.has_D else None, dh0 if ctx.has_h0 else None, None, None,
        )


def _check(x, dt, A, B, C, D, initial_state, chunk_size, cu_seqlens):
    b, l, h, p = x.shape
    g, n = B.shape[-2:]
    if chunk_size not in (16, 32, 64, 128):
        raise ValueError(f"triton ssd_chunked supports chunk_size 16, 32, 64 or 128, got {chunk_size}")
    if h % g:
        raise ValueError(f"heads ({h}) must be a multiple of groups ({g})")
    if cu_seqlens is not None and b != 1:
        raise ValueError(f"packed input (cu_seqlens) needs batch size 1, got {b}")
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise TypeError(f"triton ssd_chunked takes fp32/bf16/fp16, got {x.dtype}")
    if not (B.dtype == C.dtype == x.dtype):
        raise TypeError(f"x, B and C must share a dtype; got {x.dtype}, {B.dtype}, {C.dtype}")


def ssd_chunked_own(x, dt, A, B, C, D=None, initial_state=None, chunk_size: int = 64, cu_seqlens=None):
    """Our Triton chunked SSD, forward and backward (autograd). Returns (y, final_state fp32)."""
    _check(x, dt, A, B, C, D, initial_state, chunk_size, cu_seqlens)
    c = lambda t: None if t is None else t.contiguous()  # noqa: E731
    h0 = None if initial_state is None else initial_state.float().contiguous()
    return _SSDChunked.apply(c(x), c(dt), c(A), c(B), c(C), c(D), h0, chunk_size, cu_seqlens)


def fla_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("fla") is not None


def ssd_chunked_fla_fwd(x, dt, A, B, C, D=None, initial_state=None, chunk_size: int = 64, cu_seqlens=None):
    """Forward only, through fla-core's chunk_simple_gla: q=C, k=B, v=x*dt, g=dt*A, scale=1,
    states kept (p, n) with state_v_first. Groups are expanded to heads (a view-free repeat
    only when g < h). No gradient: fla's gated backward refuses Triton < 3.7.1 on Hopper."""
    from fla.ops.simple_gla import chunk_simple_gla

    _check(x, dt, A, B, C, D, initial_state, chunk_size, cu_seqlens)
    h = x.shape[2]
    g = B.shape[2]
    Bh = B if g == h else B.repeat_interleave(h // g, dim=2)
    Ch = C if g == h else C.repeat_interleave(h // g, dim=2)
    v = torch.mul(x, dt.float()[..., None], out=torch.empty_like(x))  # fp32 math, one pass, stored in x's dtype
    gate = dt.float() * A.float()
    h0 = None if initial_state is None else initial_state.float().contiguous()
    o, final = chunk_simple_gla(
        Ch, Bh, v, g=gate, scale=1.0, initial_state=h0, output_final_state=True, state_v_first=True,
        cu_seqlens=cu_seqlens, chunk_size=chunk_size,
    )
    o = o.to(x.dtype)
    if D is not None:
        torch.addcmul(o, x, D.float()[:, None], out=o)  # fp32 math, one pass, in place
    return o, final.float()
