"""Row-to-slot helpers for the CPU decode paths.

A decode batch names, per row, a slot of a per-slot pool (Mamba states) or a block of the
KV pool. When those ids are one contiguous range, in whatever order, the pool's rows
lo .. lo + b - 1 are a view: an op can read and update them in place instead of
gathering and scattering, with its rows permuted into pool order. The engine's CPU
decode is in that case whenever every slot is busy.
"""

from __future__ import annotations

import torch


def contiguous_range(ids: torch.Tensor) -> tuple[int, torch.Tensor | None] | None:
    """(lo, order) if the ids (b,) are lo .. lo + b - 1 in some order; `order` sorts the rows into
    pool order (None when they already are). None otherwise (a gap, or an id repeated).
    Reads the ids on the host: for CPU tensors."""
    b = ids.numel()
    if b == 0:
        return None
    host = ids.tolist()
    lo = min(host)
    if max(host) - lo != b - 1:
        return None
    if host == list(range(lo, lo + b)):
        return lo, None
    order = torch.argsort(ids)
    if ids[order].tolist() != list(range(lo, lo + b)):
        return None  # an id repeated: not a permutation of the range
    return lo, order


def covering_range(ids: torch.Tensor, max_extra: int) -> tuple[int, int] | None:
    """(lo, span) if the ids (b,) are distinct and all lie in lo .. lo + span - 1 with span <= b + max_extra,
    else None. A read-only op can then work on that view of the pool, idle rows included: when a few
    sequences have finished, their blocks leave gaps in an otherwise busy range, and computing a few idle
    rows costs less than gathering every busy one. Reads the ids on the host: for CPU tensors."""
    b = ids.numel()
    if b == 0:
        return None
    host = ids.tolist()
    lo, hi = min(host), max(host)
    if hi - lo + 1 > b + max_extra or len(set(host)) != b:
        return None
    return lo, hi - lo + 1


def inverse(order: torch.Tensor) -> torch.Tensor:
    """The permutation that undoes `order` (rows in pool order -> the caller's order)."""
    return torch.argsort(order)
