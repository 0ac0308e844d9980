"""Forward-only GEMMs of an inference pass, `x @ W.T + b`, on weights prepared once for the chosen path.

Why this exists: on a CPU, PyTorch's fp32 `F.linear` goes to its BLAS (MKL in the PyPI wheels). On a 2-core
AMD EPYC with AVX-512 that ran SmolLM2's decode GEMMs in 2-3.5x the time PyTorch's own oneDNN primitive takes on
a weight reordered for it (`studies/results/cpu_engine_2026-12-07/`: 64 rows x 576 -> 3072, 1.25 ms against
0.50 ms; the LM head, 31 ms against 8.7 ms). PyTorch reaches that primitive by itself only through inductor's
freezing (`torch.compile` with the weights baked in as constants), which cannot serve a model that is being
trained (the engine's GRPO rollouts read live weights) and compiles per batch shape; Intel's IPEX, which also
prepacks, has ended active development. So this wraps the two ops inductor's CPU freezing emits,
`mkldnn::_reorder_linear_weight` and `mkldnn::_linear_pointwise`, for the engine's no-grad passes.

Implementations of op `linear` (`m1.ops.dispatch`), each a `LinearImpl` (prepare a weight once, apply it often):

- `onednn`: CPU tensors in fp32 or bf16 where PyTorch has oneDNN (`torch.backends.mkldnn`) and these ops;
  forward only (never chosen for a call that needs gradients).
- `ref`: `F.linear` on the weight itself (prepare is the identity: no copy).

`LinearSet` holds the prepared weights of the modules an engine calls, refreshes them when the live
parameters change, and applies the implementation chosen when it was built (logged there).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from m1.ops import dispatch

log = logging.getLogger(__name__)


class LinearImpl(NamedTuple):
    prepare: Callable[[torch.Tensor], torch.Tensor]  # the (out, in) weight -> what `apply` takes
    apply: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]  # (x, prepared, bias) -> y


def linear_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    return F.linear(x, weight, bias)


def onednn_prepare(weight: torch.Tensor) -> torch.Tensor:
    """The weight reordered into oneDNN's blocked layout (an opaque `torch._mkldnn` tensor, a copy)."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous())


