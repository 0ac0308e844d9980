"""Reusable scratch buffers for a loop that makes the same large temporaries every step.

On CPU a fresh tensor larger than glibc's mmap threshold (at most 32 MiB) is mapped
anew on every allocation and page-faults on first touch: measured on the 2-core
benchmark machine, gathering 52 MB of KV blocks took 16 ms into a fresh tensor and 2 ms
into a reused one. The engine's CPU decode step holds one `Workspace` and gathers into
it; the values computed are the same either way.
"""

from __future__ import annotations

import math

import torch


class Workspace:
    """Named flat buffers, grown on demand, handed out as views of the requested shape.

    A view stays valid until the next `get` of the same name; callers use it within one op.
    """

    def __init__(self) -> None:
        self._bufs: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        n = math.prod(shape)
        buf = self._bufs.get(name)
        if buf is None or buf.numel() < n or buf.dtype != dtype or buf.device != device:
            grown = int(1.25 * buf.numel()) if buf is not None else 0  # sequences grow: leave some room
            buf = torch.empty(max(n, grown), dtype=dtype, device=device)
            self._bufs[name] = buf
        return buf[:n].view(shape)

    def clear(self) -> None:
        self._bufs.clear()

    @property
    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self._bufs.values())
