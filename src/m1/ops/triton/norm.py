"""Triton kernels of the Mamba-2 gated RMSNorm, forward and backward (reference: `m1.ops.norm`).

out = weight * norm(y * silu(z)), the norm over groups of `group_size` channels of the last
dim, in fp32 whatever the input dtype. It rounds where the reference rounds: the normalised
group to y's dtype, then the product with the weight to their common dtype (or to `out_dtype`).

Forward: one program per (row, group); it keeps 1/rms (rows x groups, fp32) for the
backward. Backward: one program per (block of rows, group); it recomputes h = y * silu(z)
and returns dy, dz and per-block partial sums of dweight (summed by the caller):

    n = h r,  dn = dout * w,  dh = r (dn - n mean(dn n)),  dy = dh silu(z),  dz = dh y silu'(z),
    dw = sum over rows of dout * n.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _fwd_kernel(y_ptr, z_ptr, w_ptr, out_ptr, rstd_ptr, D, G, eps, HAS_Z: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    grp = tl.program_id(1)
    n_groups = tl.num_programs(1)
    cols = grp * G + tl.arange(0, BLOCK)
    m = tl.arange(0, BLOCK) < G
    y = tl.load(y_ptr + row * D + cols, mask=m, other=0.0)
    h = y.to(tl.float32)
    if HAS_Z:
        z = tl.load(z_ptr + row * D + cols, mask=m, other=0.0).to(tl.float32)
        h = h * (z / (1.0 + tl.exp(-z)))
    rstd = 1.0 / tl.sqrt(tl.sum(h * h, axis=0) / G + eps)
    tl.store(rstd_ptr + row * n_groups + grp, rstd)
    n = (h * rstd).to(y_ptr.dtype.element_ty)
    w = tl.load(w_ptr + cols, mask=m, other=0.0)
    tl.store(out_ptr + row * D + cols, (n.to(tl.float32) * w.to(tl.float32)).to(out_ptr.dtype.element_ty), mask=m)


@triton.jit
def _bwd_kernel(dout_ptr, y_ptr, z_ptr, w_ptr, rstd_ptr, dy_ptr, dz_ptr, dw_ptr, R, D, G,
                ROWS_PER_PROG: tl.constexpr, HAS_Z: tl.constexpr, BLOCK: tl.constexpr):
    blk = tl.program_id(0)
    grp = tl.program_id(1)
    n_groups = tl.num_programs(1)
    cols = grp * G + tl.arange(0, BLOCK)
    m = tl.arange(0, BLOCK) < G
    w = tl.load(w_ptr + cols, mask=m, other=0.0).to(tl.float32)
    dw = tl.zeros([BLOCK], dtype=tl.float32)
    # a compile-time trip count: Triton 3.6's interpreter cannot loop over a runtime scalar
    # argument (it arrives as a 1-element array), and a training run's row count is fixed
    r0 = blk * ROWS_PER_PROG
    for i in range(0, ROWS_PER_PROG):
        row = (r0 + i).to(tl.int64)
        if row < R:
            y = tl.load(y_ptr + row * D + cols, mask=m, other=0.0)
            yf = y.to(tl.float32)
            dout = tl.load(dout_ptr + row * D + cols, mask=m, other=0.0).to(tl.float32)
            rstd = tl.load(rstd_ptr + row * n_groups + grp)
            if HAS_Z:
                z = tl.load(z_ptr + row * D + cols, mask=m, other=0.0).to(tl.float32)
                sig = 1.0 / (1.0 + tl.exp(-z))
                gate = z * sig
                h = yf * gate
            else:
                h = yf
            n = h * rstd
            dw += dout * n.to(y_ptr.dtype.element_ty).to(tl.float32)
            dn = dout * w
            dh = rstd * (dn - n * (tl.sum(dn * n, axis=0) / G))
            if HAS_Z:
                tl.store(dy_ptr + row * D + cols, (dh * gate).to(dy_ptr.dtype.element_ty), mask=m)
                dgate = sig * (1.0 + z * (1.0 - sig))
                tl.store(dz_ptr + row * D + cols, (dh * yf * dgate).to(dz_ptr.dtype.element_ty), mask=m)
            else:
                tl.store(dy_ptr + row * D + cols, dh.to(dy_ptr.dtype.element_ty), mask=m)
    tl.store(dw_ptr + blk * D + cols, dw, mask=m)


def _launch_fwd(y2, z2, w, G, eps, out_dtype=None):
    R, D = y2.shape
    out = torch.empty((R, D), dtype=out_dtype or torch.promote_types(w.dtype, y2.dtype), device=y2.device)
    rstd = torch.empty((R, D // G), dtype=torch.float32, device=y2.device)
    BLOCK = triton.next_power_of_2(G)
    _fwd_kernel[(R, D // G)](y2, z2 if z2 is not None else y2, w, out, rstd, D, G, eps, HAS_Z=z2 is not None,
                             BLOCK=BLOCK, num_warps=4 if BLOCK >= 1024 else 1)
    return out, rstd


class _GatedRMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, z, weight, eps, group_size, out_dtype=None):
        D = y.shape[-1]
        y2 = y.reshape(-1, D).contiguous()
        z2 = None if z is None else z.reshape(-1, D).contiguous()
        w = weight.contiguous()
        out, rstd = _launch_fwd(y2, z2, w, group_size, eps, out_dtype)
        ctx.save_for_backward(y2, z2 if z2 is not None else y2.new_empty(0), w, rstd)
        ctx.has_z, ctx.group_size, ctx.shape = z is not None, group_size, y.shape
        return out.view(*y.shape[:-1], D)

    @staticmethod
    def backward(ctx, dout):
        y2, z2, w, rstd = ctx.saved_tensors
        R, D = y2.shape
        G = ctx.group_size
        dout2 = dout.reshape(R, D).contiguous()
        dy = torch.empty_like(y2)
        dz = torch.empty_like(z2) if ctx.has_z else None
        rows_per_prog = max(1, triton.cdiv(R, 256))  # at most 256 partial dweight rows
        blocks = triton.cdiv(R, rows_per_prog)
        dw_part = torch.zeros((blocks, D), dtype=torch.float32, device=y2.device)
        BLOCK = triton.next_power_of_2(G)
        _bwd_kernel[(blocks, D // G)](dout2, y2, z2 if ctx.has_z else y2, w, rstd, dy, dz if ctx.has_z else dy, dw_part,
                                      R, D, G, ROWS_PER_PROG=rows_per_prog, HAS_Z=ctx.has_z, BLOCK=BLOCK,
                                      num_warps=4 if BLOCK >= 1024 else 1)
        dw = dw_part.sum(0).to(w.dtype)
        return dy.view(ctx.shape), None if dz is None else dz.view(ctx.shape), dw, None, None, None


def gated_rms_norm_triton(y, z, weight, eps: float = 1e-6, group_size: int | None = None, out_dtype: torch.dtype | None = None):
    """The reference's signature and result (values, dtype, gradients for y, z and weight). With
    `out_dtype` the kernel stores the fp32 product in that dtype (one rounding, as a cast after it)."""
    D = y.shape[-1]
    G = group_size or D
    if D % G:
        raise ValueError(f"group_size {G} does not divide the last dim {D}")
    if z is not None and z.shape != y.shape:
        raise ValueError(f"z {tuple(z.shape)} and y {tuple(y.shape)} differ")
    return _GatedRMSNorm.apply(y, z, weight, eps, G, out_dtype)