def linear_onednn(x: torch.Tensor, prepared: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear(x, weight, bias)` for x (..., in) on `onednn_prepare(weight)`; a dense contiguous result."""
    return torch.ops.mkldnn._linear_pointwise(x, prepared, None if bias is None else bias.detach(), "none", [], "")


def _onednn_applies(x: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16) and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise") and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))


dispatch.register("linear", dispatch.Impl("ref", lambda x: True, lambda: LinearImpl(lambda w: w, linear_ref)))
dispatch.register("linear", dispatch.Impl("onednn", _onednn_applies, lambda: LinearImpl(onednn_prepare, linear_onednn),
                                          grad=False))


@dataclass
class _Entry:
    modules: tuple[nn.Linear, ...]
    prepared: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    signature: tuple | None = None
    probe: list[torch.Tensor] | None = None  # sampled values of the parameters, where `prepared` is a copy
    copied: bool = True


_PROBE = 64  # sampled elements per tensor in a content fingerprint


def _fingerprint(t: torch.Tensor) -> torch.Tensor:
    flat = t.detach().reshape(-1)
    step = max(1, flat.numel() // _PROBE)
    return flat[::step][:_PROBE].clone()


class LinearSet:
    """The prepared weights of an inference pass's linears, keyed by module (or a stack of modules).

    `add(key, modules)` serves `key` as one GEMM whose output is the modules' outputs side by side (one module,
    or q/k/v stacked into one weight). `__call__(key, x)` applies it. The implementation is chosen for the
    device and dtype of the pass (`dispatch.choose` logs it) when the set is made and again at every `refresh`
    (the engine's, at the start of each `generate`); `M1_OPS=ref` or `dispatch.force("ref")` pins the reference,
    and so does `allow_copy=False` (the engine's, on a CPU whose available memory could not hold the copy).

    `refresh()` prepares again every entry whose parameters changed since the last time: a new storage, an
    in-place update (the autograd version counter: optimizer steps, `load_state_dict`), or, for an entry that
    is a copy, a change in a sample of their values (catches writes through `.data`, which bypass the version
    counter). With `ref` and a single module nothing is copied: the module's weight is used as it is. A stacked entry is rewritten in place
    (CUDA graphs keep its address); a oneDNN one is made anew (CPU only: no graphs).
    """

    def __init__(self, device: torch.device, dtype: torch.dtype, allow_copy: bool = True):
        self._probe = torch.empty(0, device=device, dtype=dtype)
        self._entries: dict[object, _Entry] = {}
        self.allow_copy = allow_copy  # False: only an implementation that uses the weights as they are (`ref`)
        self._choose()

    def _choose(self) -> None:
        self.impl_name = self._wanted()
        with dispatch.force(self.impl_name):  # the reference when copies are not allowed; else what dispatch chose
            self.impl: LinearImpl = dispatch.choose("linear", self._probe)

    def _wanted(self) -> str:
        return dispatch.chosen_name("linear", self._probe) if self.allow_copy else "ref"

    def add(self, key: object, modules: Sequence[nn.Linear]) -> None:
        mods = tuple(modules)
        if not mods or any(not isinstance(m, nn.Linear) for m in mods):
            raise TypeError("LinearSet.add: needs one or more nn.Linear modules")
        if len({m.bias is None for m in mods}) != 1:
            raise ValueError("LinearSet.add: stacked modules must all have a bias or none")
        self._entries[key] = e = _Entry(mods)
        self._prepare(e)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    @torch.no_grad()
    def refresh(self) -> int:
        """Prepare again the entries whose parameters changed; returns how many were. If the implementation
        `dispatch` would choose now differs (`dispatch.force`, `M1_OPS`), every entry is prepared for it."""
        if self._wanted() != self.impl_name:
            self._choose()
            for e in self._entries.values():
                e.prepared = e.bias = None
                self._prepare(e)
            return len(self._entries)
        n = 0
        for e in self._entries.values():
            if self._signature(e) != e.signature or (e.copied and not self._same_values(e)):
                self._prepare(e)
                n += 1
        return n

    def __call__(self, key: object, x: torch.Tensor) -> torch.Tensor:
        e = self._entries[key]
        return self.impl.apply(x, e.prepared, e.bias)

    # ---- internals ------------------------------------------------------------------------------
    @staticmethod
    def _params(e: _Entry) -> list[torch.Tensor]:
        return [p for m in e.modules for p in (m.weight, m.bias) if p is not None]

    def _signature(self, e: _Entry) -> tuple:
        return tuple((p.data_ptr(), p._version) for p in self._params(e))

    def _same_values(self, e: _Entry) -> bool:
        return all(torch.equal(_fingerprint(p), f) for p, f in zip(self._params(e), e.probe))

    @torch.no_grad()
    def _prepare(self, e: _Entry) -> None:
        mods = e.modules
        ref = self.impl_name == "ref"
        e.copied = not (ref and len(mods) == 1)  # else the module's own weight is used: only a new storage matters
        if len(mods) == 1:
            w, b = mods[0].weight, mods[0].bias
        elif ref and e.prepared is not None:  # in place: a captured graph reads these addresses
            w = torch.cat([m.weight for m in mods], out=e.prepared)
            b = None if e.bias is None else torch.cat([m.bias for m in mods], out=e.bias)
        else:
            w = torch.cat([m.weight for m in mods])
            b = None if mods[0].bias is None else torch.cat([m.bias for m in mods])
        e.prepared = w.detach() if ref else self.impl.prepare(w)
        e.bias = None if b is None else b.detach()
        e.signature = self._signature(e)
        e.probe = [_fingerprint(p) for p in self._params(e)] if e.copied else None
