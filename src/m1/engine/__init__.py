"""Fast batched generation: continuous batching over Mamba slot states and a paged KV cache.

    from m1.engine import Engine, SamplingParams
    outs = Engine(model, tokenizer).generate(prompts, SamplingParams(n=4, temperature=0.7))

Modules, one job each: `params` (public types), `cache` (sizing, block allocator, state
pools), `scheduler` (admission), `runner` (the forward over the model's modules, CUDA
graphs), `sampler` (counter-based sampling), `paged_attention` / `triton_paged` (decode
attention over blocks), `mamba_step` (one Mamba-2 decode step on slot pools), `engine`
(the loop), `bench` (`m1 bench`).
"""

from m1.engine.engine import Engine, EngineStats
from m1.engine.params import CompletionOutput, RequestOutput, SamplingParams, StreamDelta

__all__ = ["Engine", "EngineStats", "SamplingParams", "RequestOutput", "CompletionOutput", "StreamDelta"]
