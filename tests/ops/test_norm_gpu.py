"""The Triton gated RMSNorm against its reference on CUDA: fresh inputs, outputs and gradients.

Not run on the CPU machines (skipped without CUDA); the same kernel is checked on CPU by Triton's
interpreter in tests/ops/test_norm.py.
"""

import zlib

import pytest
import torch

from m1.ops import dispatch
from m1.ops.norm import gated_rms_norm, gated_rms_norm_ref

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

SHAPES = {  # inner width, group size: m1-3b (192 heads x 16, 192 groups), m1-3b-s128 (24 x 128, 24 groups), SmolLM2 9 x 64
    "m1-3b": (3072, 16),
    "m1-3b-s128": (3072, 128),
    "smollm2-9x64": (576, 64),
}


def _rel(a, b):
    return ((a.double() - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2), ("mixed", 2e-2)])
@pytest.mark.parametrize("gate", [True, False])
def test_triton_gated_norm_matches_reference_outputs_and_gradients(shape, dtype, tol, gate):
    """Fresh inputs each run; "mixed": y in fp32 (an SSD output), z and the weight in bf16."""
    from m1.ops.triton.norm import gated_rms_norm_triton

    D, G = SHAPES[shape]
    ydt, zdt = (torch.float32, torch.bfloat16) if dtype == "mixed" else (dtype, dtype)
    g = torch.Generator(device="cuda").manual_seed(zlib.crc32(f"{shape} {dtype} {gate}".encode()))
    y = torch.randn(3, 257, D, device="cuda", generator=g).to(ydt).requires_grad_()
    z = torch.randn(3, 257, D, device="cuda", generator=g).to(zdt).requires_grad_() if gate else None
    w = (1 + 0.1 * torch.randn(D, device="cuda", generator=g)).to(zdt).requires_grad_()
    ins = [t for t in (y, z, w) if t is not None]
    out = gated_rms_norm_triton(y, z, w, eps=1e-6, group_size=G)
    dout = torch.randn(out.shape, device="cuda", generator=g).to(out.dtype)
    got = torch.autograd.grad(out, ins, dout)
    ins64 = [t.detach().double().requires_grad_() for t in ins]
    ref = gated_rms_norm_ref(ins64[0], ins64[1] if gate else None, ins64[-1], eps=1e-6, group_size=G)
    want = torch.autograd.grad(ref, ins64, dout.double())
    same = gated_rms_norm_ref(y.detach(), None if z is None else z.detach(), w.detach(), eps=1e-6, group_size=G)
    assert out.dtype == same.dtype and all(a.dtype == t.dtype for a, t in zip(got, ins))
    assert _rel(out, ref) < tol
    for a, b in zip(got, want):
        assert _rel(a, b) < tol


def test_gated_norm_dispatches_to_triton_on_cuda():
    y = torch.randn(4, 64, device="cuda")
    assert dispatch.chosen_name("gated_rms_norm", y) == "triton"
    z, w = torch.randn_like(y), torch.rand(64, device="cuda")
    torch.testing.assert_close(gated_rms_norm(y, z, w, group_size=16), gated_rms_norm_ref(y, z, w, group_size=16), rtol=1e-5, atol=1e-5)
    with dispatch.force("ref"):
        assert dispatch.chosen_name("gated_rms_norm", y) == "ref"
