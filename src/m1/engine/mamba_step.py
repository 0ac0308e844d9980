"""One Mamba-2 decode step over slot-indexed state pools.

`mamba2_decode_step` has the contract of the kernels issue's fused op
(`m1.ops.decode.mamba2_decode_step`): it reads zxbcdt (b, in_proj width), updates
conv_state (slots, conv_dim, w-1) and ssm_state (slots, h, p, n) fp32 in place at the
rows `slot_ids`, and returns the gated-normed y (b, h*p) before out_proj. Until that op
lands this module composes it from the unfused `m1.ops` steps; once `m1.ops.decode`
exists, `choose_decode_step` takes it (and logs which it took).
"""

from __future__ import annotations

import importlib
import logging

import torch
import torch.nn.functional as F

from m1.ops import causal_conv1d_step, gated_rms_norm, ssd_step
from m1.ops import dispatch

log = logging.getLogger(__name__)
_CHOSEN: list = []


def mamba2_decode_step_composed(
    zxbcdt, conv_state, ssm_state, slot_ids, conv_weight, conv_bias, dt_bias, A, D, norm_weight,
    *, n_heads: int, head_dim: int, n_groups: int, state_size: int, eps: float, dt_limit: tuple[float, float],
):
    b = zxbcdt.shape[0]
    inner = n_heads * head_dim
    gn = n_groups * state_size
    z, xBC, dt_raw = zxbcdt.split([inner, inner + 2 * gn, n_heads], dim=-1)
    xBC_act, new_conv = causal_conv1d_step(xBC, conv_state[slot_ids], conv_weight, conv_bias)
    conv_state.index_copy_(0, slot_ids, new_conv.to(conv_state.dtype))
    x, B, C = xBC_act.split([inner, gn, gn], dim=-1)
    dt = F.softplus(dt_raw.float() + dt_bias.float()).clamp(dt_limit[0], dt_limit[1])
    y, new_ssm = ssd_step(
        ssm_state[slot_ids], x.reshape(b, n_heads, head_dim), dt, A,
        B.reshape(b, n_groups, state_size), C.reshape(b, n_groups, state_size), D,
    )
    ssm_state.index_copy_(0, slot_ids, new_ssm)
    return gated_rms_norm(y.reshape(b, inner), z, norm_weight, eps=eps, group_size=inner // n_groups)


def choose_decode_step():
    """The fused op from `m1.ops.decode` when that module exists, else the composition above."""
    if not _CHOSEN:
        if dispatch.has_module("m1.ops.decode"):
            fn = importlib.import_module("m1.ops.decode").mamba2_decode_step
            log.info("mamba decode: using m1.ops.decode.mamba2_decode_step (fused op, its own dispatch)")
        else:
            fn = mamba2_decode_step_composed
            log.info("mamba decode: m1.ops.decode not present; composing conv/SSD/norm steps from m1.ops")
        _CHOSEN.append(fn)
    return _CHOSEN[0]
