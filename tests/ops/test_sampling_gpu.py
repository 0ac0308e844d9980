"""The Triton untruncated draw against its reference on CUDA, at the engine's shapes.

Not run on the CPU machines (skipped without CUDA); the same kernel is checked on CPU by Triton's
interpreter in tests/ops/test_sampling.py.
"""

import zlib

import pytest
import torch

from m1.ops import dispatch
from m1.ops.sampling import draw, draw_ref

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("b, v", [(560, 128256), (64, 49152), (7, 1000)])
def test_triton_draw_matches_the_reference(b, v):
    """Fresh logits each run, a third of the rows greedy: the same tokens as the reference except where the
    uniform lies within rounding of a CDF step, and the same log-probabilities."""
    from m1.ops.triton.sampling import draw_triton

    g = torch.Generator(device="cuda").manual_seed(zlib.crc32(f"{b} {v}".encode()))
    logits = torch.randn(b, v, device="cuda", generator=g) * 4
    temp = torch.tensor([0.0, 0.7, 1.0], device="cuda").repeat(b // 3 + 1)[:b]
    u = torch.rand(b, device="cuda", generator=g).clamp(1e-7, 1 - 1e-7)
    tok, lp = draw_triton(logits, temp, u)
    rtok, rlp = draw_ref(logits, temp, u)
    diff = (tok != rtok).nonzero().flatten()
    if len(diff):
        t = torch.where(temp > 0, temp, torch.ones_like(temp))[diff, None]
        cdf = torch.softmax(logits[diff].double() / t.double(), -1).cumsum(-1)
        target = u[diff].double() * cdf[:, -1]
        k = tok[diff]
        step = torch.minimum((cdf.gather(1, k[:, None]).squeeze(1) - target).abs(),
                             (cdf.gather(1, (k - 1).clamp(min=0)[:, None]).squeeze(1) - target).abs())
        assert len(diff) <= max(1, b // 100) and (step < 1e-5).all(), (diff.tolist(), step.tolist())
    assert torch.equal(tok[temp == 0], logits[temp == 0].argmax(-1))
    t = torch.where(temp > 0, temp, torch.ones_like(temp))
    at_tok = torch.log_softmax(logits / t[:, None], -1).gather(1, tok[:, None]).squeeze(1)  # each at its own token
    assert (lp - at_tok).abs().max().item() < 1e-4


def test_cuda_dispatches_to_the_kernel():
    x = torch.zeros(2, 8, device="cuda")
    assert dispatch.chosen_name("draw", x) == "triton"
    tok, lp = draw(x, torch.zeros(2, device="cuda"), torch.full((2,), 0.5, device="cuda"))
    assert tok.tolist() == [0, 0] and torch.allclose(lp, torch.full((2,), -torch.log(torch.tensor(8.0)).item(), device="cuda"))


def test_bf16_logits_draw_as_their_fp32_copy():
    """The engine passes the LM head's bf16 logits straight to the kernel, which upcasts as it loads: the same tokens
    as from the fp32 copy, and log-probabilities equal up to fp32 rounding (the compiled kernel may sum a block in
    another order for 2-byte loads than for 4-byte ones; on an H100 the two differed in the last bits, 2026-12-07)."""
    from m1.ops.triton.sampling import draw_triton

    g = torch.Generator(device="cuda").manual_seed(11)
    x = (torch.randn(560, 128256, device="cuda", generator=g) * 4).to(torch.bfloat16)
    temp = torch.tensor([0.0, 0.7, 1.0], device="cuda").repeat(187)[:560]
    u = torch.rand(560, device="cuda", generator=g).clamp(1e-7, 1 - 1e-7)
    (a, la), (b, lb) = draw_triton(x, temp, u), draw_triton(x.float(), temp, u)
    assert torch.equal(a, b)
    assert (la - lb).abs().max().item() < 1e-5
