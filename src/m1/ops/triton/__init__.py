"""Triton kernels for the Mamba-2 path.

Nothing here is imported at package import time: `m1.ops.dispatch` loads these modules
lazily, the first time a CUDA tensor reaches an op, so a CPU-only install never imports
triton. Each kernel has a plain PyTorch reference beside its op (`m1.ops.ssd`,
`m1.ops.decode`) and a GPU test comparing the two (`tests/ops/test_*_gpu.py`).

- `ssd.py`: chunked SSD forward and backward (our own kernels), plus the call-time
  choice of fla-core's `chunk_simple_gla` forward for gradient-free calls.
- `decode.py`: the fused Mamba-2 decode step (conv, SSD update, D skip, gated RMSNorm).
"""
