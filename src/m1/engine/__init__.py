"""Fast batched generation: continuous batching over Mamba slot states and a paged KV cache.

    from m1.engine import Engine, SamplingParams
    outs = Engine(model, tokenizer).generate(prompts, SamplingParams(n=4, temperature=0.7))

Modules, one job each: `params` (public types), `cache` (sizing, block allocator, state
pools), `scheduler` (admission, KV growth, preemption), `runner` (the forward over the
model's modules, CUDA graphs), `packed` (the host plan of a packed prefill), `sampler`
(counter-based sampling), `engine` (the loop). The kernels it calls live in `m1.ops`
(`fused`, `paged_attention`, `decode`), the Mamba decode step in the layer
(`Mamba2Mixer.step`), and `m1 bench` in `m1.bench`.
"""

from m1.engine.engine import Engine, EngineStats
from m1.engine.params import CompletionOutput, RequestOutput, SamplingParams, StreamDelta

__all__ = ["Engine", "EngineStats", "SamplingParams", "RequestOutput", "CompletionOutput", "StreamDelta"]
