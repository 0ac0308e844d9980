"""One fused Mamba-2 decode step over slot-indexed caches: reference and dispatch.

`mamba2_decode_step` takes the in_proj output of one token per request, laid out
[z | x B C | dt] with inner = n_heads * head_dim and conv_dim = inner + 2 * n_groups *
state_size, and for each request b with cache row slot_ids[b]:

  1. shifts conv_state[slot] by one and runs the depthwise conv (+ bias, silu) on xBC;
  2. dt = clamp(softplus(dt + dt_bias), *dt_limit);
  3. updates ssm_state[slot] (fp32) by one SSD step, y = S C + D x;
  4. returns norm(y * silu(z)) * norm_weight, the gated RMSNorm over groups of
     inner / n_groups channels in fp32, in the input dtype (out_proj is the caller's).

conv_state (num_slots, conv_dim, w-1) and ssm_state (num_slots, h, p, n) are updated in
place at rows slot_ids (b,) int64; other rows are untouched. conv_weight is (conv_dim, w)
(a (conv_dim, 1, w) Conv1d weight is accepted too).

`mamba2_decode_step_ref` is the definition: the existing unfused references
(`causal_conv1d_step_ref`, `ssd_step_ref`, `gated_rms_norm_ref`) composed with slot
indexing. On CUDA with triton installed the call goes to one Triton kernel
(`m1.ops.triton.decode`), which does no host sync and allocates only its output, so the
engine can capture it in a CUDA graph. On CPU it goes to `mamba2_decode_step_cpu`: the
same maths, with the SSM state updated in place (decay, then the rank-1 update as a
batched GEMM, then y = S C as a batched GEMV) instead of through full-size temporaries,
the conv window shifted in place, and no gather or scatter of the states at all when
the rows' slots are one contiguous range (the engine's case whenever every slot is busy).
Measured on 2 cores: the SSD update at batch 192 x (9 heads x 64 x 64), 16 ms a step for
the reference, 3 ms in place; the conv step at batch 64 x 1728 channels, 1.6 ms and 0.6 ms.
The state is updated in cache-sized blocks of rows (`STATE_BLOCK_BYTES`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from m1.ops import dispatch
from m1.ops.conv import causal_conv1d_ref, causal_conv1d_step_ref
from m1.ops.norm import gated_rms_norm_ref
from m1.ops.slots import contiguous_range, inverse
from m1.ops.ssd import ssd_chunked_ref, ssd_step_ref


def split_zxbcdt(zxbcdt: torch.Tensor, n_heads: int, head_dim: int, n_groups: int, state_size: int):
    """in_proj's output (..., inner + conv_dim + h) -> z (..., inner), xBC (..., conv_dim), dt (..., h)."""
    inner = n_heads * head_dim
    conv_dim = inner + 2 * n_groups * state_size
    if zxbcdt.shape[-1] != inner + conv_dim + n_heads:
        raise ValueError(f"zxbcdt has {zxbcdt.shape[-1]} channels, expected {inner + conv_dim + n_heads}")
    return torch.split(zxbcdt, [inner, conv_dim, n_heads], dim=-1)


def split_xbc(xBC: torch.Tensor, n_heads: int, head_dim: int, n_groups: int, state_size: int):
    """The conv's output (..., conv_dim) -> x (..., inner), B (..., groups * state), C (..., groups * state)."""
    gn = n_groups * state_size
    return torch.split(xBC, [n_heads * head_dim, gn, gn], dim=-1)


