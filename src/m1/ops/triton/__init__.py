"""Triton kernels for the Mamba-2 path.

Nothing here is imported at package import time: `m1.ops.dispatch` loads these modules
lazily, the first time a CUDA tensor reaches an op, so a CPU-only install never imports
triton. Each kernel has a plain PyTorch reference beside its op (`m1.ops.ssd`,
`m1.ops.decode`, `m1.ops.fused`, `m1.ops.paged_attention`, `m1.ops.norm`) and a test comparing the two
(`tests/ops/test_*_gpu.py`, and the Triton interpreter on CPU where it runs).

- `ssd.py`: chunked SSD forward and backward (our own kernels, "triton"), and fla-core's
  `chunk_simple_gla` forward ("fla"), registered as two implementations.
- `decode.py`: the fused Mamba-2 decode step (conv, SSD update, D skip, gated RMSNorm).
- `fused.py`: residual add + RMSNorm, and SwiGLU, of the engine's decode step.
- `paged_attention.py`: decode attention over the paged KV cache.
- `norm.py`: the gated RMSNorm of the Mamba-2 mixer (forward and backward), outside the decode step.
"""
