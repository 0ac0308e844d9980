"""Admission over fixed slots and a block budget; growth and preemption; the host-side record of every sample.

Policy: first come, first served. A request's samples are admitted together when
slots and blocks allow (one prefill, forked); if only some fit, those go now and the
rest wait for a later prefill of their own. How many KV blocks a sample takes depends
on the `kv_policy`:

- `"on_demand"` (default): a sample is admitted by its current need, its prompt plus a
  growth margin of one poll window, and takes blocks as it decodes (`grow`, before each
  window). When the pool runs out, the newest running sample is preempted by recompute:
  its blocks (a forked prompt's shared blocks stay while its other samples hold them)
  and its slot are freed, and it is requeued with its tokens so far. When it is
  admitted again, its prompt + tokens so far are prefilled, which rebuilds its KV and
  Mamba state, and it continues from there. Preempted samples are re-admitted before
  any new request, oldest first. While samples run, admission keeps a headroom of the
  blocks the running samples are expected to take in the next window, so a new sample
  is not preempted at once.
- `"reserve"`: blocks for a sample's whole length (prompt + max_tokens) are reserved at
  admission, so a running sample never needs memory that is not there and nothing is
  ever preempted; memory sits idle when completions stop early.

Either way a request that could never fit, even alone in an empty engine, is rejected
at once with its own error.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field

from m1.engine.cache import BlockAllocator, CacheLayout
from m1.engine.params import CompletionOutput, SamplingParams

log = logging.getLogger(__name__)

KV_POLICIES = ("on_demand", "reserve")


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


@dataclass(eq=False)  # identity: two samples may hold equal outputs
class Running:
    """One sample in a slot (or, preempted, waiting for one with its tokens so far)."""

    req: Request
    out: CompletionOutput
    slot: int
    blocks: list[int]
    streamed_tokens: int = 0
    streamed_text: int = 0

    @property
    def remaining(self) -> int:
        return self.req.params.max_tokens - len(self.out.token_ids)

    @property
    def context_len(self) -> int:
        """Prompt + tokens so far: the last one is fed (at position context_len - 1) by the next decode step."""
        return len(self.req.prompt_ids) + len(self.out.token_ids)


@dataclass
class Admission:
    """Samples of one request taken now: `ids` is prefilled into `slots[0]` and forked into the others."""

    req: Request
    samples: list[int]
    slots: list[int]
    ids: list[int]  # the prompt, or for a re-admitted sample its prompt + tokens so far
    shared: list[int]  # full prompt blocks, one reference per sample
    own: list[list[int]]  # each sample's own blocks
    resumed: Running | None = None  # the preempted sample this re-admits


class Scheduler:
    """`log_every_s`: preemptions are summed and logged (INFO) at most once per this many seconds,
    and once more by `log_preemptions(final=True)`; each one is logged at DEBUG."""

    def __init__(self, layout: CacheLayout, has_kv: bool, policy: str = "on_demand", margin: int = 8,
                 log_every_s: float = 10.0):
        if policy not in KV_POLICIES:
            raise ValueError(f"kv_policy: one of {', '.join(KV_POLICIES)}, got {policy!r}")
        self.layout = layout
        self.has_kv = has_kv
        self.policy = policy
        self.margin = max(1, int(margin))
        self.blocks = BlockAllocator(layout.num_blocks)
        self.free_slots = list(range(layout.num_slots - 1, -1, -1))
        self.waiting: deque[Request] = deque()
        self.preempted: deque[Running] = deque()
        self.num_preemptions = 0
        self.log_every_s = log_every_s
        self._logged = (0, 0, time.monotonic())  # (preemptions, recomputed tokens, time) at the last summary
        self._recompute_tokens = 0

    @property
    def has_waiting(self) -> bool:
        while self.waiting and not self.waiting[0].pending:  # only the head is ever partly admitted
            self.waiting.popleft()
        return bool(self.preempted or self.waiting)

    @property
    def num_running(self) -> int:
        return self.layout.num_slots - len(self.free_slots)

    # ---- sizes -----------------------------------------------------------------------------------
    def _blocks_for(self, tokens: int) -> int:
        return math.ceil(tokens / self.layout.block_size) if self.has_kv else 0

    def _split(self, prompt_len: int, max_tokens: int) -> tuple[int, int]:
        """(blocks shared by all samples of a prompt, blocks each sample takes of its own at admission)."""
        if not self.has_kv:
            return 0, 0
        shared = prompt_len // self.layout.block_size  # full prompt blocks; a partial last block is copied per sample
        final = prompt_len + max_tokens
        now = final if self.policy == "reserve" else min(prompt_len + self.margin, final)
        return shared, self._blocks_for(now) - shared

    def _headroom(self) -> int:
        """Blocks kept free at admission (on_demand, while samples run): what the running samples
        are expected to take in the next window."""
        if self.policy == "reserve" or not self.has_kv or self.layout.max_blocks_per_seq == 1:
            return 0  # (one block per sequence: a running sample never takes another)
        return math.ceil(self.num_running * self.margin / self.layout.block_size)

    def never_fits(self, prompt_len: int, params: SamplingParams) -> str | None:
        total = prompt_len + params.max_tokens
        if prompt_len == 0:
            return "empty prompt"
        if total > self.layout.max_model_len:
            return (f"prompt ({prompt_len} tokens) + max_tokens ({params.max_tokens}) = {total} exceeds "
                    f"max_model_len={self.layout.max_model_len}")
        need = self._blocks_for(total)
        if need > self.layout.usable_blocks and self.has_kv:
            return (f"prompt + max_tokens = {total} tokens need {need} KV blocks but the pool holds "
                    f"{self.layout.usable_blocks} ({self.layout.usable_blocks * self.layout.block_size} tokens) "
                    "under this memory budget")
        return None

    # ---- admission -----------------------------------------------------------------------------
    def admit_next(self) -> Admission | None:
        """Take the next preempted sample, or as many samples of the head request as fit now;
        None when the head must wait."""
        if not self.free_slots:
            return None
        avail = self.blocks.num_free - self._headroom()
        if self.preempted:
            run = self.preempted[0]
            ids = run.req.prompt_ids + run.out.token_ids
            final = len(run.req.prompt_ids) + run.req.params.max_tokens
            need = self._blocks_for(final if self.policy == "reserve" else min(len(ids) + self.margin, final))
            if need > avail:
                return None
            self.preempted.popleft()
            slot = self.free_slots.pop()
            return Admission(run.req, [run.out.index], [slot], ids, [], [self.blocks.allocate(need)], resumed=run)
        if not self.has_waiting:
            return None
        req = self.waiting[0]
        shared, own = self._split(len(req.prompt_ids), req.params.max_tokens)
        k = min(len(req.pending), len(self.free_slots))
        if shared or own:
            k = min(k, (avail - shared) // own) if avail >= shared + own else 0
        if k <= 0:
            return None
        samples = [req.pending.popleft() for _ in range(k)]
        slots = [self.free_slots.pop() for _ in range(k)]
        shared_blocks = self.blocks.allocate(shared)
        if k > 1:
            self.blocks.share(shared_blocks * (k - 1))
        own_blocks = [self.blocks.allocate(own) for _ in range(k)]
        return Admission(req, samples, slots, req.prompt_ids, shared_blocks, own_blocks)

    # ---- growth and preemption --------------------------------------------------------------------
    def grow(self, running: list[Running], steps: int) -> tuple[list[Running], list[Running], list[Running]]:
        """Give every running sample (admission order, oldest first) the blocks the next `steps`
        decode steps write, preempting the newest samples when the pool runs out.

        Returns (still running, preempted now, samples whose block list grew).
        """
        active, preempted, grown = list(running), [], []
        i = 0
        while i < len(active):
            run = active[i]
            # The window writes positions context_len - 1 ... context_len + steps - 2.
            need = self._blocks_for(run.context_len + steps - 1) - len(run.blocks)
            if need <= 0:
                i += 1
                continue
            while self.blocks.num_free < need and active[-1] is not run:
                victim = active.pop()
                self.preempt(victim)
                preempted.append(victim)
            if self.blocks.num_free < need:  # it is the newest itself
                active.pop()
                self.preempt(run)
                preempted.append(run)
                break
            run.blocks = run.blocks + self.blocks.allocate(need)
            grown.append(run)
            i += 1
        return active, preempted, grown  # a grown sample is older than any preempted one

    def preempt(self, run: Running) -> None:
        """Free a running sample's blocks and slot and requeue it (oldest preempted first)."""
        self.release(run)
        run.blocks, run.slot = [], -1
        self.preempted.appendleft(run)
        self.num_preemptions += 1
        self._recompute_tokens += len(run.req.prompt_ids) + len(run.out.token_ids)
        log.debug("preempted request %d sample %d at %d tokens (recompute; %d free blocks)",
                  run.req.request_id, run.out.index, len(run.out.token_ids), self.blocks.num_free)

    def log_preemptions(self, final: bool = False) -> None:
        """One INFO line for the preemptions since the last one, if there were any and `log_every_s`
        has passed (or `final`)."""
        n0, t0_tokens, t0 = self._logged
        now = time.monotonic()
        new = self.num_preemptions - n0
        if not new or (not final and now - t0 < self.log_every_s):
            return
        log.info("kv_policy=%s: preempted %d samples in the last %.1f s (%d tokens to prefill again); %d preemptions "
                 "in this call, %d waiting to resume, %d of %d KV blocks free", self.policy, new, now - t0,
                 self._recompute_tokens - t0_tokens, self.num_preemptions, len(self.preempted), self.blocks.num_free,
                 self.layout.usable_blocks)
        self._logged = (self.num_preemptions, self._recompute_tokens, now)

    def release(self, run: Running) -> None:
        self.blocks.free(run.blocks)
        self.free_slots.append(run.slot)
