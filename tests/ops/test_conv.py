import pytest
import torch

from m1.ops.conv import causal_conv1d_ref, causal_conv1d_step_ref, packed_causal_conv1d


def _loop_conv(x, weight, bias, past):
    """Definition: y_t = sum_k w_k * u_{t-w+1+k} over the window ending at t."""
    b, l, d = x.shape
    w = weight.shape[1]
    u = torch.cat([past.transpose(1, 2), x], dim=1)
    out = torch.stack([(u[:, t : t + w].transpose(1, 2) * weight).sum(-1) + bias for t in range(l)], dim=1)
    return torch.nn.functional.silu(out)


def test_full_conv_matches_definition_and_state():
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(2, 9, 5, generator=g, dtype=torch.float64), torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)
    past = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    y, fin = causal_conv1d_ref(x, w, b, initial_state=past)
    assert (y - _loop_conv(x, w, b, past)).abs().max() < 1e-12
    assert torch.equal(fin, x[:, -3:].transpose(1, 2))


def test_steps_equal_full_conv_and_split_prefill():
    g = torch.Generator().manual_seed(1)
    x, w, b = torch.randn(3, 12, 6, generator=g), torch.randn(6, 4, generator=g), torch.randn(6, generator=g)
    y_full, fin_full = causal_conv1d_ref(x, w, b)
    y_a, st = causal_conv1d_ref(x[:, :2], w, b)  # shorter than the window
    y_b, st = causal_conv1d_ref(x[:, 2:7], w, b, initial_state=st)
    ys = [y_a, y_b]
    for t in range(7, 12):
        yt, st = causal_conv1d_step_ref(x[:, t], st, w, b)
        ys.append(yt[:, None])
    assert torch.allclose(torch.cat(ys, 1), y_full, atol=1e-6)
    assert torch.allclose(st, fin_full)


def test_packed_never_sees_previous_sequence():
    g = torch.Generator().manual_seed(2)
    x, w = torch.randn(1, 10, 3, generator=g), torch.randn(3, 4, generator=g)
    cu = torch.tensor([0, 4, 10])
    y, fin = causal_conv1d_ref(x, w, None, cu_seqlens=cu)
    y2, f2 = causal_conv1d_ref(x[:, 4:], w, None)
    assert torch.allclose(y[:, 4:], y2) and torch.allclose(fin[1:], f2)


@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("w", [2, 4])
def test_packed_conv_equals_reference(with_state, bias, w):
    g = torch.Generator().manual_seed(w)
    lens = [1, 2, 7, 3, 16]  # some shorter than the conv window's past (w - 1 = 3)
    d = 6
    cu = [0]
    for n in lens:
        cu.append(cu[-1] + n)
    x = torch.randn(1, cu[-1], d, generator=g)
    weight = torch.randn(d, w, generator=g)
    b = torch.randn(d, generator=g) if bias else None
    h0 = torch.randn(len(lens), d, w - 1, generator=g) if with_state else None
    y_ref, f_ref = causal_conv1d_ref(x, weight, b, initial_state=h0, cu_seqlens=torch.tensor(cu))
    y, f = packed_causal_conv1d(x[0], weight, b, h0, cu)
    torch.testing.assert_close(y, y_ref[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(f, f_ref, rtol=0, atol=0)


def test_packed_conv_in_bf16_sums_in_fp32_and_rounds_once():
    """bf16 input: the output is bf16, exactly the fp32 sum of the same bf16 values rounded once; silu after it."""
    g = torch.Generator().manual_seed(7)
    lens, d, w = [3, 9, 1, 12], 8, 4
    cu = [0]
    for n in lens:
        cu.append(cu[-1] + n)
    x = torch.randn(cu[-1], d, generator=g).bfloat16()
    weight, b = torch.randn(d, w, generator=g).bfloat16(), torch.randn(d, generator=g).bfloat16()
    h0 = torch.randn(len(lens), d, w - 1, generator=g).bfloat16()
    y, f = packed_causal_conv1d(x, weight, b, h0, cu, activation=None)
    y32, f32 = packed_causal_conv1d(x.float(), weight.float(), b.float(), h0.float(), cu, activation=None)
    assert y.dtype == torch.bfloat16 and f.dtype == torch.bfloat16
    assert torch.equal(y, y32.bfloat16()) and torch.equal(f.float(), f32)
    act, _ = packed_causal_conv1d(x, weight, b, h0, cu)  # silu runs on the rounded sum, in bf16
    assert torch.equal(act, torch.nn.functional.silu(y))
