"""The Mamba-2 mixer, stored as GraniteMoeHybrid's `mamba` block.

in_proj gives [z | x B C | dt]; a causal depthwise conv (+ silu) runs over xBC; the SSD
scan mixes over time with one scalar decay per head; a gated RMSNorm (per group) and
out_proj finish. The numerics live in `m1.ops`, which picks a kernel at call time.

Padding never reaches the state: at masked positions xBC is zeroed before the conv and
after it, and dt is zeroed, which makes the SSD step an exact identity there.
Packed sequences (`cu_seqlens`) restart both the conv window and the SSD state.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from m1.ops import causal_conv1d, causal_conv1d_step, gated_rms_norm, ssd_chunked, ssd_step
from m1.ops.decode import mamba2_decode_step


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

    def forward(self, y: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        return gated_rms_norm(y, z, self.weight, eps=self.variance_epsilon, group_size=self.group_size)


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

    # ---- public helpers (the engine composes its packed prefill from these) ------------------------
    def split_projection(self, zxbcdt: torch.Tensor):
        """in_proj's output (..., inner + conv_dim + heads) -> (z, xBC, dt_raw)."""
        return zxbcdt.split([self.inner, self.conv_dim, self.num_heads], dim=-1)

    def split_xbc(self, xBC: torch.Tensor):
        """The conv's output (..., conv_dim) -> (x, B, C)."""
        gn = self.n_groups * self.state_size
        return xBC.split([self.inner, gn, gn], dim=-1)

    def time_step(self, dt_raw: torch.Tensor) -> torch.Tensor:
        """dt = clamp(softplus(dt_raw + dt_bias)) in fp32."""
        dt = F.softplus(dt_raw.float() + self.dt_bias.float())
        return dt.clamp(self.dt_limit[0], self.dt_limit[1])

    @property
    def A(self) -> torch.Tensor:
        """The per-head decay rates, -exp(A_log), fp32 (h,)."""
        return -torch.exp(self.A_log.float())

    def step(self, hidden: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor,
             slot_ids: torch.Tensor | None = None) -> torch.Tensor:
        """One decode token per row (like mamba's `Mamba2.step`): hidden (b, d) -> (b, d).

        conv_state (S, conv_dim, d_conv - 1) and ssm_state (S, heads, head_dim, state) fp32
        hold the states of S sequences and are advanced in place; row r is state slot_ids[r]
        (default: row r). The fused op (`m1.ops.decode`) picks its kernel at call time.
        """
        if slot_ids is None:
            slot_ids = torch.arange(hidden.shape[0], device=hidden.device)
        y = mamba2_decode_step(
            self.in_proj(hidden), conv_state, ssm_state, slot_ids, self.conv1d.weight.squeeze(1), self.conv1d.bias,
            self.dt_bias, self.A, self.D, self.norm.weight, n_heads=self.num_heads, head_dim=self.head_dim,
            n_groups=self.n_groups, state_size=self.state_size, eps=self.norm.variance_epsilon, dt_limit=self.dt_limit,
        )
        return self.out_proj(y.to(hidden.dtype))

    def forward(self, hidden: torch.Tensor, token_mask: torch.Tensor | None = None, cache=None, cu_seqlens=None):
        """hidden (b, l, d); token_mask (b, l) with 1 for real tokens; cache: a transformers Cache."""
        b, l, _ = hidden.shape
        z, xBC, dt_raw = self.split_projection(self.in_proj(hidden))
        if token_mask is not None:
            xBC = xBC * token_mask[..., None].to(xBC.dtype)
        conv_w = self.conv1d.weight.squeeze(1)
        prev_conv = cache.get_conv_state(self.layer_idx) if cache is not None else None
        prev_ssm = cache.get_recurrent_state(self.layer_idx) if cache is not None else None
        A = self.A
        dt = self.time_step(dt_raw)
        if token_mask is not None:
            dt = dt * token_mask[..., None].to(dt.dtype)

        if prev_conv is not None and l == 1 and cu_seqlens is None:  # decode: one step per sequence
            xBC_act, _ = causal_conv1d_step(xBC[:, 0], prev_conv, conv_w, self.conv1d.bias)
            x, B, C = self.split_xbc(xBC_act)
            y, new_ssm = ssd_step(
                prev_ssm, x.view(b, self.num_heads, self.head_dim), dt[:, 0], A,
                B.view(b, self.n_groups, self.state_size), C.view(b, self.n_groups, self.state_size), self.D,
            )
            y = y.reshape(b, 1, self.inner)
        else:
            if cu_seqlens is not None:  # packed rows: run as one long sequence with boundaries
                xBC_flat, dt_flat = xBC.reshape(1, b * l, -1), dt.reshape(1, b * l, -1)
            else:
                xBC_flat, dt_flat = xBC, dt
            xBC_act, _ = causal_conv1d(xBC_flat, conv_w, self.conv1d.bias, initial_state=prev_conv, cu_seqlens=cu_seqlens)
            if token_mask is not None:
                xBC_act = xBC_act * token_mask[..., None].to(xBC_act.dtype)
            x, B, C = self.split_xbc(xBC_act)
            bb, ll = xBC_flat.shape[:2]
            y, new_ssm = ssd_chunked(
                x.reshape(bb, ll, self.num_heads, self.head_dim), dt_flat, A,
                B.reshape(bb, ll, self.n_groups, self.state_size), C.reshape(bb, ll, self.n_groups, self.state_size),
                self.D, initial_state=prev_ssm, chunk_size=self.chunk_size, cu_seqlens=cu_seqlens,
            )
            y = y.reshape(b, l, self.inner)
        if cache is not None:
            cache.update_conv_state(xBC.transpose(1, 2), self.layer_idx, conv_kernel_size=self.conv_width - 1)
            cache.update_recurrent_state(new_ssm, self.layer_idx)
        y = self.norm(y, z)
        return self.out_proj(y.to(hidden.dtype))
