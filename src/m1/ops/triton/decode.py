"""Fused Mamba-2 decode step in one Triton kernel.

Why hand-written: decode is bound by moving the fp32 SSM state (read and write once per
token), and the unfused path (conv step, softplus, SSD step, gated norm, each a few
PyTorch ops with gathers and scatters of the slot rows) moves it and the small tensors
many times over. Neither fla-core nor PyTorch has a slot-indexed fused step.

One program owns KG whole groups of one request: the x channels of the group's heads,
the group's B and C channels, and their norm group (inner / n_groups channels is exactly
one group's heads), so it can shift the conv state, update the SSM state and normalise
without touching another program's data. No host sync, output the only allocation: the
step can be captured in a CUDA graph.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl


@triton.jit
def _silu(v):
    return v / (1.0 + tl.exp(-v))


@triton.jit
def _conv_channels(
    zx_row, cs_row, w_ptr, b_ptr, ch, mask, s_cs_d, W: tl.constexpr, HAS_BIAS: tl.constexpr
):
    """Depthwise conv over channels `ch` (any shape) for one request; shifts its conv state.

    Every state value is read before the barrier and written after it: a tile's layout may
    hold one element in several threads, and without the barrier one thread's shifted
    write could land before another thread's read (seen as wrong results with 8 warps)."""
    new = tl.load(zx_row + ch, mask=mask, other=0.0)
    acc = new.to(tl.float32) * tl.load(w_ptr + ch * W + (W - 1), mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        acc += tl.load(b_ptr + ch, mask=mask, other=0.0).to(tl.float32)
    s0 = tl.load(cs_row + ch * s_cs_d, mask=mask, other=0.0)
    acc += s0.to(tl.float32) * tl.load(w_ptr + ch * W, mask=mask, other=0.0).to(tl.float32)
    if W > 2:
        s1 = tl.load(cs_row + ch * s_cs_d + 1, mask=mask, other=0.0)
        acc += s1.to(tl.float32) * tl.load(w_ptr + ch * W + 1, mask=mask, other=0.0).to(tl.float32)
    if W > 3:
        s2 = tl.load(cs_row + ch * s_cs_d + 2, mask=mask, other=0.0)
        acc += s2.to(tl.float32) * tl.load(w_ptr + ch * W + 2, mask=mask, other=0.0).to(tl.float32)
    tl.debug_barrier()
    if W == 2:
        tl.store(cs_row + ch * s_cs_d, new.to(s0.dtype), mask=mask)
    if W == 3:
        tl.store(cs_row + ch * s_cs_d, s1, mask=mask)
        tl.store(cs_row + ch * s_cs_d + 1, new.to(s0.dtype), mask=mask)
    if W == 4:
        tl.store(cs_row + ch * s_cs_d, s1, mask=mask)
        tl.store(cs_row + ch * s_cs_d + 1, s2, mask=mask)
        tl.store(cs_row + ch * s_cs_d + 2, new.to(s0.dtype), mask=mask)
    # round through the input dtype, as the reference computes the conv in it
    return _silu(acc.to(new.dtype).to(tl.float32)).to(new.dtype).to(tl.float32)


@triton.jit
def _decode_kernel(
    zx_ptr, cs_ptr, ss_ptr, slot_ptr, w_ptr, cb_ptr, dtb_ptr, A_ptr, D_ptr, nw_ptr, out_ptr,
    s_zx_b, s_cs_slot, s_cs_d, s_ss_slot, s_out_b,
    eps, dt_min, dt_max,
    INNER, CONV_DIM, G,
    P: tl.constexpr, N: tl.constexpr, HPG: tl.constexpr, KG: tl.constexpr, W: tl.constexpr,
    BP: tl.constexpr, BN: tl.constexpr,
    HAS_CONV_BIAS: tl.constexpr, HAS_D: tl.constexpr,
):
    BH: tl.constexpr = KG * HPG
    bi = tl.program_id(0)
    g0 = tl.program_id(1) * KG
    slot = tl.load(slot_ptr + bi).to(tl.int64)
    zx_row = zx_ptr + bi.to(tl.int64) * s_zx_b
    cs_row = cs_ptr + slot * s_cs_slot
    ss_row = ss_ptr + slot * s_ss_slot

    heads = g0 * HPG + tl.arange(0, BH)  # (BH,)
    offs_p = tl.arange(0, BP)
    offs_n = tl.arange(0, BN)
    mask_p = offs_p < P
    mask_n = offs_n < N
    ch_x = heads[:, None] * P + offs_p[None, :]  # (BH, BP) channel within inner
    mask_hp = (heads[:, None] >= 0) & mask_p[None, :]
    groups = g0 + tl.arange(0, KG)
    ch_b = INNER + groups[:, None] * N + offs_n[None, :]  # (KG, BN) channel within conv_dim
    mask_gn = (groups[:, None] >= 0) & mask_n[None, :]

    # 1. conv (the xBC slice starts at column INNER of zxbcdt)
    xc = _conv_channels(zx_row + INNER, cs_row, w_ptr, cb_ptr, ch_x, mask_hp, s_cs_d, W, HAS_CONV_BIAS)
    Bc = _conv_channels(zx_row + INNER, cs_row, w_ptr, cb_ptr, ch_b, mask_gn, s_cs_d, W, HAS_CONV_BIAS)
    Cc = _conv_channels(zx_row + INNER, cs_row, w_ptr, cb_ptr, ch_b + G * N, mask_gn, s_cs_d, W, HAS_CONV_BIAS)
    if HPG > 1:
        Bh = tl.reshape(tl.broadcast_to(Bc[:, None, :], (KG, HPG, BN)), (BH, BN))
        Ch = tl.reshape(tl.broadcast_to(Cc[:, None, :], (KG, HPG, BN)), (BH, BN))
    else:
        Bh = Bc
        Ch = Cc

    # 2. dt
    dt = tl.load(zx_row + INNER + CONV_DIM + heads).to(tl.float32) + tl.load(dtb_ptr + heads).to(tl.float32)
    dt = tl.where(dt > 20.0, dt, tl.log(1.0 + tl.exp(dt)))
    dt = tl.minimum(tl.maximum(dt, dt_min), dt_max)
    A = tl.load(A_ptr + heads).to(tl.float32)

    # 3. SSD step on the fp32 state (BH, BP, BN)
    s_off = heads[:, None, None] * (P * N) + offs_p[None, :, None] * N + offs_n[None, None, :]
    s_mask = mask_hp[:, :, None] & mask_n[None, None, :]
    S = tl.load(ss_row + s_off, mask=s_mask, other=0.0)
    tl.debug_barrier()  # all reads of the state before any write (see _conv_channels)
    S = S * tl.exp(dt * A)[:, None, None] + (dt[:, None] * xc)[:, :, None] * Bh[:, None, :]
    tl.store(ss_row + s_off, S, mask=s_mask)
    y = tl.sum(S * Ch[:, None, :], axis=2)  # (BH, BP)
    if HAS_D:
        y += tl.load(D_ptr + heads).to(tl.float32)[:, None] * xc
    y = y.to(zx_ptr.dtype.element_ty).to(tl.float32)  # the reference returns y in the input dtype

    # 4. gated RMSNorm over each group's HPG * P channels
    z = tl.load(zx_row + ch_x, mask=mask_hp, other=0.0).to(tl.float32)
    gy = y * _silu(z)
    ss = tl.sum(gy * gy, axis=1)  # (BH,)
    if HPG > 1:
        ssg = tl.sum(tl.reshape(ss, (KG, HPG)), axis=1)
        ss = tl.reshape(tl.broadcast_to(ssg[:, None], (KG, HPG)), (BH,))
    r = 1.0 / tl.sqrt(ss / (HPG * P) + eps)
    normed = (gy * r[:, None]).to(zx_ptr.dtype.element_ty)
    nw = tl.load(nw_ptr + ch_x, mask=mask_hp, other=0.0)
    out = normed.to(tl.float32) * nw.to(tl.float32)
    tl.store(out_ptr + bi.to(tl.int64) * s_out_b + ch_x, out.to(out_ptr.dtype.element_ty), mask=mask_hp)


LAUNCH_ELEMENTS = 2048  # state elements a program should hold at least, where whole groups allow


def launch_shape(G: int, HPG: int, P: int, N: int) -> tuple[int, int]:
    """(groups per program, warps) of the decode step's launch.

    Groups are added (a power of two dividing G) until a program holds `LAUNCH_ELEMENTS` state
    elements; 2 warps up to that size, 4 above. From `studies/decode_sweep.py` on an H100
    (`studies/results/engine_2026-12-07/`), batch 256 / 560, as a fraction of copy bandwidth:
    m1-3b (192 groups of 16 x 16) 8 groups and 2 warps 0.57 / 0.62, against 0.52 / 0.57 for the
    earlier 16 groups and 4 warps; m1-3b-s128 (24 groups of 128 x 128) 1 group and 4 warps
    0.87 / 0.87, against 0.64 / 0.65 for 8 warps. Fewer, fuller programs left state loads
    waiting; more warps on a 128 x 128 group split its rows too thinly.
    """
    kg = 1
    while kg * 2 <= G and G % (kg * 2) == 0 and kg * HPG * P * N < LAUNCH_ELEMENTS:
        kg *= 2
    elems = kg * HPG * triton.next_power_of_2(P) * triton.next_power_of_2(N)
    return kg, (2 if elems <= LAUNCH_ELEMENTS else 4)


def mamba2_decode_step_triton(
    zxbcdt, conv_state, ssm_state, slot_ids, conv_weight, conv_bias, dt_bias, A, D, norm_weight,
    *, n_heads, head_dim, n_groups, state_size, eps, dt_limit=(0.0, math.inf),
    groups_per_program: int | None = None, num_warps: int | None = None,
):
    """`groups_per_program` and `num_warps` override `launch_shape` (for `studies/decode_sweep.py`). Each
    program computes its elements the same way whatever the shape; only the order of y = C·h's sum
    may follow the warps, so y can move by a bf16 rounding step."""
    b = zxbcdt.shape[0]
    H, P, G, N = n_heads, head_dim, n_groups, state_size
    inner = H * P
    conv_dim = inner + 2 * G * N
    if zxbcdt.shape[-1] != inner + conv_dim + H:
        raise ValueError(f"zxbcdt has {zxbcdt.shape[-1]} channels, expected {inner + conv_dim + H}")
    if H % G:
        raise ValueError(f"heads ({H}) must be a multiple of groups ({G})")
    if ssm_state.dtype != torch.float32 or tuple(ssm_state.shape[1:]) != (H, P, N):
        raise ValueError(f"ssm_state must be fp32 (slots, {H}, {P}, {N}); got {ssm_state.dtype} {tuple(ssm_state.shape)}")
    if not (zxbcdt.stride(-1) == 1 and conv_state.stride(-1) == 1 and ssm_state.is_contiguous()):
        raise ValueError("decode step needs unit last strides for zxbcdt/conv_state and a contiguous ssm_state")
    HPG = H // G
    W = conv_weight.shape[-1]
    if not 2 <= W <= 4:
        raise ValueError(f"the fused decode step supports conv widths 2 to 4, got {W}")
    weight = conv_weight.reshape(conv_dim, W).contiguous()
    if not (W - 1 == conv_state.shape[-1] and conv_state.shape[1] == conv_dim):
        raise ValueError(f"conv_state must be (slots, {conv_dim}, {W - 1}); got {tuple(conv_state.shape)}")
    out = torch.empty(b, inner, device=zxbcdt.device, dtype=zxbcdt.dtype)
    default_kg, default_warps = launch_shape(G, HPG, P, N)
    KG = groups_per_program or default_kg
    if G % KG:
        raise ValueError(f"groups_per_program ({KG}) must divide the group count ({G})")
    BP, BN = triton.next_power_of_2(P), triton.next_power_of_2(N)
    _decode_kernel[(b, G // KG)](
        zxbcdt, conv_state, ssm_state, slot_ids, weight, conv_bias if conv_bias is not None else weight,
        dt_bias, A, D if D is not None else A, norm_weight, out,
        zxbcdt.stride(0), conv_state.stride(0), conv_state.stride(1), ssm_state.stride(0), out.stride(0),
        float(eps), float(dt_limit[0]), float(dt_limit[1]),
        inner, conv_dim, G,
        P=P, N=N, HPG=HPG, KG=KG, W=W, BP=BP, BN=BN,
        HAS_CONV_BIAS=conv_bias is not None, HAS_D=D is not None,
        num_warps=num_warps or default_warps,
    )
    return out
