"""Triton kernel of the untruncated draw (reference: `m1.ops.sampling.draw_ref`).

One program per row, two passes over its logits in blocks of BLOCK:
1. the argmax of the raw logits (the first of equal maxima, as torch.argmax), and the online max m
   and sum s of exp(x / T - m);
2. (sampled rows only) the running sum of exp(x / T - m): the drawn token is the first whose running sum
   reaches u * s. A block is summed first and scanned (a cumsum, the costly part) only if the running sum
   reaches u * s within it; the blocks after it are not read. Should rounding leave every running sum below
   u * s (u within rounding of 1), a third pass takes the last token of non-zero probability. The reference then takes the first token at which its CDF reaches
   its total, which can be an earlier one: both are within rounding of the CDF's end.
The log-probability is x / T - m - log(s) at the chosen token. The vocabulary size is a compile-time
constant: the loops need a fixed trip count under Triton 3.6's CPU interpreter, and a model's
vocabulary does not change.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _draw_kernel(logits_ptr, temp_ptr, u_ptr, tok_ptr, logp_ptr, stride, V: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    base = logits_ptr + row * stride
    temp = tl.load(temp_ptr + row).to(tl.float32)
    sampled = temp > 0
    t = tl.where(sampled, temp, 1.0)
    u = tl.load(u_ptr + row).to(tl.float32)
    offs = tl.arange(0, BLOCK)

    m = tl.full([], float("-inf"), tl.float32)
    s = tl.zeros([], tl.float32)
    best = tl.full([], float("-inf"), tl.float32)
    best_i = tl.zeros([], tl.int64)
    for start in range(0, V, BLOCK):
        idx = start + offs
        mask = idx < V
        x = tl.load(base + idx, mask=mask, other=float("-inf")).to(tl.float32)
        bmax, barg = tl.max(x, 0, return_indices=True, return_indices_tie_break_left=True)
        take = bmax > best
        best_i = tl.where(take, start + barg.to(tl.int64), best_i)
        best = tl.where(take, bmax, best)
        y = x / t
        new_m = tl.maximum(m, tl.max(y, 0))
        safe_m = tl.where(new_m == float("-inf"), 0.0, new_m)  # no -inf - -inf while every logit so far is -inf
        s = s * tl.exp(m - safe_m) + tl.sum(tl.exp(y - safe_m), 0)
        m = new_m

    target = u * s
    c = tl.zeros([], tl.float32)
    pick = tl.zeros([], tl.int64)
    found = tl.zeros([], tl.int32)
    if sampled:  # a greedy row has its token from pass 1
        for start in range(0, V, BLOCK):
            if found == 0:  # blocks after the drawn token are not read
                idx = start + offs
                mask = idx < V
                x = tl.load(base + idx, mask=mask, other=float("-inf")).to(tl.float32)
                p = tl.exp(x / t - m)
                block_sum = tl.sum(p, 0)
                if c + block_sum >= target:  # the running sum reaches the target in this block: scan it
                    cum = tl.cumsum(p, 0) + c
                    n_below = tl.sum(((cum < target) & mask).to(tl.int32), 0)
                    n_valid = tl.sum(mask.to(tl.int32), 0)
                    hit = n_below < n_valid
                    pick = tl.where(hit, start + n_below.to(tl.int64), pick)
                    found = tl.where(hit, 1, 0).to(tl.int32)
                c = c + block_sum
        if found == 0:  # rounding left every running sum below the target: the last token of non-zero probability
            for start in range(0, V, BLOCK):
                idx = start + offs
                mask = idx < V
                x = tl.load(base + idx, mask=mask, other=float("-inf")).to(tl.float32)
                p = tl.exp(x / t - m)
                pick = tl.maximum(pick, tl.max(tl.where((p > 0) & mask, idx.to(tl.int64), 0), 0))

    tok = tl.where(sampled, pick, best_i)
    x_tok = tl.load(base + tok).to(tl.float32)
    tl.store(tok_ptr + row, tok)
    tl.store(logp_ptr + row, x_tok / t - m - tl.log(s))


def draw_triton(logits: torch.Tensor, temperature: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as `draw_ref`: (tokens (b,) int64, logprobs (b,) fp32)."""
    b, v = logits.shape
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    tokens = torch.empty(b, dtype=torch.int64, device=logits.device)
    logprobs = torch.empty(b, dtype=torch.float32, device=logits.device)
    block = min(4096, triton.next_power_of_2(v))
    _draw_kernel[(b,)](logits, temperature.float().contiguous(), u.float().contiguous(), tokens, logprobs, logits.stride(0),
                       V=v, BLOCK=block, num_warps=8)
    return tokens, logprobs
