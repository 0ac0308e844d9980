"""`m1.ops.linear`: the oneDNN inference GEMM against `F.linear`, its dispatch, and `LinearSet`'s refresh."""

import pytest
import torch
import torch.nn.functional as F

from m1.ops import dispatch
from m1.ops.linear import LinearSet, _onednn_applies, linear_onednn, linear_ref, onednn_prepare

ONEDNN = _onednn_applies(torch.empty(0))
needs_onednn = pytest.mark.skipif(not ONEDNN, reason="this torch build has no oneDNN linear ops")


@needs_onednn
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(1, 96), (7, 96), (64, 96), (300, 96), (2, 5, 96)])
def test_onednn_equals_the_reference(dtype, bias, shape):
    g = torch.Generator().manual_seed(hash((str(dtype), bias, shape)) % 2**31)
    w = (torch.randn(160, 96, generator=g) / 10).to(dtype)
    b = torch.randn(160, generator=g).to(dtype) if bias else None
    x = torch.randn(*shape, generator=g).to(dtype)
    got, want = linear_onednn(x, onednn_prepare(w), b), linear_ref(x.double(), w.double(), None if b is None else b.double())
    assert got.shape == (*shape[:-1], 160) and got.dtype == dtype and got.is_contiguous()
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert (got.double() - want).abs().max() <= tol * want.abs().max()


@needs_onednn
def test_onednn_takes_a_strided_input():
    g = torch.Generator().manual_seed(0)
    w, x = torch.randn(32, 48, generator=g), torch.randn(48, 20, generator=g).t()  # (20, 48), not contiguous
    assert torch.allclose(linear_onednn(x, onednn_prepare(w)), F.linear(x, w), atol=1e-5)


def test_dispatch_never_picks_the_forward_only_path_for_gradients():
    x = torch.empty(0)
    assert dispatch.chosen_name("linear", x, needs_grad=True) == "ref"
    assert dispatch.chosen_name("linear", x) == ("onednn" if ONEDNN else "ref")
    with dispatch.force("ref"):
        assert dispatch.chosen_name("linear", x) == "ref"
    assert dispatch.chosen_name("linear", torch.empty(0, dtype=torch.float64)) == "ref"  # oneDNN: fp32 and bf16 only


def _layers(seed=0, bias=True):
    torch.manual_seed(seed)
    return [torch.nn.Linear(24, n, bias=bias) for n in (16, 8, 8)]


@pytest.mark.parametrize("impl", ["ref", "onednn"])
def test_a_stack_is_the_modules_side_by_side(impl):
    if impl == "onednn" and not ONEDNN:
        pytest.skip("no oneDNN")
    q, k, v = _layers()
    x = torch.randn(5, 24)
    with dispatch.force(impl), torch.no_grad():
        s = LinearSet(torch.device("cpu"), torch.float32)
        s.add("qkv", [q, k, v])
        s.add(q, [q])
        assert s.impl_name == impl
        assert torch.allclose(s("qkv", x), torch.cat([q(x), k(x), v(x)], -1), atol=1e-6)
        assert torch.allclose(s(q, x), q(x), atol=1e-6)
    with dispatch.force("ref"):
        s = LinearSet(torch.device("cpu"), torch.float32)
        s.add(q, [q])
        assert s._entries[q].prepared.data_ptr() == q.weight.data_ptr()  # the reference copies nothing


def test_refresh_follows_the_live_weights():
    q, k, v = _layers(1)
    x = torch.randn(3, 24)
    s = LinearSet(torch.device("cpu"), torch.float32)
    s.add("qkv", [q, k, v])
    s.add(v, [v])
    assert s.refresh() == 0  # nothing changed: nothing prepared again

    def check():
        with torch.no_grad():
            assert torch.allclose(s("qkv", x), torch.cat([q(x), k(x), v(x)], -1), atol=1e-5)
            assert torch.allclose(s(v, x), v(x), atol=1e-5)

    opt = torch.optim.SGD(list(q.parameters()) + list(v.parameters()), lr=0.5)
    (q(x).sum() + v(x).pow(2).sum()).backward()
    opt.step()  # in place: the version counter moves
    assert s.refresh() == 2
    check()
    with torch.no_grad():
        k.weight.data.copy_(torch.randn_like(k.weight))  # through .data: no version bump, the values tell
    assert s.refresh() == 1
    check()
    v.weight = torch.nn.Parameter(torch.randn_like(v.weight))  # a new storage, in both entries
    assert s.refresh() == 2
    check()


@needs_onednn
def test_refresh_follows_a_forced_implementation():
    (q, *_), x = _layers(2), torch.randn(4, 24)
    s = LinearSet(torch.device("cpu"), torch.float32)
    s.add(q, [q])
    assert s.impl_name == "onednn"
    with dispatch.force("ref"):
        assert s.refresh() == 1 and s.impl_name == "ref"
        with torch.no_grad():
            assert torch.equal(s(q, x), F.linear(x, q.weight, q.bias))
    assert s.refresh() == 1 and s.impl_name == "onednn"


def test_stacked_modules_must_agree_on_bias():
    a, b = torch.nn.Linear(4, 2), torch.nn.Linear(4, 2, bias=False)
    s = LinearSet(torch.device("cpu"), torch.float32)
    with pytest.raises(ValueError, match="bias"):
        s.add("ab", [a, b])


def test_a_set_that_may_not_copy_uses_the_weights_as_they_are():
    (q, *_), x = _layers(3), torch.randn(4, 24)
    s = LinearSet(torch.device("cpu"), torch.float32, allow_copy=False)
    s.add(q, [q])
    assert s.impl_name == "ref" and s._entries[q].prepared.data_ptr() == q.weight.data_ptr()
    assert s.refresh() == 0 and s.impl_name == "ref"
    with torch.no_grad():
        assert torch.equal(s(q, x), F.linear(x, q.weight, q.bias))


def test_a_reference_stack_is_refreshed_in_place():
    """What CUDA graphs need of the stacked q/k/v: new values at the same addresses."""
    q, k, v = _layers(4)
    x = torch.randn(3, 24)
    with dispatch.force("ref"):
        s = LinearSet(torch.device("cpu"), torch.float32)
        s.add("qkv", [q, k, v])
        e = s._entries["qkv"]
        addresses = (e.prepared.data_ptr(), e.bias.data_ptr())
        with torch.no_grad():
            for m in (q, k, v):
                m.weight.add_(1.0)
                m.bias.sub_(0.5)
        assert s.refresh() == 1
        assert (e.prepared.data_ptr(), e.bias.data_ptr()) == addresses
        with torch.no_grad():
            assert torch.allclose(s("qkv", x), torch.cat([q(x), k(x), v(x)], -1), atol=1e-6)
