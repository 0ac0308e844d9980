"""Triton kernels for the decode step's elementwise work (see `m1.ops.fused` for the references).

- `add_rms_norm_triton`: residual add and RMSNorm in one pass (one program per row);
- `swiglu_triton`: silu(gate) * up from the stacked [gate | up] projection.

Both round where the PyTorch references round (the residual sum to the model dtype
before the norm, the normalised row before the weight, silu before the product), so the
two paths agree to the last bit or nearly.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _add_rms_norm_kernel(x_ptr, r_ptr, w_ptr, out_ptr, res_ptr, D, eps, HAS_RES: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    m = cols < D
    x = tl.load(x_ptr + row * D + cols, mask=m, other=0.0)
    if HAS_RES:
        r = tl.load(r_ptr + row * D + cols, mask=m, other=0.0)
        s = (x.to(tl.float32) + r.to(tl.float32)).to(res_ptr.dtype.element_ty)
        tl.store(res_ptr + row * D + cols, s, mask=m)
        h = s.to(tl.float32)
    else:
        h = x.to(tl.float32)
    var = tl.sum(h * h, axis=0) / D
    y = (h * (1.0 / tl.sqrt(var + eps))).to(x_ptr.dtype.element_ty)
    w = tl.load(w_ptr + cols, mask=m, other=0.0)
    tl.store(out_ptr + row * D + cols, (y.to(tl.float32) * w.to(tl.float32)).to(out_ptr.dtype.element_ty), mask=m)


def add_rms_norm_triton(x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float):
    D = x.shape[-1]
    x2 = x.reshape(-1, D).contiguous()
    out = torch.empty(x2.shape, dtype=torch.result_type(weight, x), device=x.device)
    if residual is not None:
        r2 = residual.reshape(-1, D).contiguous()
        res = torch.empty_like(x2)
    else:
        r2, res = x2, x2
    _add_rms_norm_kernel[(x2.shape[0],)](x2, r2, weight, out, res, D, eps, HAS_RES=residual is not None,
                                         BLOCK=triton.next_power_of_2(D), num_warps=8 if D >= 2048 else 4)
    return out.view(x.shape), res.view(x.shape)


@triton.jit
def _swiglu_kernel(gu_ptr, out_ptr, N, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = cols < N
    g = tl.load(gu_ptr + row * 2 * N + cols, mask=m, other=0.0)
    u = tl.load(gu_ptr + row * 2 * N + N + cols, mask=m, other=0.0)
    gf = g.to(tl.float32)
    a = (gf / (1.0 + tl.exp(-gf))).to(g.dtype)
    tl.store(out_ptr + row * N + cols, (a.to(tl.float32) * u.to(tl.float32)).to(out_ptr.dtype.element_ty), mask=m)


def swiglu_triton(gu: torch.Tensor) -> torch.Tensor:
    N = gu.shape[-1] // 2
    g2 = gu.reshape(-1, 2 * N).contiguous()
    out = torch.empty(g2.shape[0], N, dtype=gu.dtype, device=gu.device)
    BLOCK = 1024
    _swiglu_kernel[(g2.shape[0], triton.cdiv(N, BLOCK))](g2, out, N, BLOCK=BLOCK)
    return out.view(*gu.shape[:-1], N)
