"""Fused elementwise ops of the decode step: a plain PyTorch reference for each, a Triton
kernel on CUDA (`m1.ops.triton.fused`), chosen per call through `m1.ops.dispatch`
(which logs the first use of each, and which `M1_OPS=ref` pins to the references).

- `add_rms_norm(x, residual, weight, eps)` -> (norm(residual + x), residual + x): the
  residual add that ends one sub-block and the RMSNorm that starts the next, in one pass.
  With `residual=None` it is the plain norm of x (and returns x as the residual).
- `swiglu(gu)` -> silu(gate) * up, for the MLP's stacked [gate | up] projection.

The references compute exactly what the model's modules compute (`m1.layers.norm.RMSNorm`,
`m1.layers.mlp.GatedMLP`), so the engine's eager CPU path is the model's own maths.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from m1.ops import dispatch


def add_rms_norm_ref(x, residual, weight, eps: float):
    s = x if residual is None else residual + x
    h = s.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(s.dtype), s


def swiglu_ref(gu):
    gate, up = gu.chunk(2, dim=-1)
    return F.silu(gate) * up


def _load_add_rms_norm():
    from m1.ops.triton.fused import add_rms_norm_triton

    return add_rms_norm_triton


def _load_swiglu():
    from m1.ops.triton.fused import swiglu_triton

    return swiglu_triton


dispatch.register("add_rms_norm", dispatch.Impl("ref", lambda x: True, lambda: add_rms_norm_ref))
dispatch.register("add_rms_norm", dispatch.Impl("triton", dispatch.cuda_with_triton, _load_add_rms_norm))
dispatch.register("swiglu", dispatch.Impl("ref", lambda x: True, lambda: swiglu_ref))
dispatch.register("swiglu", dispatch.Impl("triton", dispatch.cuda_with_triton, _load_swiglu))


def add_rms_norm(x, residual, weight, eps: float):
    return dispatch.choose("add_rms_norm", x)(x, residual, weight, eps)


def swiglu(gu):
    return dispatch.choose("swiglu", gu)(gu)
