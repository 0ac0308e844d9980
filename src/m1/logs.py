"""Logging set-up shared by the command line and the processes it spawns.

`setup_logging` is what every `m1` command starts with; `quiet_cpu_kernel_hints` alone is for
library code that loads transformers models (it may run without the command line, and must
not import the router, `m1.cli`).
"""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_KERNEL_PACKAGES = ("mamba_ssm", "mamba-ssm", "causal_conv1d", "causal-conv1d")


class _CPUKernelHintFilter(logging.Filter):
    """Drops transformers' "install mamba_ssm / causal_conv1d" hints on a machine without CUDA.

    Those packages are CUDA-only, so on a CPU the hint is advice that cannot be followed (and
    m1's own model does not use them at all). With CUDA present the hint is kept.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if not any(p in msg for p in _KERNEL_PACKAGES):
            return True
        import torch

        return torch.cuda.is_available()


def quiet_cpu_kernel_hints() -> None:
    """Install `_CPUKernelHintFilter` on the transformers loggers that emit the hint (idempotent)."""
    for name in ("transformers.integrations.hub_kernels", "transformers.models.granitemoehybrid.modeling_granitemoehybrid",
                 "transformers.models.mamba2.modeling_mamba2"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _CPUKernelHintFilter) for f in log.filters):
            log.addFilter(_CPUKernelHintFilter())


def setup_logging(level: int = logging.INFO, fmt: str = FORMAT) -> None:
    """INFO to stderr with timestamps (a no-op when the root logger is already set up), CPU kernel hints dropped."""
    logging.basicConfig(level=level, format=fmt, datefmt="%H:%M:%S")
    quiet_cpu_kernel_hints()
