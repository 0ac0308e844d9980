"""Causal depthwise convolution of the Mamba-2 layer: references and dispatch.

x is (b, l, d) channels-last; weight (d, w); the conv state holds the last w-1 inputs,
(b, d, w-1), oldest first. A sequence that starts from `initial_state` sees those
inputs as its past, so a prefill in pieces equals one prefill of the whole.

Packed sequences pass `cu_seqlens` (b must be 1): no output ever sees an input of the
sequence before it, and the final state has one row per sequence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from m1.ops import dispatch


def _act(y: torch.Tensor, activation: str | None) -> torch.Tensor:
    if activation in (None, "identity"):
        return y
    if activation in ("silu", "swish"):
        return F.silu(y)
    raise ValueError(f"unsupported activation {activation!r}")


def _conv_one(x, weight, bias, initial_state, activation):
    b, l, d = x.shape
    w = weight.shape[1]
    past = x.new_zeros(b, d, w - 1) if initial_state is None else initial_state.to(x.dtype)
    seq = torch.cat([past, x.transpose(1, 2)], dim=-1)  # (b, d, w-1+l)
    y = F.conv1d(seq, weight[:, None, :].to(x.dtype), None if bias is None else bias.to(x.dtype), groups=d)
    final = seq[:, :, -(w - 1) :] if w > 1 else seq[:, :, :0]
    return _act(y.transpose(1, 2), activation), final.contiguous()


def causal_conv1d_ref(x, weight, bias=None, initial_state=None, activation: str | None = "silu", cu_seqlens=None):
    """Full causal conv in plain PyTorch. Returns (y (b, l, d), final_state (b or seqs, d, w-1))."""
    if cu_seqlens is None:
        return _conv_one(x, weight, bias, initial_state, activation)
    if x.shape[0] != 1:
        raise ValueError(f"packed input (cu_seqlens) needs batch size 1, got {x.shape[0]}")
    bounds = cu_seqlens.tolist()
    ys, finals = [], []
    for i, (s, e) in enumerate(zip(bounds[:-1], bounds[1:])):
        h0 = None if initial_state is None else initial_state[i : i + 1]
        y, f = _conv_one(x[:, s:e], weight, bias, h0, activation)
        ys.append(y)
        finals.append(f)
    return torch.cat(ys, dim=1), torch.cat(finals, dim=0)


def causal_conv1d_step_ref(x, conv_state, weight, bias=None, activation: str | None = "silu"):
    """One step. x (b, d); conv_state (b, d, w-1). Returns (y (b, d), new_state)."""
    window = torch.cat([conv_state.to(x.dtype), x[:, :, None]], dim=-1)  # (b, d, w)
    y = (window * weight.to(x.dtype)[None]).sum(-1)
    if bias is not None:
        y = y + bias.to(x.dtype)
    return _act(y, activation), window[:, :, 1:].to(conv_state.dtype)


dispatch.register("causal_conv1d", dispatch.Impl("ref", lambda x: True, lambda: causal_conv1d_ref))
dispatch.register("causal_conv1d_step", dispatch.Impl("ref", lambda x: True, lambda: causal_conv1d_step_ref))


def causal_conv1d(x, weight, bias=None, initial_state=None, activation: str | None = "silu", cu_seqlens=None):
    fn = dispatch.choose("causal_conv1d", x)
    return fn(x, weight, bias, initial_state=initial_state, activation=activation, cu_seqlens=cu_seqlens)


def causal_conv1d_step(x, conv_state, weight, bias=None, activation: str | None = "silu"):
    fn = dispatch.choose("causal_conv1d_step", x)
    return fn(x, conv_state, weight, bias, activation=activation)


def packed_causal_conv1d(x, weight, bias, initial_state, cu_seqlens: list[int], activation: str | None = "silu"):
    """x (T, d) packed channels-last; weight (d, w); initial_state (n, d, w-1) or None (zeros).

    The vectorised form of `causal_conv1d_ref(..., cu_seqlens=...)` (which loops over
    sequences), for the engine's packed prefill; tests compare the two. Returns (y (T, d), final_state (n, d, w-1)).
    Each sequence is laid after its own w-1 past inputs in one extended buffer, so the conv is w
    multiply-adds of shifted *slices* of that buffer over all its rows (the w-1 rows a sequence puts before
    its tokens give outputs nobody reads), and one gather keeps the tokens' rows. Sums run in fp32 (as
    conv1d accumulates) and round once to x's dtype.
    Why slices and one gather rather than w gathers: on a CPU each gather writes a fresh multi-MB tensor that
    page-faults; SmolLM2's packed prefill, (3072, 1728) fp32 on 2 cores, took 32 ms a layer with four gathers.
    The row moves are `index_copy_` / `index_select`, 4x faster than advanced indexing on a CPU.
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
    if activation not in ("silu", "swish", None, "identity"):
        raise ValueError(f"unsupported activation {activation!r}")
    ext = x.new_zeros(T + n * k, d)
    ext.index_copy_(0, dst, x)
    if initial_state is not None and k:
        init_rows = (cu[:-1] + torch.arange(n, device=dev) * k)[:, None] + torch.arange(k, device=dev)
        ext.index_copy_(0, init_rows.reshape(-1), initial_state.transpose(1, 2).reshape(n * k, d).to(x.dtype))
    wf = weight.float()
    extf = ext.float()  # ext itself in fp32 (no copy); one conversion otherwise
    rows = T + n * k - k  # full[r] = the conv at ext row r + k
    full = extf[0:rows] * wf[:, 0] if bias is None else torch.addcmul(bias.float(), extf[0:rows], wf[:, 0])
    for j in range(1, w):
        full.addcmul_(extf[j:j + rows], wf[:, j])
    y = full.index_select(0, dst - k).to(x.dtype)  # y's own storage either way, so silu may run in place
    if activation in ("silu", "swish"):
        y = F.silu(y, inplace=True)
    last = cu[1:] - 1 + (torch.arange(n, device=dev) + 1) * k
    final = ext.index_select(0, (last[:, None] - k + 1 + torch.arange(k, device=dev)).reshape(-1)).view(n, k, d).transpose(1, 2)
    return y, final.contiguous()
