import itertools

import pytest
import torch

from m1.ops import dispatch
from m1.ops.ssd import ssd_chunked, ssd_chunked_ref, ssd_scan_ref, ssd_step_ref


def _inputs(b=2, l=37, h=4, p=3, g=2, n=5, dtype=torch.float64, seed=0, grad=False):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=dtype)  # noqa: E731
    t = dict(
        x=r(b, l, h, p),
        dt=torch.nn.functional.softplus(r(b, l, h)),
        A=-torch.exp(r(h) * 0.5),
        B=r(b, l, g, n),
        C=r(b, l, g, n),
        D=r(h),
        initial_state=r(b, h, p, n),
    )
    if grad:
        for v in t.values():
            v.requires_grad_(True)
    return t


@pytest.mark.parametrize("chunk", [1, 8, 16, 64])
def test_chunked_equals_scan_fp64(chunk):
    t = _inputs()
    y0, s0 = ssd_scan_ref(**t)
    y1, s1 = ssd_chunked_ref(**t, chunk_size=chunk)
    assert (y0 - y1).abs().max() <= 1e-10
    assert (s0 - s1).abs().max() <= 1e-10


def test_chunked_gradients_equal_scan_fp64():
    t = _inputs(l=21, grad=True)
    y0, s0 = ssd_scan_ref(**t)
    w_y, w_s = torch.randn_like(y0), torch.randn_like(s0)
    g0 = torch.autograd.grad((y0 * w_y).sum() + (s0 * w_s).sum(), list(t.values()))
    y1, s1 = ssd_chunked_ref(**t, chunk_size=8)
    g1 = torch.autograd.grad((y1 * w_y).sum() + (s1 * w_s).sum(), list(t.values()))
    for name, a, b in zip(t, g0, g1):
        assert (a - b).abs().max() <= 1e-10, name


def test_packed_equals_padded_rows():
    t = _inputs(b=1, l=30)
    lens = [7, 16, 7]
    cu = torch.tensor([0, *itertools.accumulate(lens)])
    h0 = torch.randn(3, *t["initial_state"].shape[1:], dtype=torch.float64)
    y, fin = ssd_chunked_ref(t["x"], t["dt"], t["A"], t["B"], t["C"], t["D"], initial_state=h0, chunk_size=4, cu_seqlens=cu)
    for i, (s, e) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        sl = slice(s, e)
        yi, fi = ssd_scan_ref(t["x"][:, sl], t["dt"][:, sl], t["A"], t["B"][:, sl], t["C"][:, sl], t["D"], h0[i : i + 1])
        assert (y[:, sl] - yi).abs().max() <= 1e-10
        assert (fin[i : i + 1] - fi).abs().max() <= 1e-10
    # the boundaries matter: without them, the second segment carries the first one's state
    y_flat, _ = ssd_chunked_ref(t["x"], t["dt"], t["A"], t["B"], t["C"], t["D"], initial_state=h0[:1], chunk_size=4)
    assert (y_flat[:, 7:23] - y[:, 7:23]).abs().max() > 1e-3


def test_zero_dt_is_identity_step():
    """Padding is neutralised by dt = 0 (no decay, no input): the layer relies on this."""
    t = _inputs(b=1, l=5)
    dt = t["dt"].clone()
    dt[:, :3] = 0
    _, s_full = ssd_scan_ref(t["x"], dt, t["A"], t["B"], t["C"], None, t["initial_state"])
    _, s_tail = ssd_scan_ref(t["x"][:, 3:], dt[:, 3:], t["A"], t["B"][:, 3:], t["C"][:, 3:], None, t["initial_state"])
    assert (s_full - s_tail).abs().max() <= 1e-12


def test_step_continues_chunked_prefill():
    t = _inputs(b=2, l=40)
    y_all, _ = ssd_scan_ref(**t)
    _, state = ssd_chunked_ref(t["x"][:, :32], t["dt"][:, :32], t["A"], t["B"][:, :32], t["C"][:, :32], t["D"], t["initial_state"], chunk_size=16)
    for i in range(32, 40):
        y, state = ssd_step_ref(state, t["x"][:, i], t["dt"][:, i], t["A"], t["B"][:, i], t["C"][:, i], t["D"])
        assert (y - y_all[:, i]).abs().max() <= 1e-10


def test_fp32_output_state_is_fp32():
    t = _inputs(dtype=torch.float32)
    y, s = ssd_chunked(**t, chunk_size=16)
    assert y.dtype == torch.float32 and s.dtype == torch.float32


def test_dispatch_picks_reference_on_cpu(caplog):
    x = torch.zeros(1, 2, 2, 2)
    assert dispatch.chosen_name("ssd_chunked", x) == "ref"
    with dispatch.force("ref"):
        assert dispatch.chosen_name("ssd_step", x) == "ref"
    with dispatch.force("no-such-impl"), pytest.raises(RuntimeError, match="no implementation"):
        dispatch.choose("ssd_step", x)
