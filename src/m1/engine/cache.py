"""The engine's memory: a paged KV block pool for attention layers and per-slot Mamba states.

Sizing is done once, from a byte budget: the slot state pools (per slot per Mamba layer, the
state the mixer declares in `Mamba2Mixer.state_shapes`) come first, the rest becomes KV
blocks (per token per attention layer, `Attention.kv_shape` for K and for V). Block 0 is a null block
that is never handed out: unused block-table entries point at it, so rows past a
sequence's allocation (padding rows, a sequence running past its stop inside a poll
window) write there harmlessly. Slot `num_slots` is likewise a scratch slot for the
padding rows of a batch bucket.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from m1.errors import field_error
from m1.layers.attention import Attention
from m1.layers.mamba2 import Mamba2Mixer

log = logging.getLogger(__name__)

NULL_BLOCK = 0


@dataclass(frozen=True)
class CacheLayout:
    """How the budget was spent. All byte counts are for the whole engine."""

    block_size: int
    num_blocks: int  # including the null block
    num_slots: int  # real slots; the pools hold num_slots + 1 (scratch)
    max_model_len: int
    max_blocks_per_seq: int
    kv_bytes_per_token: int
    state_bytes_per_slot: int
    kv_bytes: int
    state_bytes: int

    @property
    def usable_blocks(self) -> int:
        return self.num_blocks - 1


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def kv_bytes_per_token(config, dtype: torch.dtype) -> int:
    """K and V of every attention layer for one token."""
    return len(config.attention_layers) * 2 * math.prod(Attention.kv_shape(config)) * _itemsize(dtype)


def state_bytes_per_slot(config, dtype: torch.dtype) -> int:
    """The declared state (conv window in the model dtype, SSM state in fp32) of every Mamba layer for one sequence."""
    if not config.mamba_layers:
        return 0
    per_layer = sum(math.prod(shape) * _itemsize(dt) for shape, dt in Mamba2Mixer.state_shapes(config, dtype).values())
    return len(config.mamba_layers) * per_layer


def device_memory_bytes(device: torch.device) -> int | None:
    """The most a cache on `device` could hold: a CUDA device's total memory, a CPU's available memory
    (Linux's MemAvailable); None where it cannot be read. A budget above it can never be allocated: on a
    CPU the kernel kills the process part-way through filling the pools, with no message."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[1]
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def check_budget_fits(budget_bytes: int, device: torch.device) -> None:
    """Raise a user error, before anything is allocated, when `budget_bytes` exceeds what `device` has."""
    cap = device_memory_bytes(device)
    if cap is not None and budget_bytes > cap:
        where = f"{device.type} device's total memory" if device.type == "cuda" else "machine's available memory"
        raise field_error("memory_budget_gb", f"{budget_bytes / 2**30:.2f} GiB is more than this {where} "
                          f"({cap / 2**30:.2f} GiB); lower it")


def plan_cache(config, dtype: torch.dtype, max_batch_size: int, max_model_len: int, budget_bytes: int, block_size: int) -> CacheLayout:
    """Split `budget_bytes` into slot states and KV blocks; raise if even the states do not fit."""
    per_tok = kv_bytes_per_token(config, dtype)
    per_slot = state_bytes_per_slot(config, dtype)
    state = per_slot * (max_batch_size + 1)
    if state > budget_bytes:
        raise field_error(
            "memory_budget_gb", f"the Mamba states of {max_batch_size} slots need {state / 2**30:.2f} GiB, "
            f"more than the budget of {budget_bytes / 2**30:.2f} GiB; lower max_batch_size or raise the budget"
        )
    max_blocks_per_seq = math.ceil(max_model_len / block_size)
    if per_tok:
        per_block = per_tok * block_size
        useful = max_batch_size * max_blocks_per_seq + 1  # more than this can never be in use
        num_blocks = min((budget_bytes - state) // per_block, useful)
        if num_blocks < 2:
            raise field_error("memory_budget_gb", f"{budget_bytes / 2**30:.3f} GiB leaves no room for a single KV block")
    else:
        num_blocks, per_block = 1, 0
    layout = CacheLayout(
        block_size=block_size, num_blocks=int(num_blocks), num_slots=max_batch_size, max_model_len=max_model_len,
        max_blocks_per_seq=max_blocks_per_seq, kv_bytes_per_token=per_tok, state_bytes_per_slot=per_slot,
        kv_bytes=int(num_blocks) * per_block, state_bytes=state,
    )
    log.info(
        "cache: %d slots, %d KV blocks of %d tokens (%.2f GiB, %d tokens), slot states %.2f GiB",
        max_batch_size, layout.usable_blocks if per_tok else 0, block_size, layout.kv_bytes / 2**30,
        layout.usable_blocks * block_size if per_tok else 0, state / 2**30,
    )
    return layout


class BlockAllocator:
    """Free list + reference counts over the KV blocks (block 0 excluded: it is the null block).

    A prompt's full blocks are shared by its samples (one reference each); a block
    returns to the free list when its last reference goes.
    """

    def __init__(self, num_blocks: int):
        self._free = list(range(num_blocks - 1, 0, -1))
        self._refs = [0] * num_blocks

    @property
    def num_free(self) -> int:
        return len(self._free)

    def allocate(self, n: int) -> list[int]:
        if n > len(self._free):
            raise RuntimeError(f"allocate({n}) with {len(self._free)} free blocks: the scheduler must check first")
        out = [self._free.pop() for _ in range(n)]
        for b in out:
            self._refs[b] = 1
        return out

    def share(self, blocks: list[int]) -> None:
        for b in blocks:
            self._refs[b] += 1

    def free(self, blocks: list[int]) -> None:
        for b in blocks:
            self._refs[b] -= 1
            if self._refs[b] == 0:
                self._free.append(b)
            elif self._refs[b] < 0:
                raise RuntimeError(f"block {b} freed more often than allocated")


class EngineCache:
    """The tensors: KV block pools per attention layer, conv/SSM pools per Mamba layer."""

    def __init__(self, config, layout: CacheLayout, dtype: torch.dtype, device: torch.device):
        self.layout = layout
        slots = layout.num_slots + 1
        self.k: dict[int, torch.Tensor] = {}
        self.v: dict[int, torch.Tensor] = {}
        kv = (layout.num_blocks, layout.block_size, *Attention.kv_shape(config))
        for i in config.attention_layers:
            self.k[i] = torch.zeros(kv, dtype=dtype, device=device)
            self.v[i] = torch.zeros(kv, dtype=dtype, device=device)
        self.conv: dict[int, torch.Tensor] = {}
        self.ssm: dict[int, torch.Tensor] = {}
        state = Mamba2Mixer.state_shapes(config, dtype)
        (conv, conv_dtype), (ssm, ssm_dtype) = state["conv"], state["ssm"]
        for i in config.mamba_layers:
            self.conv[i] = torch.zeros(slots, *conv, dtype=conv_dtype, device=device)
            self.ssm[i] = torch.zeros(slots, *ssm, dtype=ssm_dtype, device=device)

    def fork_state(self, src: int, dst: list[int]) -> None:
        """Copy slot `src`'s Mamba states into the slots `dst` (the n samples of one prompt)."""
        if not dst:
            return
        idx = torch.tensor(dst, device=next(iter(self.conv.values()), torch.empty(0)).device) if self.conv else None
        for i in self.conv:
            self.conv[i].index_copy_(0, idx, self.conv[i][src].expand(len(dst), *self.conv[i].shape[1:]).clone())
            self.ssm[i].index_copy_(0, idx, self.ssm[i][src].expand(len(dst), *self.ssm[i].shape[1:]).clone())

    def copy_block(self, src: int, dst: list[int], tokens: int | None = None) -> None:
        """Copy KV block `src` (its first `tokens` positions; None: all) into each of `dst`
        (copy-on-write of a prompt's partial last block)."""
        n = self.layout.block_size if tokens is None else tokens
        for i in self.k:
            for d in dst:
                self.k[i][d, :n].copy_(self.k[i][src, :n])
                self.v[i][d, :n].copy_(self.v[i][src, :n])
