"""A float64, one-token-at-a-time Mamba-2 mixer written from the definition, for parity tests.

It reads only the checkpoint's tensors (GraniteMoeHybrid names: in_proj, conv1d, dt_bias, A_log,
D, norm.weight, out_proj) and the config's numbers, never m1's or transformers' code, so m1's
mixer and transformers' `GraniteMoeHybridMambaLayer` can both be measured against it:

    [z | xBC | dt_raw] = in_proj(u)
    xBC_t = silu(conv1d(xBC)_t)  (causal, depthwise, with bias);  x, B, C = split(xBC_t)
    dt_t = clamp(softplus(dt_raw_t + dt_bias), time_step_limit);  A = -exp(A_log)
    h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T   (head h reads group h // (heads / groups))
    y_t = h_t C_t + D x_t
    out = out_proj(weight * rmsnorm_per_group(y * silu(z)))   (groups of inner / n_groups channels)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def mixer_tensors(mixer) -> dict[str, torch.Tensor]:
    """The checkpoint tensors of one Mamba mixer (m1's or transformers'), in float64."""
    t = {
        "in_w": mixer.in_proj.weight, "in_b": mixer.in_proj.bias, "conv_w": mixer.conv1d.weight[:, 0], "conv_b": mixer.conv1d.bias,
        "dt_bias": mixer.dt_bias, "A_log": mixer.A_log, "D": mixer.D, "norm_w": mixer.norm.weight,
        "out_w": mixer.out_proj.weight, "out_b": mixer.out_proj.bias,
    }
    return {k: None if v is None else v.detach().double() for k, v in t.items()}


@torch.no_grad()
def mamba2_mixer_seq_f64(tensors: dict, config, u: torch.Tensor) -> torch.Tensor:
    """The mixer's output for u (b, l, hidden), in float64, by the plain recurrence above."""
    H, P, G, N = config.mamba_n_heads, config.mamba_d_head, config.mamba_n_groups, config.mamba_d_state
    inner = H * P
    eps = config.rms_norm_eps
    lo, hi = config.time_step_limit or (0.0, math.inf)
    u = u.double()
    b, l, _ = u.shape
    proj = u @ tensors["in_w"].T
    if tensors["in_b"] is not None:
        proj = proj + tensors["in_b"]
    z, xbc, dt_raw = proj.split([inner, inner + 2 * G * N, H], dim=-1)

    w = tensors["conv_w"].shape[1]
    past = torch.cat([xbc.new_zeros(b, w - 1, xbc.shape[-1]), xbc], dim=1)
    conv = torch.stack([(past[:, t : t + w] * tensors["conv_w"].T).sum(1) for t in range(l)], dim=1)
    if tensors["conv_b"] is not None:
        conv = conv + tensors["conv_b"]
    xbc = F.silu(conv)
    x, B, C = xbc.split([inner, G * N, G * N], dim=-1)
    x, B, C = x.view(b, l, H, P), B.view(b, l, G, N), C.view(b, l, G, N)

    dt = F.softplus(dt_raw + tensors["dt_bias"]).clamp(lo, hi)
    A = -torch.exp(tensors["A_log"])
    group_of_head = torch.arange(H) // (H // G)  # head h reads B/C of group h // (heads per group)
    Bh, Ch = B[:, :, group_of_head], C[:, :, group_of_head]  # (b, l, H, N)
    state = u.new_zeros(b, H, P, N)
    ys = []
    for t in range(l):
        decay = torch.exp(dt[:, t] * A)[:, :, None, None]  # (b, H, 1, 1)
        state = decay * state + dt[:, t, :, None, None] * x[:, t, :, :, None] * Bh[:, t, :, None, :]
        y_t = (state * Ch[:, t, :, None, :]).sum(-1) + tensors["D"][:, None] * x[:, t]
        ys.append(y_t.reshape(b, inner))
    y = torch.stack(ys, dim=1) * F.silu(z)

    gs = inner // G
    yg = y.view(b, l, G, gs)
    yg = yg / torch.sqrt(yg.pow(2).mean(-1, keepdim=True) + eps)
    out = (tensors["norm_w"] * yg.reshape(b, l, inner)) @ tensors["out_w"].T
    return out if tensors["out_b"] is None else out + tensors["out_b"]
