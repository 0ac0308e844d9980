"""Packed multi-prompt prefill: the host-side plan of a pack, and the packed causal conv.

A pack is a list of pieces, one per prompt at most, laid end to end as one (1, T)
sequence with `cu_seqlens`. A piece is a whole short prompt or one chunk of a long
one; a chunk after the first continues from the state its slot already holds (Mamba)
and attends to the KV its earlier chunks wrote (attention). Every layer sees only its
own piece's tokens: Mamba ops restart at each boundary, and attention runs per group of
fresh pieces padded on the right (causal attention never lets a real query see a pad
that comes after it), or per continuing piece over its gathered blocks.

`packed_causal_conv1d` is the vectorised form of `m1.ops.causal_conv1d_ref(...,
cu_seqlens=...)` (the reference, which loops over sequences); tests compare the two.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Piece:
    """One prompt's tokens [start, start + len(ids)) prefilled into `slot` and `blocks`."""

    slot: int
    ids: list[int]
    start: int
    blocks: list[int]
    last: bool  # ends its prompt: its last position's logits are wanted


def plan_pieces(prompts: list[tuple[list[int], int, list[int]]], chunk: int, budget: int) -> list[list[Piece]]:
    """Cut prompts (ids, slot, blocks) into pieces of at most `chunk` tokens and group them into
    packs of at most `budget` tokens, each prompt at most once per pack and its pieces in order."""
    chunk = max(1, min(chunk, budget))
    queues = []
    for ids, slot, blocks in prompts:
        q = [Piece(slot, ids[s : s + chunk], s, blocks, s + chunk >= len(ids)) for s in range(0, len(ids), chunk)]
        queues.append(q)
    packs: list[list[Piece]] = []
    while any(queues):
        pack, used = [], 0
        for q in queues:
            if q and used + len(q[0].ids) <= budget:
                used += len(q[0].ids)
                pack.append(q.pop(0))
        packs.append(pack)
    return packs


def attention_groups(lengths: list[int], fresh: list[bool], waste: float = 2.0) -> list[list[int]]:
    """Group fresh pieces (indices) for one padded causal attention call each: longest first, a
    group grows while its padded size stays within `waste` x its real tokens (bounded memory)."""
    order = sorted((i for i in range(len(lengths)) if fresh[i]), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for i in order:
        if groups:
            g = groups[-1]
            lmax = lengths[g[0]]
            if (len(g) + 1) * lmax <= waste * (sum(lengths[j] for j in g) + lengths[i]):
                g.append(i)
                continue
        groups.append([i])
    return groups


def packed_causal_conv1d(x, weight, bias, initial_state, cu_seqlens: list[int], activation: str | None = "silu"):
    """x (T, d) packed channels-last; weight (d, w); initial_state (n, d, w-1) or None (zeros).

    Returns (y (T, d), final_state (n, d, w-1)). Each sequence is laid after its own w-1
    past inputs in one extended buffer, so the conv is w shifted gathers with no loop over
    sequences. Sums run in fp32 (as conv1d accumulates) and round once to x's dtype.
    """
    T, d = x.shape
    w = weight.shape[1]
    k = w - 1
    n = len(cu_seqlens) - 1
    dev = x.device
    cu = torch.tensor(cu_seqlens, device=dev)
    lens = cu[1:] - cu[:-1]
    seq = torch.repeat_interleave(torch.arange(n, device=dev), lens)
    dst = torch.arange(T, device=dev) + (seq + 1) * k  # row of token t in the extended buffer
    ext = x.new_zeros(T + n * k, d)
    ext[dst] = x
    if initial_state is not None and k:
        init_rows = (cu[:-1] + torch.arange(n, device=dev) * k)[:, None] + torch.arange(k, device=dev)
        ext[init_rows.reshape(-1)] = initial_state.transpose(1, 2).reshape(n * k, d).to(x.dtype)
    wf = weight.float()
    y = torch.zeros(T, d, dtype=torch.float32, device=dev) if bias is None else bias.float().expand(T, d).clone()
    for j in range(w):
        y.addcmul_(ext[dst - k + j].float(), wf[:, j])
    y = y.to(x.dtype)
    if activation in ("silu", "swish"):
        y = F.silu(y)
    elif activation not in (None, "identity"):
        raise ValueError(f"unsupported activation {activation!r}")
    last = cu[1:] - 1 + (torch.arange(n, device=dev) + 1) * k
    final = ext[(last[:, None] - k + 1 + torch.arange(k, device=dev)).reshape(-1)].view(n, k, d).transpose(1, 2)
    return y, final.contiguous()
