"""Numerical ops: a plain PyTorch reference for each, GPU kernels (`m1.ops.triton`) where
they pay, and a dispatch function per op that chooses at call time (`m1.ops.dispatch`).

Mamba-2: `ssd`, `conv`, `norm`, `decode` (the fused decode step). The engine's decode
step: `fused` (add + RMSNorm, SwiGLU), `paged_attention`, `sampling` (the untruncated draw) and `linear`
(its GEMMs on weights prepared once: oneDNN on a CPU)."""

from m1.ops.conv import causal_conv1d, causal_conv1d_ref, causal_conv1d_step, causal_conv1d_step_ref
from m1.ops.norm import gated_rms_norm, gated_rms_norm_ref
from m1.ops.ssd import ssd_chunked, ssd_chunked_ref, ssd_scan_ref, ssd_step, ssd_step_ref

__all__ = [
    "causal_conv1d",
    "causal_conv1d_ref",
    "causal_conv1d_step",
    "causal_conv1d_step_ref",
    "gated_rms_norm",
    "gated_rms_norm_ref",
    "ssd_chunked",
    "ssd_chunked_ref",
    "ssd_scan_ref",
    "ssd_step",
    "ssd_step_ref",
]
