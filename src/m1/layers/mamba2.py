"""The Mamba-2 mixer, stored as GraniteMoeHybrid's `mamba` block.

in_proj gives [z | x B C | dt]; a causal depthwise conv (+ silu) runs over xBC; the SSD
scan mixes over time with one scalar decay per head; a gated RMSNorm (per group) and
out_proj finish. The numerics live in `m1.ops`, which picks a kernel at call time.

Padding never reaches the state: at masked positions xBC is zeroed before the conv and
after it, and dt is zeroed, which makes the SSD step an exact identity there.
Packed sequences (`cu_seqlens`) restart both the conv window and the SSD state.

The mixer owns its recurrent state: `state_shapes` declares what one sequence keeps (the
engine sizes its slot pools from it), `step` advances it by one token (the cached path of
`forward` and the engine's decode both call it), and `prefill_packed` fills it from prompts
packed end to end (the engine's prefill).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from m1.ops import causal_conv1d, gated_rms_norm, ssd_chunked
from m1.ops.conv import packed_causal_conv1d
from m1.ops.decode import mamba2_decode_step, split_xbc, split_zxbcdt

Linear = Callable[[nn.Linear, torch.Tensor], torch.Tensor]  # computes module(x), perhaps on prepared weights


def _call(module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return module(x)


def inv_softplus(v):
    """The x with softplus(x) = v, as dt_bias for a wanted dt: a tensor elementwise, or a float in
    double precision (past 20, where softplus is the identity in floating point, v itself)."""
    if isinstance(v, torch.Tensor):
        return v + torch.log(-torch.expm1(-v))
    return v + math.log(-math.expm1(-v)) if v < 20 else v


class GatedRMSNorm(nn.Module):
    def __init__(self, hidden_size: int, group_size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.group_size = group_size
        self.variance_epsilon = eps

    def forward(self, y: torch.Tensor, z: torch.Tensor | None, out_dtype: torch.dtype | None = None) -> torch.Tensor:
        return gated_rms_norm(y, z, self.weight, eps=self.variance_epsilon, group_size=self.group_size, out_dtype=out_dtype)


class Mamba2Mixer(nn.Module):
    def __init__(self, config, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.mamba_n_heads
        self.head_dim = config.mamba_d_head
        self.n_groups = config.mamba_n_groups
        self.state_size = config.mamba_d_state
        self.conv_width = config.mamba_d_conv
        self.chunk_size = config.mamba_chunk_size
        self.inner = self.num_heads * self.head_dim
        self.conv_dim = self.inner + 2 * self.n_groups * self.state_size
        limit = config.time_step_limit or (0.0, float("inf"))
        self.dt_limit = (float(limit[0]), float(limit[1]))
        self.in_proj = nn.Linear(config.hidden_size, self.inner + self.conv_dim + self.num_heads, bias=config.mamba_proj_bias)
        self.conv1d = nn.Conv1d(
            self.conv_dim, self.conv_dim, self.conv_width, groups=self.conv_dim, padding=self.conv_width - 1, bias=config.mamba_conv_bias
        )
        self.dt_bias = nn.Parameter(torch.ones(self.num_heads))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, self.num_heads + 1, dtype=torch.float32)))
        self.D = nn.Parameter(torch.ones(self.num_heads))
        self.norm = GatedRMSNorm(self.inner, self.inner // self.n_groups, config.rms_norm_eps)
        self.out_proj = nn.Linear(self.inner, config.hidden_size, bias=config.mamba_proj_bias)

    @torch.no_grad()
    def reset_parameters(self, dt_min: float = 1e-3, dt_max: float = 1e-1) -> None:
        """Mamba-2's random initialisation: dt log-uniform in [dt_min, dt_max], A = -[1..H], D = 1."""
        dt = torch.exp(torch.rand(self.num_heads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        self.dt_bias.copy_(inv_softplus(dt))
        self.A_log.copy_(torch.log(torch.arange(1, self.num_heads + 1, dtype=torch.float32)))
        self.D.fill_(1.0)
        self.norm.weight.fill_(1.0)

    # ---- the state one sequence keeps -------------------------------------------------------------
    @staticmethod
    def state_shapes(config, dtype: torch.dtype) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """Per sequence: the conv window (conv_dim, d_conv - 1) in the model's `dtype`, and the SSM
        state (heads, head_dim, state) in fp32, as {name: (shape, dtype)}."""
        return {
            "conv": ((config.mamba_conv_dim, config.mamba_d_conv - 1), dtype),
            "ssm": ((config.mamba_n_heads, config.mamba_d_head, config.mamba_d_state), torch.float32),
        }

    # ---- pieces of the computation -----------------------------------------------------------------
    def split_projection(self, zxbcdt: torch.Tensor):
        """in_proj's output (..., inner + conv_dim + heads) -> (z, xBC, dt_raw)."""
        return split_zxbcdt(zxbcdt, self.num_heads, self.head_dim, self.n_groups, self.state_size)

    def split_xbc(self, xBC: torch.Tensor):
        """The conv's output (..., conv_dim) -> (x, B, C)."""
        return split_xbc(xBC, self.num_heads, self.head_dim, self.n_groups, self.state_size)

    def time_step(self, dt_raw: torch.Tensor) -> torch.Tensor:
        """dt = clamp(softplus(dt_raw + dt_bias)) in fp32 (fp64 for fp64 input).

        fp32 because dt sets the decay exp(dt * A) that the state multiplies by every step.
        A bf16/fp16 dt_raw is added to the fp32 bias by type promotion, in one kernel: the same
        values as casting first (the upcast is exact).

        The clamp runs even at the default limits (0, inf), where its forward changes nothing
        (softplus is never negative): its backward hands softplus's backward a contiguous
        gradient, where without it softplus gets the SSD's permuted one and rounds differently
        on a CPU. Skipping it (112e53b) changed no forward value, yet moved every number of the
        demo's full run (the demo's training amplifies last-bit differences; GRPO gain +0.098
        -> +0.030 on the machine of the committed run): studies/results/demo_distill_bisect_2026-12-06.json.
        Kept so that the committed demo run reproduces; it costs one small elementwise kernel."""
        ct = torch.promote_types(dt_raw.dtype, torch.float32)
        dt = F.softplus(dt_raw + self.dt_bias.to(ct))
        return dt.clamp(self.dt_limit[0], self.dt_limit[1])

    @property
    def A(self) -> torch.Tensor:
        """The per-head decay rates, -exp(A_log), fp32 (h,) (fp64 for an fp64 model)."""
        return -torch.exp(self.A_log.to(torch.promote_types(self.A_log.dtype, torch.float32)))

    def _ssd(self, x, dt, B, C, initial_state, chunk_size: int, cu_seqlens):
        """The chunked scan over (b, l) tokens of x, B, C (flat channels); returns (y (b, l, inner), final state)."""
        b, l = x.shape[:2]
        y, final = ssd_chunked(
            x.reshape(b, l, self.num_heads, self.head_dim), dt, self.A,
            B.reshape(b, l, self.n_groups, self.state_size), C.reshape(b, l, self.n_groups, self.state_size),
            self.D, initial_state=initial_state, chunk_size=chunk_size, cu_seqlens=cu_seqlens,
        )
        return y.reshape(b, l, self.inner), final

    def step(self, hidden: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor,
             slot_ids: torch.Tensor | None = None, linear: Linear | None = None) -> torch.Tensor:
        """One decode token per row (like mamba's `Mamba2.step`): hidden (b, d) -> (b, d).

        conv_state (S, conv_dim, d_conv - 1) and ssm_state (S, heads, head_dim, state) fp32
        hold the states of S sequences and are advanced in place; row r is state slot_ids[r]
        (default: row r). The fused op (`m1.ops.decode`) picks its kernel at call time.
        `linear(module, x)` computes in_proj and out_proj (default: the modules themselves; the
        engine passes its `m1.ops.linear.LinearSet`, prepared weights for inference).
        """
        if slot_ids is None:
            slot_ids = torch.arange(hidden.shape[0], device=hidden.device)
        lin = linear or _call
        y = mamba2_decode_step(
            lin(self.in_proj, hidden), conv_state, ssm_state, slot_ids, self.conv1d.weight.squeeze(1), self.conv1d.bias,
            self.dt_bias, self.A, self.D, self.norm.weight, n_heads=self.num_heads, head_dim=self.head_dim,
            n_groups=self.n_groups, state_size=self.state_size, eps=self.norm.variance_epsilon, dt_limit=self.dt_limit,
        )
        return lin(self.out_proj, y.to(hidden.dtype))

    def forward(self, hidden: torch.Tensor, token_mask: torch.Tensor | None = None, cache=None, cu_seqlens=None):
        """hidden (b, l, d); token_mask (b, l) with 1 for real tokens; cache: a transformers Cache."""
        b, l, _ = hidden.shape
        prev_conv = cache.get_conv_state(self.layer_idx) if cache is not None else None
        prev_ssm = cache.get_recurrent_state(self.layer_idx) if cache is not None else None
        if prev_conv is not None and l == 1 and cu_seqlens is None:
            return self._cached_step(hidden, prev_conv, prev_ssm, cache)
        z, xBC, dt_raw = self.split_projection(self.in_proj(hidden))
        if token_mask is not None:
            xBC = xBC * token_mask[..., None].to(xBC.dtype)
        dt = self.time_step(dt_raw)
        if token_mask is not None:
            dt = dt * token_mask[..., None].to(dt.dtype)
        if cu_seqlens is not None:  # packed rows: run as one long sequence with boundaries
            xBC_flat, dt_flat = xBC.reshape(1, b * l, -1), dt.reshape(1, b * l, -1)
        else:
            xBC_flat, dt_flat = xBC, dt
        xBC_act, _ = causal_conv1d(xBC_flat, self.conv1d.weight.squeeze(1), self.conv1d.bias, initial_state=prev_conv, cu_seqlens=cu_seqlens)
        if token_mask is not None:
            xBC_act = xBC_act * token_mask[..., None].to(xBC_act.dtype)
        x, B, C = self.split_xbc(xBC_act)
        y, new_ssm = self._ssd(x, dt_flat, B, C, prev_ssm, self.chunk_size, cu_seqlens)
        y = y.reshape(b, l, self.inner)
        if cache is not None:
            cache.update_conv_state(xBC.transpose(1, 2), self.layer_idx, conv_kernel_size=self.conv_width - 1)
            cache.update_recurrent_state(new_ssm, self.layer_idx)
        # The gated norm computes in fp32 and hands out_proj its input in the dtype out_proj takes:
        # under autocast the autocast dtype (the kernel writes it directly: no fp32 tensor that
        # autocast would cast again), else the hidden states' dtype. Same values either way.
        dev = hidden.device.type
        out_dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else hidden.dtype
        return self.out_proj(self.norm(y, z, out_dtype=out_dtype))

    def _cached_step(self, hidden: torch.Tensor, prev_conv: torch.Tensor, prev_ssm: torch.Tensor, cache) -> torch.Tensor:
        """One new token per row against a transformers cache (`generate`'s decode), through `step`.

        A decode token is always a real one, so no mask applies. `step` advances copies of the
        cache's states; they go back through the cache's own update calls, which keep its
        bookkeeping (the token count, the history of assisted decoding) as a prefill's do.
        """
        conv, ssm = prev_conv.clone(), prev_ssm.clone()
        out = self.step(hidden[:, 0], conv, ssm)
        cache.update_conv_state(conv[..., -1:], self.layer_idx, conv_kernel_size=self.conv_width - 1)  # the new input column
        cache.update_recurrent_state(ssm, self.layer_idx)
        return out[:, None]

    @torch.no_grad()
    def prefill_packed(self, hidden: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor, slots: torch.Tensor,
                       cu_seqlens: list[int], cu_seqlens_dev: torch.Tensor, continuing: torch.Tensor | None,
                       chunk_size: int | None = None, linear: Linear | None = None) -> torch.Tensor:
        """Prompts packed end to end as hidden (1, T, d) with boundaries `cu_seqlens` (host list, and on
        the device): the output (1, T, d), and each piece's final states written to its slot
        `slots[i]` of the pools conv_state (S, conv_dim, d_conv - 1) and ssm_state (S, heads, head_dim, state).

        Pieces start from zero states, except those flagged in `continuing` (bool (n,), or None for
        none), which continue from their slot's states (later chunks of a long prompt).
        `chunk_size` defaults to the model's SSD chunk; `linear` as in `step`.
        """
        T = hidden.shape[1]
        lin = linear or _call
        z, xBC, dt_raw = self.split_projection(lin(self.in_proj, hidden))
        init_conv = init_ssm = None
        if continuing is not None:
            init_conv = torch.where(continuing[:, None, None], conv_state[slots], 0)
            init_ssm = torch.where(continuing[:, None, None, None], ssm_state[slots], 0)
        xBC_act, conv_final = packed_causal_conv1d(xBC[0], self.conv1d.weight.squeeze(1), self.conv1d.bias, init_conv, cu_seqlens)
        x, B, C = self.split_xbc(xBC_act[None])
        y, ssm_final = self._ssd(x, self.time_step(dt_raw), B, C, init_ssm, chunk_size or self.chunk_size, cu_seqlens_dev)
        conv_state.index_copy_(0, slots, conv_final.to(conv_state.dtype))
        ssm_state.index_copy_(0, slots, ssm_final.to(ssm_state.dtype))
        y = self.norm(y.reshape(1, T, self.inner), z)
        return lin(self.out_proj, y.to(hidden.dtype))
