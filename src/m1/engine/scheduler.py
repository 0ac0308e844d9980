"""Admission over fixed slots and a block budget; the host-side record of every sample.

Policy: first come, first served. A request's samples are admitted together when
slots and blocks allow (one prefill, forked); if only some fit, those go now and the
rest wait for a later prefill of their own. Blocks are reserved for a sample's whole
length (prompt + max_tokens) at admission, so a running sample never needs memory that
is not there: nothing is ever preempted and nothing runs out of memory. A request that
could never fit, even alone in an empty engine, is rejected at once with its own error.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from m1.engine.cache import BlockAllocator, CacheLayout
from m1.engine.params import CompletionOutput, SamplingParams


@dataclass
class Request:
    request_id: int
    prompt: str | None
    prompt_ids: list[int]
    params: SamplingParams
    seed: int
    outputs: list[CompletionOutput]
    pending: deque = field(default_factory=deque)  # sample indices not admitted yet
    error: str | None = None


@dataclass
class Running:
    """One sample in a slot."""

    req: Request
    out: CompletionOutput
    slot: int
    blocks: list[int]
    text_checked: int = 0  # tokens whose text was searched for stop strings
    streamed_tokens: int = 0
    streamed_text: int = 0

    @property
    def remaining(self) -> int:
        return self.req.params.max_tokens - len(self.out.token_ids)


class Scheduler:
    def __init__(self, layout: CacheLayout, has_kv: bool):
        self.layout = layout
        self.has_kv = has_kv
        self.blocks = BlockAllocator(layout.num_blocks)
        self.free_slots = list(range(layout.num_slots - 1, -1, -1))
        self.waiting: deque[Request] = deque()

    # ---- sizes -----------------------------------------------------------------------------------
    def _split(self, prompt_len: int, max_tokens: int) -> tuple[int, int]:
        """(blocks shared by all samples of a prompt, blocks each sample needs of its own)."""
        if not self.has_kv:
            return 0, 0
        bs = self.layout.block_size
        shared = prompt_len // bs  # full prompt blocks; a partial last block is copied per sample
        return shared, math.ceil((prompt_len + max_tokens) / bs) - shared

    def never_fits(self, prompt_len: int, params: SamplingParams) -> str | None:
        total = prompt_len + params.max_tokens
        if prompt_len == 0:
            return "empty prompt"
        if total > self.layout.max_model_len:
            return (f"prompt ({prompt_len} tokens) + max_tokens ({params.max_tokens}) = {total} exceeds "
                    f"max_model_len={self.layout.max_model_len}")
        shared, own = self._split(prompt_len, params.max_tokens)
        if shared + own > self.layout.usable_blocks and self.has_kv:
            return (f"prompt + max_tokens = {total} tokens need {shared + own} KV blocks but the pool holds "
                    f"{self.layout.usable_blocks} ({self.layout.usable_blocks * self.layout.block_size} tokens) "
                    "under this memory budget")
        return None

    # ---- admission -----------------------------------------------------------------------------
    def admit_next(self) -> tuple[Request, list[int], list[int], list[int], list[list[int]]] | None:
        """Take as many samples of the head request as fit now.

        Returns (request, sample indices, slots, shared blocks, own blocks per sample), or
        None when the head request must wait. The first slot is prefilled; the others fork.
        """
        while self.waiting and not self.waiting[0].pending:
            self.waiting.popleft()
        if not self.waiting or not self.free_slots:
            return None
        req = self.waiting[0]
        shared, own = self._split(len(req.prompt_ids), req.params.max_tokens)
        free = self.blocks.num_free
        k = min(len(req.pending), len(self.free_slots))
        if own:
            k = min(k, (free - shared) // own) if free >= shared else 0
        if k <= 0:
            return None
        samples = [req.pending.popleft() for _ in range(k)]
        slots = [self.free_slots.pop() for _ in range(k)]
        shared_blocks = self.blocks.allocate(shared)
        if k > 1:
            self.blocks.share(shared_blocks * (k - 1))
        own_blocks = [self.blocks.allocate(own) for _ in range(k)]
        return req, samples, slots, shared_blocks, own_blocks

    def release(self, run: Running) -> None:
        self.blocks.free(run.blocks)
        self.free_slots.append(run.slot)
