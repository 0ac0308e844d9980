"""The SSD (state space duality) scan of Mamba-2: references and dispatch.

For head h in group g(h), with a positive step dt_t, a negative scalar decay A_h, and
state S (head_dim x state_size), one step is

    S_t = exp(dt_t * A_h) * S_{t-1} + dt_t * x_t B_t^T
    y_t = S_t C_t + D_h * x_t

Shapes: x (b, l, h, p), dt (b, l, h) already positive (softplus and bias applied by the
layer), A (h,), B and C (b, l, g, n), D (h,) or None, states (b, h, p, n) in fp32.

Three references live here:
- `ssd_scan_ref`: the per-step loop above; the definition everything is tested against.
- `ssd_chunked_ref`: the chunked (quadratic within a chunk, linear across chunks) form
  that training and prefill use; identical maths, parallel over time.
- `ssd_step_ref`: one decode step.

`ssd_chunked` and `ssd_step` dispatch at call time (see `m1.ops.dispatch`).

Packed sequences pass `cu_seqlens` (b must be 1): the state restarts at every boundary,
each sequence takes its own row of `initial_state`, and the final state has one row per
sequence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from m1.ops import dispatch


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _heads(t: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(.., g, n) -> (.., h, n): each group serves h/g consecutive heads."""
    g = t.shape[-2]
    return t if g == num_heads else t.repeat_interleave(num_heads // g, dim=-2)


def ssd_scan_ref(x, dt, A, B, C, D=None, initial_state=None):
    """Per-step loop: the plain definition. Returns (y, final_state)."""
    b, l, h, p = x.shape
    ct = _compute_dtype(x)
    Bh, Ch = _heads(B, h).to(ct), _heads(C, h).to(ct)
    state = x.new_zeros(b, h, p, B.shape[-1], dtype=ct) if initial_state is None else initial_state.to(ct).clone()
    ys = []
    for t in range(l):
        dtt = dt[:, t].to(ct)  # (b, h)
        decay = torch.exp(dtt * A.to(ct))[:, :, None, None]
        state = decay * state + (dtt[:, :, None] * x[:, t].to(ct))[..., None] * Bh[:, t, :, None, :]
        y = torch.einsum("bhpn,bhn->bhp", state, Ch[:, t])
        if D is not None:
            y = y + D.to(ct)[None, :, None] * x[:, t].to(ct)
        ys.append(y)
    return torch.stack(ys, dim=1).to(x.dtype), state


def _segsum(a: torch.Tensor) -> torch.Tensor:
    """out[..., i, j] = sum(a[..., j+1 : i+1]) for i >= j, -inf above the diagonal."""
    T = a.shape[-1]
    a = a[..., None].expand(*a.shape, T)
    below = torch.tril(torch.ones(T, T, dtype=torch.bool, device=a.device), diagonal=-1)
    a = a.masked_fill(~below, 0)
    out = torch.cumsum(a, dim=-2)
    keep = torch.tril(torch.ones(T, T, dtype=torch.bool, device=a.device), diagonal=0)
    return out.masked_fill(~keep, float("-inf"))


def _chunked_one(x, dt, A, B, C, D, initial_state, chunk_size):
    """Chunked SSD over one batch of equal-length rows. Returns (y, final_state)."""
    b, l, h, p = x.shape
    n = B.shape[-1]
    ct = _compute_dtype(x)
    pad = (-l) % chunk_size
    xs, dts, Bh, Ch = x.to(ct), dt.to(ct), _heads(B, h).to(ct), _heads(C, h).to(ct)
    if pad:  # dt = 0 on padding: no decay and no input, so the final state is untouched
        xs, dts = F.pad(xs, (0, 0, 0, 0, 0, pad)), F.pad(dts, (0, 0, 0, pad))
        Bh, Ch = F.pad(Bh, (0, 0, 0, 0, 0, pad)), F.pad(Ch, (0, 0, 0, 0, 0, pad))
    c = xs.shape[1] // chunk_size
    X = (xs * dts[..., None]).reshape(b, c, chunk_size, h, p)
    Bc = Bh.reshape(b, c, chunk_size, h, n)
    Cc = Ch.reshape(b, c, chunk_size, h, n)
    a = (dts * A.to(ct)).reshape(b, c, chunk_size, h).permute(0, 3, 1, 2)  # (b, h, c, L)
    a_cum = torch.cumsum(a, dim=-1)

    # 1. within each chunk: a masked, decayed attention-like product
    Lmat = torch.exp(_segsum(a))  # (b, h, c, L, L)
    y_diag = torch.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", Cc, Bc, Lmat, X)

    # 2. each chunk's contribution to the state at its end
    decay_to_end = torch.exp(a_cum[..., -1:] - a_cum)  # (b, h, c, L)
    chunk_states = torch.einsum("bclhn,bhcl,bclhp->bchpn", Bc, decay_to_end, X)

    # 3. carry states across chunks (includes the initial state)
    h0 = torch.zeros(b, h, p, n, dtype=ct, device=x.device) if initial_state is None else initial_state.to(ct)
    chunk_states = torch.cat([h0[:, None], chunk_states], dim=1)  # (b, c+1, h, p, n)
    decay_chunk = torch.exp(_segsum(F.pad(a_cum[..., -1], (1, 0))))  # (b, h, c+1, c+1)
    carried = torch.einsum("bhzc,bchpn->bzhpn", decay_chunk, chunk_states)
    states_in, final_state = carried[:, :-1], carried[:, -1]

    # 4. the carried-in state's contribution inside each chunk
    y_off = torch.einsum("bclhn,bchpn,bhcl->bclhp", Cc, states_in, torch.exp(a_cum))
    y = (y_diag + y_off).reshape(b, c * chunk_size, h, p)[:, :l]
    if D is not None:
        y = y + D.to(ct)[None, None, :, None] * x.to(ct)
    return y.to(x.dtype), final_state


def ssd_chunked_ref(x, dt, A, B, C, D=None, initial_state=None, chunk_size: int = 64, cu_seqlens=None):
    """Chunked SSD in plain PyTorch. Returns (y, final_state); final_state is fp32 (fp64 for fp64 input)."""
    if cu_seqlens is None:
        return _chunked_one(x, dt, A, B, C, D, initial_state, chunk_size)
    if x.shape[0] != 1:
        raise ValueError(f"packed input (cu_seqlens) needs batch size 1, got {x.shape[0]}")
    bounds = cu_seqlens.tolist()
    ys, finals = [], []
    for i, (s, e) in enumerate(zip(bounds[:-1], bounds[1:])):
        h0 = None if initial_state is None else initial_state[i : i + 1]
        y, f = _chunked_one(x[:, s:e], dt[:, s:e], A, B[:, s:e], C[:, s:e], D, h0, chunk_size)
        ys.append(y)
        finals.append(f)
    return torch.cat(ys, dim=1), torch.cat(finals, dim=0)


def ssd_step_ref(state, x, dt, A, B, C, D=None):
    """One decode step. state (b, h, p, n) fp32; x (b, h, p); dt (b, h); B, C (b, g, n).

    Returns (y (b, h, p) in x's dtype, new_state in the state's dtype).
    """
    h = x.shape[1]
    ct = state.dtype
    dtt = dt.to(ct)
    decay = torch.exp(dtt * A.to(ct))[:, :, None, None]
    Bh, Ch = _heads(B, h).to(ct), _heads(C, h).to(ct)
    new_state = decay * state + (dtt[:, :, None] * x.to(ct))[..., None] * Bh[:, :, None, :]
    y = torch.einsum("bhpn,bhn->bhp", new_state, Ch)
    if D is not None:
        y = y + D.to(ct)[None, :, None] * x.to(ct)
    return y.to(x.dtype), new_state


dispatch.register("ssd_chunked", dispatch.Impl("ref", lambda x: True, lambda: ssd_chunked_ref))
dispatch.register("ssd_step", dispatch.Impl("ref", lambda x: True, lambda: ssd_step_ref))


def ssd_chunked(x, dt, A, B, C, D=None, initial_state=None, chunk_size: int = 64, cu_seqlens=None):
    """Chunked SSD on the best implementation for these tensors. Returns (y, final_state).

    On CUDA: fla-core's forward ("fla") for gradient-free calls when fla-core is installed,
    else m1's own Triton forward + backward ("triton"); elsewhere the reference."""
    fn = dispatch.choose("ssd_chunked", x, needs_grad=dispatch.needs_grad(x, dt, A, B, C, D, initial_state))
    return fn(x, dt, A, B, C, D=D, initial_state=initial_state, chunk_size=chunk_size, cu_seqlens=cu_seqlens)


def ssd_step(state, x, dt, A, B, C, D=None):
    """One SSD decode step on the best implementation. Returns (y, new_state)."""
    fn = dispatch.choose("ssd_step", x)
    return fn(state, x, dt, A, B, C, D=D)


def _load_ssd_chunked_own():
    from m1.ops.triton.ssd import ssd_chunked_own

    return ssd_chunked_own


def _load_ssd_chunked_fla():
    from m1.ops.triton.ssd import ssd_chunked_fla_fwd

    return ssd_chunked_fla_fwd


def _fla_applies(x: torch.Tensor) -> bool:
    return dispatch.cuda_with_triton(x) and dispatch.has_module("fla")


# Tried in reverse order: fla-core's forward (no backward: its gated backward refuses Triton
# < 3.7.1 on Hopper), then m1's own Triton forward + backward, then the reference.
dispatch.register("ssd_chunked", dispatch.Impl("triton", dispatch.cuda_with_triton, _load_ssd_chunked_own))
dispatch.register("ssd_chunked", dispatch.Impl("fla", _fla_applies, _load_ssd_chunked_fla, grad=False))
