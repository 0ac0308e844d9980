"""GPU: the Triton chunked SSD (and fla-core's forward where installed) against the float64
reference, outputs and every gradient, by relative error on fresh random inputs."""

import importlib.util

import pytest
import torch

from m1.ops import dispatch
from m1.ops.ssd import ssd_chunked, ssd_chunked_ref

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

TOL = {torch.float32: 5e-3, torch.bfloat16: 2e-2}


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def make(b, l, h, p, g, n, nseq=None, seed=0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, device="cuda", dtype=torch.float64)  # noqa: E731
    return dict(
        x=r(b, l, h, p), dt=torch.nn.functional.softplus(r(b, l, h) - 1.0), A=-torch.exp(r(h) * 0.5),
        B=r(b, l, g, n), C=r(b, l, g, n), D=r(h), initial_state=r(nseq or b, h, p, n),
    )


def cast(t, dtype):
    """x, B, C in the compute dtype; dt, A, D, h0 in fp32 (as the layer keeps them)."""
    return {k: (v.to(dtype) if k in ("x", "B", "C") else v.float()).detach().requires_grad_(True) for k, v in t.items()}


def compare(t64, dtype, cu=None, chunk=64):
    ref = {k: v.detach().clone().requires_grad_(True) for k, v in t64.items()}
    y, f = ssd_chunked_ref(**ref, chunk_size=chunk, cu_seqlens=cu)
    gen = torch.Generator(device="cuda").manual_seed(123)
    wy = torch.randn(y.shape, generator=gen, device="cuda", dtype=torch.float64)
    wf = torch.randn(f.shape, generator=gen, device="cuda", dtype=torch.float64)
    ((y * wy).sum() + (f * wf).sum()).backward()
    ours = cast(t64, dtype)
    y2, f2 = ssd_chunked(**ours, chunk_size=chunk, cu_seqlens=cu)
    assert y2.dtype == dtype and f2.dtype == torch.float32
    ((y2.double() * wy).sum() + (f2.double() * wf).sum()).backward()
    errs = {"y": rel(y2, y), "final_state": rel(f2, f)}
    for k in t64:
        errs["d" + k] = rel(ours[k].grad, ref[k].grad)
    return errs


SHAPES = [  # (b, l, h, p, g, n)
    (2, 300, 8, 16, 8, 16),  # m1-3b per-head layout, reduced
    (1, 200, 4, 128, 2, 128),  # m1-3b-s128 layout with 2 heads per group
    (2, 130, 6, 32, 3, 64),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
def test_triton_forward_backward_match_reference(shape, dtype):
    assert dispatch.chosen_name("ssd_chunked", torch.zeros(1, device="cuda"), needs_grad=True) == "triton"
    errs = compare(make(*shape), dtype)
    bad = {k: v for k, v in errs.items() if not v <= TOL[dtype]}
    assert not bad, errs


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_sequences_match_reference(dtype):
    cu = torch.tensor([0, 1, 70, 200, 333], device="cuda")
    errs = compare(make(1, 333, 4, 32, 2, 32, nseq=4, seed=1), dtype, cu=cu)
    bad = {k: v for k, v in errs.items() if not v <= TOL[dtype]}
    assert not bad, errs


def test_gradient_free_call_matches_reference():
    """Under no_grad the call takes fla-core's forward if installed, else ours: either must match."""
    t64 = make(2, 257, 8, 16, 4, 32, seed=2)
    want = "fla" if importlib.util.find_spec("fla") is not None else "triton"
    assert dispatch.chosen_name("ssd_chunked", torch.zeros(1, device="cuda")) == want
    y, f = ssd_chunked_ref(**t64)
    with torch.no_grad():
        y2, f2 = ssd_chunked(**cast(t64, torch.bfloat16))
    assert rel(y2, y) <= 2e-2 and rel(f2, f) <= 2e-2


@pytest.mark.skipif(importlib.util.find_spec("fla") is None, reason="fla-core not installed")
def test_fla_forward_matches_reference():
    from m1.ops.triton.ssd import ssd_chunked_fla_fwd

    t64 = make(1, 300, 6, 64, 3, 64, nseq=3, seed=3)
    cu = torch.tensor([0, 100, 101, 300], device="cuda")
    y, f = ssd_chunked_ref(**t64, cu_seqlens=cu)
    with torch.no_grad():
        y2, f2 = ssd_chunked_fla_fwd(**cast(t64, torch.float32), cu_seqlens=cu)
    assert rel(y2, y) <= 5e-3 and rel(f2, f) <= 5e-3


def test_no_D_no_initial_state():
    t64 = make(2, 100, 4, 16, 2, 16, seed=4)
    t64.pop("D"), t64.pop("initial_state")
    errs = compare(t64, torch.float32)
    assert all(v <= 5e-3 for v in errs.values()), errs