def mamba2_sequence_ref(
    zxbcdt, conv_weight, conv_bias, dt_bias, A, D, norm_weight,
    *, n_heads, head_dim, n_groups, state_size, eps, dt_limit=(0.0, math.inf), ssd=ssd_chunked_ref, dtype=None,
):
    """The whole-sequence counterpart of the decode step, from a zero state.

    zxbcdt (b, l, inner + conv_dim + h) -> (y (b, l, inner), conv_state (b, conv_dim, w-1),
    ssm_state (b, h, p, n)). A prefill with this followed by decode steps must equal this
    over the whole sequence, which is how the fused step is checked; `ssd` picks the SSD
    implementation (the reference, or the dispatching `ssd_chunked`), `dtype` the compute dtype.
    """
    dtype = dtype or zxbcdt.dtype
    b, l = zxbcdt.shape[:2]
    inner = n_heads * head_dim
    z, xBC, dt_raw = split_zxbcdt(zxbcdt.to(dtype), n_heads, head_dim, n_groups, state_size)
    weight = conv_weight.reshape(conv_weight.shape[0], -1).to(dtype)
    xc, conv_state = causal_conv1d_ref(xBC, weight, None if conv_bias is None else conv_bias.to(dtype))
    x, B, C = split_xbc(xc, n_heads, head_dim, n_groups, state_size)
    dt = F.softplus(dt_raw + dt_bias.to(dtype)).clamp(dt_limit[0], dt_limit[1])
    y, ssm_state = ssd(
        x.reshape(b, l, n_heads, head_dim), dt, A.to(dtype), B.reshape(b, l, n_groups, state_size),
        C.reshape(b, l, n_groups, state_size), D.to(dtype),
    )
    y = gated_rms_norm_ref(y.reshape(b, l, inner), z, norm_weight.to(dtype), eps=eps, group_size=inner // n_groups)
    return y, conv_state, ssm_state


def mamba2_decode_step_ref(
    zxbcdt, conv_state, ssm_state, slot_ids, conv_weight, conv_bias, dt_bias, A, D, norm_weight,
    *, n_heads, head_dim, n_groups, state_size, eps, dt_limit=(0.0, math.inf),
):
    """Plain PyTorch: the unfused references composed, caches updated in place."""
    b = zxbcdt.shape[0]
    inner = n_heads * head_dim
    z, xBC, dt = split_zxbcdt(zxbcdt, n_heads, head_dim, n_groups, state_size)
    weight = conv_weight.reshape(conv_weight.shape[0], -1)
    xBC, new_conv = causal_conv1d_step_ref(xBC, conv_state[slot_ids], weight, conv_bias, activation="silu")
    conv_state[slot_ids] = new_conv.to(conv_state.dtype)
    x, B, C = split_xbc(xBC, n_heads, head_dim, n_groups, state_size)
    ct = torch.float64 if zxbcdt.dtype == torch.float64 else torch.float32
    dt = F.softplus(dt.to(ct) + dt_bias.to(ct)).clamp(dt_limit[0], dt_limit[1])
    y, new_state = ssd_step_ref(
        ssm_state[slot_ids], x.reshape(b, n_heads, head_dim), dt, A, B.reshape(b, n_groups, state_size),
        C.reshape(b, n_groups, state_size), D,
    )
    ssm_state[slot_ids] = new_state.to(ssm_state.dtype)
    out = gated_rms_norm_ref(y.reshape(b, inner), z, norm_weight, eps=eps, group_size=inner // n_groups)
    return out.to(zxbcdt.dtype)


STATE_BLOCK_BYTES = 2 << 20
"""`mamba2_decode_step_cpu` updates the SSM state a block of rows at a time, each block about this size, so the
decay, the rank-1 update and y = S C read it from cache after the first pass rather than from memory. Measured on 2
cores (AMD EPYC, 1 MiB L2 a core, 32 MiB L3), 24 layers of 64 x (9 heads x 64 x 64) fp32: 30.8 ms a step as three
whole-state passes with y from `bmm`, 24.1 as whole-state passes with y from `vecdot` (MKL's batched GEMV of
64 x 64 blocks ran at half the speed of a multiply-sum), 16.8 in blocks of 2 MiB (19.3 at 1 MiB, 17.6 at 4 MiB)."""


def mamba2_decode_step_cpu(
    zxbcdt, conv_state, ssm_state, slot_ids, conv_weight, conv_bias, dt_bias, A, D, norm_weight,
    *, n_heads, head_dim, n_groups, state_size, eps, dt_limit=(0.0, math.inf),
):
    """The reference's maths with in-place state updates; see the module docstring."""
    b = zxbcdt.shape[0]
    h, p, n = n_heads, head_dim, state_size
    inner = h * p
    rng = contiguous_range(slot_ids)
    if rng is not None:  # the pools' rows lo .. lo + b - 1, as views; rows permuted into slot order if needed
        lo, order = rng
        if order is not None:
            zxbcdt = zxbcdt.index_select(0, order)
        conv = conv_state[lo:lo + b]
        ssm = ssm_state[lo:lo + b]
    else:
        conv = conv_state.index_select(0, slot_ids)
        ssm = ssm_state.index_select(0, slot_ids)
    z, xBC, dt = split_zxbcdt(zxbcdt, h, p, n_groups, n)
    # The conv step as w multiply-adds over (b, conv_dim) and a shift of the window in place: the reference's
    # cat + product + sum over the tiny last dim costs ~3x more on CPU.
    weight = conv_weight.reshape(conv_weight.shape[0], -1).to(xBC.dtype)
    w = weight.shape[1]
    acc = xBC * weight[:, -1] if conv_bias is None else torch.addcmul(conv_bias.to(xBC.dtype), xBC, weight[:, -1])
    for j in range(w - 1):
        acc.addcmul_(conv[:, :, j].to(xBC.dtype), weight[:, j])
    for j in range(w - 2):
        conv[:, :, j].copy_(conv[:, :, j + 1])
    conv[:, :, w - 2].copy_(xBC)
    x, B, C = split_xbc(F.silu(acc), h, p, n_groups, n)
    ct = torch.float64 if zxbcdt.dtype == torch.float64 else torch.float32
    dt = F.softplus(dt.to(ct) + dt_bias.to(ct)).clamp(dt_limit[0], dt_limit[1])
    st = ssm.dtype
    dtt = dt.to(st)
    xs = x.reshape(b, h, p).to(st)
    rep = h // n_groups
    Bh = B.reshape(b, n_groups, n).to(st).repeat_interleave(rep, dim=1) if rep > 1 else B.reshape(b, h, n).to(st)
    Ch = C.reshape(b, n_groups, n).to(st).repeat_interleave(rep, dim=1) if rep > 1 else C.reshape(b, h, n).to(st)
    decay = torch.exp(dtt * A.to(st))
    u = dtt[:, :, None] * xs
    y = torch.empty(b, h, p, dtype=st, device=ssm.device)
    rows = max(1, STATE_BLOCK_BYTES // (h * p * n * ssm.element_size()))
    for lo in range(0, b, rows):  # a block of rows stays in cache through its three passes
        hi = min(b, lo + rows)
        blk = ssm[lo:hi]
        blk.mul_(decay[lo:hi, :, None, None])  # S <- exp(dt A) S
        blk.view(-1, p, n).baddbmm_(u[lo:hi].reshape(-1, p, 1), Bh[lo:hi].reshape(-1, 1, n))  # S += (dt x) B^T
        torch.linalg.vecdot(blk, Ch[lo:hi, :, None, :], out=y[lo:hi])  # S C
    y += D.to(st)[None, :, None] * xs  # y = S C + D x
    if rng is None:
        conv_state.index_copy_(0, slot_ids, conv)
        ssm_state.index_copy_(0, slot_ids, ssm)
    out = gated_rms_norm_ref(y.to(x.dtype).reshape(b, inner), z, norm_weight, eps=eps, group_size=inner // n_groups)
    out = out.to(zxbcdt.dtype)
    if rng is not None and rng[1] is not None:  # back to the caller's row order
        out = out.index_select(0, inverse(rng[1]))
    return out


def _load_triton():
    from m1.ops.triton.decode import mamba2_decode_step_triton

    return mamba2_decode_step_triton


dispatch.register("mamba2_decode_step", dispatch.Impl("ref", lambda x: True, lambda: mamba2_decode_step_ref))
dispatch.register("mamba2_decode_step", dispatch.Impl("cpu", lambda x: x.device.type == "cpu", lambda: mamba2_decode_step_cpu,
                                                      grad=False))
dispatch.register("mamba2_decode_step", dispatch.Impl("triton", dispatch.cuda_with_triton, _load_triton))


def mamba2_decode_step(
    zxbcdt, conv_state, ssm_state, slot_ids, conv_weight, conv_bias, dt_bias, A, D, norm_weight,
    *, n_heads, head_dim, n_groups, state_size, eps, dt_limit=(0.0, math.inf),
):
    """One fused decode step on the best implementation for these tensors. Returns y (b, inner)."""
    fn = dispatch.choose("mamba2_decode_step", zxbcdt, dispatch.needs_grad(zxbcdt, conv_weight, dt_bias, A, D, norm_weight))
    return fn(
        zxbcdt, conv_state, ssm_state, slot_ids, conv_weight, conv_bias, dt_bias, A, D, norm_weight,
        n_heads=n_heads, head_dim=head_dim, n_groups=n_groups, state_size=state_size, eps=eps, dt_limit=dt_limit,
    )
