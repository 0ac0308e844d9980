"""Packed multi-prompt prefill: the host-side plan of a pack.

A pack is a list of pieces, one per prompt at most, laid end to end as one (1, T)
sequence with `cu_seqlens`. A piece is a whole short prompt or one chunk of a long
one; a chunk after the first continues from the state its slot already holds (Mamba)
and attends to the KV its earlier chunks wrote (attention). Every layer sees only its
own piece's tokens: Mamba ops restart at each boundary, and attention runs per group of
fresh pieces padded on the right (causal attention never lets a real query see a pad
that comes after it), or per continuing piece over its gathered blocks.

Each layer computes its own part of a pack (`Mamba2Mixer.prefill_packed` for Mamba layers).
"""

from __future__ import annotations

from dataclasses import dataclass


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
