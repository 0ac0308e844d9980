"""Gated RMSNorm of the Mamba-2 output: norm(y * silu(z)) * weight, per group.

The normalisation runs over groups of `group_size` channels (inner width / n_groups),
matching transformers' GraniteMoeHybrid and vLLM's Mamba-2 mixer, and is computed in
fp32 for fp32 and narrower inputs, in fp64 for fp64 ones (so an fp64 model is an fp64
reference; transformers' mixer computes in fp32 even then). `out_dtype` asks for the result in
the dtype its consumer takes (the Mamba mixer passes the autocast dtype under autocast): the
Triton kernel then writes it directly, instead of an fp32 tensor that out_proj's autocast casts
in a second pass; the values are the same (one rounding of the same fp32 product).

`gated_rms_norm` picks per call (`m1.ops.dispatch`): the fused Triton kernel, forward and
backward (`m1.ops.triton.norm`), for CUDA tensors when triton is installed; this reference
elsewhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from m1.ops import dispatch


def gated_rms_norm_ref(y, z, weight, eps: float = 1e-6, group_size: int | None = None, out_dtype: torch.dtype | None = None):
    """`out_dtype` (default: the product's own, weight's and y's promoted dtype) rounds the result once
    more, as the next layer's cast would (under autocast: the autocast dtype out_proj takes)."""
    in_dtype = y.dtype
    ct = torch.promote_types(y.dtype, torch.float32)
    h = y.to(ct)
    if z is not None:
        h = h * F.silu(z.to(ct))
    d = h.shape[-1]
    gs = group_size or d
    hg = h.view(*h.shape[:-1], d // gs, gs)
    hg = hg * torch.rsqrt(hg.pow(2).mean(-1, keepdim=True) + eps)
    out = weight * hg.view(*h.shape).to(in_dtype)
    return out if out_dtype is None else out.to(out_dtype)


def _load_triton():
    from m1.ops.triton.norm import gated_rms_norm_triton

    return gated_rms_norm_triton


dispatch.register("gated_rms_norm", dispatch.Impl("ref", lambda x: True, lambda: gated_rms_norm_ref))
dispatch.register("gated_rms_norm", dispatch.Impl("triton", dispatch.cuda_with_triton, _load_triton))


def gated_rms_norm(y, z, weight, eps: float = 1e-6, group_size: int | None = None, out_dtype: torch.dtype | None = None):
    fn = dispatch.choose("gated_rms_norm", y)
    if out_dtype is None:
        return fn(y, z, weight, eps=eps, group_size=group_size)
    return fn(y, z, weight, eps=eps, group_size=group_size, out_dtype=out_dtype)
