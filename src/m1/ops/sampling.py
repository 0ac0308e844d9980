"""One token per row from softmax(logits / T), drawn by inverting its CDF at a given uniform number.

The engine's sampler (`m1.engine.sampler`) brings the counter-based uniform of each row; this op
does the full-vocabulary work of an untruncated draw (no top-p, no top-k): the greedy argmax for
rows at T = 0, the draw for the others, and log_softmax(logits / T) at the chosen token (the raw
log_softmax at T = 0).

Why a kernel: at batch 560 and a 128K vocabulary the reference makes about eight passes over the
(b, V) fp32 logits (argmax, divide, log_softmax, exp, cumsum, ...), 1.1 ms of a 21 ms decode step on
an H100 (studies/README.md, the decode-step profile). The Triton kernel (`m1.ops.triton.sampling`)
reads each row twice: once for the max, the sum of exponentials and the argmax, once for the running
sum that finds the drawn token. It inverts the same CDF at the same uniform, so it draws the same token
as the reference except where the uniform falls within rounding of a CDF step (a different order of
summation).

The logits may come as the LM head wrote them (bf16 on a GPU): both implementations compute in fp32,
so a bf16 row draws what its fp32 copy would. The kernel upcasts as it loads, which saves the step a
(b, V) fp32 copy: 0.28 ms at 560 × 128K on an H100, and half of the draw's own reads.

`draw` picks per call (`m1.ops.dispatch`): the kernel for CUDA tensors when triton is installed, this
reference elsewhere.
"""

from __future__ import annotations

import torch

from m1.ops import dispatch


def invert_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Index i with cdf[i-1] < u * total <= cdf[i]; u > 0 so a zero-probability entry is never chosen."""
    cdf = probs.cumsum(-1)
    idx = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1))
    return idx.clamp_(max=probs.shape[-1] - 1).squeeze(1)


def draw_ref(logits: torch.Tensor, temperature: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (b, V) of any float dtype, computed in fp32; temperature (b,), u (b,) in (0, 1)
    -> (tokens (b,) int64, logprobs (b,) fp32)."""
    logits = logits.float()
    greedy = logits.argmax(-1)
    t = torch.where(temperature > 0, temperature, torch.ones_like(temperature))
    logp = torch.log_softmax(logits / t.unsqueeze(1), dim=-1)
    drawn = invert_cdf(logp.exp(), u)
    tokens = torch.where(temperature > 0, drawn, greedy)
    return tokens, logp.gather(1, tokens.unsqueeze(1)).squeeze(1)


def _load_triton():
    from m1.ops.triton.sampling import draw_triton

    return draw_triton


dispatch.register("draw", dispatch.Impl("ref", lambda x: True, lambda: draw_ref, grad=False))
dispatch.register("draw", dispatch.Impl("triton", dispatch.cuda_with_triton, _load_triton, grad=False))


def draw(logits: torch.Tensor, temperature: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return dispatch.choose("draw", logits)(logits, temperature, u)
