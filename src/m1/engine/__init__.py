"""Fast batched generation: continuous batching over Mamba slot states and a paged KV cache.

    from m1.engine import Engine, SamplingParams
    outs = Engine(model, tokenizer).generate(prompts, SamplingParams(n=4, temperature=0.7))

Modules, one job each: `params` (public types), `cache` (sizing, block allocator, state
pools), `scheduler` (admission, KV growth, preemption), `runner` (the forward over the
model's modules, CUDA graphs), `packed` (the host plan of a packed prefill), `sampler`
(counter-based sampling), `engine` (the loop). The kernels it calls live in `m1.ops`
(`fused`, `paged_attention`, `decode`); the Mamba layer owns its state, decode step and
packed prefill (`Mamba2Mixer.state_shapes`, `.step`, `.prefill_packed`). `m1 bench` is `m1.bench`.

The public types (`m1.engine.params`) import without torch, so code that only describes
sampling (the eval loop's config, the CLI) stays light; `Engine` loads on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from m1.engine.params import CompletionOutput, RequestOutput, SamplingParams, StreamDelta

__all__ = ["Engine", "EngineStats", "end_token_ids", "SamplingParams", "RequestOutput", "CompletionOutput", "StreamDelta"]

if TYPE_CHECKING:  # pragma: no cover
    from m1.engine.engine import Engine, EngineStats, end_token_ids


def __getattr__(name: str):
    if name in ("Engine", "EngineStats", "end_token_ids"):
        return getattr(importlib.import_module("m1.engine.engine"), name)
    raise AttributeError(f"module 'm1.engine' has no attribute {name!r}")
