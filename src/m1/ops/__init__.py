"""Numerical ops of the Mamba-2 layer: a plain PyTorch reference for each, GPU kernels
where they pay, and a dispatch function per op that chooses at call time."""

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
