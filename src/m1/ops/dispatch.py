"""Call-time choice between an op's plain PyTorch reference and its GPU kernels.

Every op registers its implementations here, most specific first; the reference is
always last and always applies. The choice is made per call from the tensors'
device and from what is installed, never at import time, and the first use of each
(op, implementation) pair is logged, so the path taken is always visible.

`M1_OPS=ref` (environment) or `force("ref")` pins every op to its reference, which
is how tests compare kernels against references on the same inputs; `force("triton")`
pins m1's own kernels and `force("fla")` fla-core's where an op has them. An
implementation registered with `grad=False` (a forward without a backward) is skipped
when the call needs gradients.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Impl:
    name: str
    applies: Callable[[torch.Tensor], bool]
    load: Callable[[], Callable]  # imports lazily: kernels pull in triton only when used
    grad: bool = True  # False: forward only, never chosen for a call that needs gradients


_REGISTRY: dict[str, list[Impl]] = {}
_LOGGED: set[tuple[str, str]] = set()
_FORCED: list[str | None] = [None]


def register(op: str, impl: Impl) -> None:
    """Add an implementation for `op`; later registrations are tried first."""
    _REGISTRY.setdefault(op, []).insert(0, impl)


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def cuda_with_triton(x: torch.Tensor) -> bool:
    return x.is_cuda and has_module("triton")


def forced() -> str | None:
    return _FORCED[-1] or os.environ.get("M1_OPS") or None


@contextmanager
def force(impl_name: str | None) -> Iterator[None]:
    """Pin every op to the implementation called `impl_name` (e.g. "ref") inside the block."""
    _FORCED.append(impl_name)
    try:
        yield
    finally:
        _FORCED.pop()


def _pick(op: str, x: torch.Tensor, needs_grad: bool) -> Impl:
    impls = _REGISTRY[op]
    pinned = forced()
    for impl in impls:
        if pinned is not None:
            if impl.name == pinned:
                return impl
        elif impl.applies(x) and (impl.grad or not needs_grad):
            return impl
    if pinned is not None:
        raise RuntimeError(f"op {op}: no implementation named {pinned!r}; have {[i.name for i in impls]}")
    raise RuntimeError(f"op {op}: nothing applies")


def choose(op: str, x: torch.Tensor, needs_grad: bool = False) -> Callable:
    """Return the implementation of `op` for a call whose main input is `x` (and which needs
    gradients, if `needs_grad`)."""
    impl = _pick(op, x, needs_grad)
    fn = impl.load()
    key = (op, impl.name)
    if key not in _LOGGED:
        _LOGGED.add(key)
        log.info("op %s: using %s implementation (device=%s, dtype=%s%s)", op, impl.name, x.device, x.dtype,
                 ", with gradients" if needs_grad else "")
    return fn


def chosen_name(op: str, x: torch.Tensor, needs_grad: bool = False) -> str:
    """Which implementation `choose` would take (for logs, benchmarks and tests)."""
    return _pick(op, x, needs_grad).name


def needs_grad(*tensors) -> bool:
    """Whether a call on these tensors (None allowed) records a graph for backward."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
