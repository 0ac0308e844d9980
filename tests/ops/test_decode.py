"""CPU tests of the fused decode step's reference and its dispatch."""

import functools
import json
import math

import pytest
import torch
import torch.nn.functional as F

from m1.ops import dispatch
from m1.ops.conv import causal_conv1d_ref, causal_conv1d_step_ref
from m1.ops.decode import mamba2_decode_step, mamba2_decode_step_cpu, mamba2_decode_step_ref, mamba2_sequence_ref, split_zxbcdt
from m1.ops.norm import gated_rms_norm_ref
from m1.ops.ssd import ssd_chunked_ref, ssd_step_ref


def _layer(H=4, P=3, G=2, N=5, W=4, dtype=torch.float64, seed=0, slots=6, b=3):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=dtype)  # noqa: E731
    inner, conv_dim = H * P, H * P + 2 * G * N
    return dict(
        H=H, P=P, G=G, N=N, W=W, inner=inner, conv_dim=conv_dim,
        conv_state=r(slots, conv_dim, W - 1), ssm_state=r(slots, H, P, N).float() if dtype != torch.float64 else r(slots, H, P, N),
        conv_weight=r(conv_dim, W), conv_bias=r(conv_dim), dt_bias=r(H), A=-torch.exp(r(H)), D=r(H), norm_weight=r(inner),
        zxbcdt=lambda n: r(n, inner + conv_dim + H),
        slot_ids=torch.randperm(slots, generator=gen)[:b],
    )


def _kw(t, eps=1e-6, dt_limit=(0.0, math.inf)):
    return dict(n_heads=t["H"], head_dim=t["P"], n_groups=t["G"], state_size=t["N"], eps=eps, dt_limit=dt_limit)


def _params(t):
    return t["conv_weight"], t["conv_bias"], t["dt_bias"], t["A"], t["D"], t["norm_weight"]


@pytest.mark.parametrize("dt_limit", [(0.0, math.inf), (0.01, 0.5)])
def test_fused_reference_equals_unfused_composition(dt_limit):
    t = _layer()
    zx = t["zxbcdt"](3)
    slots = t["slot_ids"]
    cs, ss = t["conv_state"].clone(), t["ssm_state"].clone()
    y = mamba2_decode_step_ref(zx, cs, ss, slots, *_params(t), **_kw(t, dt_limit=dt_limit))

    # the same step by hand, from the unfused references
    z, xBC, dt = split_zxbcdt(zx, t["H"], t["P"], t["G"], t["N"])
    xBC, new_cs = causal_conv1d_step_ref(xBC, t["conv_state"][slots], t["conv_weight"], t["conv_bias"])
    x, B, C = torch.split(xBC, [t["inner"], t["G"] * t["N"], t["G"] * t["N"]], dim=-1)
    dt = F.softplus(dt + t["dt_bias"]).clamp(*dt_limit)
    y2, new_ss = ssd_step_ref(t["ssm_state"][slots], x.reshape(3, t["H"], t["P"]), dt, t["A"], B.reshape(3, t["G"], t["N"]), C.reshape(3, t["G"], t["N"]), t["D"])
    y2 = gated_rms_norm_ref(y2.reshape(3, -1), z, t["norm_weight"], eps=1e-6, group_size=t["inner"] // t["G"])

    assert (y - y2).abs().max() <= 1e-12
    assert torch.equal(cs[slots], new_cs) and torch.equal(ss[slots], new_ss)
    others = torch.ones(cs.shape[0], dtype=torch.bool)
    others[slots] = False
    assert torch.equal(cs[others], t["conv_state"][others])
    assert torch.equal(ss[others], t["ssm_state"][others])


def test_decode_steps_after_chunked_prefill_equal_full_layer():
    """Prefill T tokens (full conv + chunked SSD), then single steps: same outputs as the
    full-sequence path over T + k tokens (the generation-vs-forward check of mamba)."""
    t = _layer(H=4, P=3, G=2, N=5, slots=4, b=2, seed=1)
    T, K, b = 23, 9, 2
    zx = t["zxbcdt"](b * (T + K)).reshape(b, T + K, -1)
    chunked = functools.partial(ssd_chunked_ref, chunk_size=8)
    y_all, _, _ = mamba2_sequence_ref(zx, *_params(t), **_kw(t), ssd=chunked)
    _, conv_fin, ssm_fin = mamba2_sequence_ref(zx[:, :T], *_params(t), **_kw(t), ssd=chunked)
    slots = torch.tensor([3, 1])
    cs = torch.zeros(4, t["conv_dim"], t["W"] - 1, dtype=torch.float64)
    ss = torch.zeros(4, t["H"], t["P"], t["N"], dtype=torch.float64)
    cs[slots], ss[slots] = conv_fin, ssm_fin
    for i in range(T, T + K):
        y = mamba2_decode_step_ref(zx[:, i], cs, ss, slots, *_params(t), **_kw(t))
        assert (y - y_all[:, i]).abs().max() <= 1e-5, i  # the norm computes in fp32


def test_sequence_reference_is_the_unfused_composition():
    """`mamba2_sequence_ref` is exactly conv + softplus + SSD + gated norm, composed by hand."""
    t = _layer(seed=2)
    H, P, G, N, inner, b, l = t["H"], t["P"], t["G"], t["N"], t["inner"], 2, 11
    zx = t["zxbcdt"](b * l).reshape(b, l, -1)
    z, xBC, dt_raw = split_zxbcdt(zx, H, P, G, N)
    xc, conv_fin = causal_conv1d_ref(xBC, t["conv_weight"], t["conv_bias"])
    x, B, C = torch.split(xc, [inner, G * N, G * N], dim=-1)
    dt = F.softplus(dt_raw + t["dt_bias"])
    y, fin = ssd_chunked_ref(x.reshape(b, l, H, P), dt, t["A"], B.reshape(b, l, G, N), C.reshape(b, l, G, N), t["D"])
    want = gated_rms_norm_ref(y.reshape(b, l, inner), z, t["norm_weight"], eps=1e-6, group_size=inner // G)
    got, conv_got, fin_got = mamba2_sequence_ref(zx, *_params(t), **_kw(t))
    assert torch.equal(got, want) and torch.equal(conv_got, conv_fin) and torch.equal(fin_got, fin)


def test_dispatch_on_cpu_takes_the_cpu_path_and_ref_when_pinned_or_with_gradients():
    t = _layer(dtype=torch.float32)
    zx = t["zxbcdt"](3)
    assert dispatch.chosen_name("mamba2_decode_step", zx) == "cpu"
    assert dispatch.chosen_name("mamba2_decode_step", zx, needs_grad=True) == "ref"
    cs1, ss1 = t["conv_state"].clone(), t["ssm_state"].clone()
    cs2, ss2 = t["conv_state"].clone(), t["ssm_state"].clone()
    with dispatch.force("ref"):
        y1 = mamba2_decode_step(zx, cs1, ss1, t["slot_ids"], *_params(t), **_kw(t))
    y2 = mamba2_decode_step_ref(zx, cs2, ss2, t["slot_ids"], *_params(t), **_kw(t))
    assert torch.equal(y1, y2) and torch.equal(ss1, ss2) and torch.equal(cs1, cs2)


@pytest.mark.parametrize("slots", [
    pytest.param([0, 1, 2, 3, 4, 5], id="every-slot-in-order"),
    pytest.param([2, 3, 4], id="a-range-in-order"),
    pytest.param([4, 2, 5, 3], id="a-range-permuted"),
    pytest.param([5, 0, 3], id="scattered"),
    pytest.param([1], id="one"),
])
@pytest.mark.parametrize("dtype, G", [(torch.float64, 2), (torch.float32, 2), (torch.float32, 4)])
def test_cpu_path_equals_reference_over_several_steps(slots, dtype, G):
    """In place on a slot range (sorted or not) or gathered: the reference's outputs and states,
    and every other slot untouched, step after step."""
    t = _layer(H=4, P=8, G=G, N=6, dtype=dtype, seed=3, slots=7)
    slot_ids = torch.tensor(slots)
    cs_ref, ss_ref = t["conv_state"].clone(), t["ssm_state"].clone()
    cs, ss = t["conv_state"].clone(), t["ssm_state"].clone()
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    rtol = 1e-10 if dtype == torch.float64 else 1e-5
    for step in range(4):
        zx = t["zxbcdt"](len(slots))
        want = mamba2_decode_step_ref(zx, cs_ref, ss_ref, slot_ids, *_params(t), **_kw(t, dt_limit=(0.0, 2.0)))
        got = mamba2_decode_step_cpu(zx, cs, ss, slot_ids, *_params(t), **_kw(t, dt_limit=(0.0, 2.0)))
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want, rtol=rtol, atol=tol)
        torch.testing.assert_close(ss, ss_ref, rtol=rtol, atol=tol)
        assert torch.equal(cs, cs_ref)
    others = torch.ones(cs.shape[0], dtype=torch.bool)
    others[slot_ids] = False
    assert torch.equal(cs[others], t["conv_state"][others]) and torch.equal(ss[others], t["ssm_state"][others])


@pytest.mark.parametrize("block_rows", [1, 2, 3])
@pytest.mark.parametrize("slots", [[0, 1, 2, 3, 4, 5, 6], [6, 1, 4, 0, 2]], ids=["every-slot", "scattered"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cpu_path_in_blocks_of_rows_equals_reference(monkeypatch, block_rows, slots, dtype):
    """The state updated a block of rows at a time (`STATE_BLOCK_BYTES` set to 1, 2 or 3 rows, the last block
    short): the reference's outputs and states, every other slot untouched."""
    import m1.ops.decode as decode

    t = _layer(H=4, P=8, G=2, N=6, dtype=dtype, seed=5, slots=8)
    elem = t["ssm_state"].element_size()
    monkeypatch.setattr(decode, "STATE_BLOCK_BYTES", block_rows * 4 * 8 * 6 * elem)
    slot_ids = torch.tensor(slots)
    cs_ref, ss_ref = t["conv_state"].clone(), t["ssm_state"].clone()
    cs, ss = t["conv_state"].clone(), t["ssm_state"].clone()
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for step in range(3):
        zx = t["zxbcdt"](len(slots))
        want = mamba2_decode_step_ref(zx, cs_ref, ss_ref, slot_ids, *_params(t), **_kw(t))
        got = decode.mamba2_decode_step_cpu(zx, cs, ss, slot_ids, *_params(t), **_kw(t))
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)
        torch.testing.assert_close(ss, ss_ref, rtol=tol, atol=tol)
    others = torch.ones(ss.shape[0], dtype=torch.bool)
    others[slot_ids] = False
    assert torch.equal(ss[others], t["ssm_state"][others])


def test_wrong_width_is_refused():
    t = _layer()
    with pytest.raises(ValueError, match="channels"):
        split_zxbcdt(torch.zeros(1, 7), t["H"], t["P"], t["G"], t["N"])


def test_ssd_chunked_fla_and_own_triton_are_registered_for_cuda_only():
    x = torch.zeros(1, 2, 2, 2)
    impls = dispatch._REGISTRY["ssd_chunked"]
    assert [i.name for i in impls] == ["fla", "triton", "ref"]
    assert [i.grad for i in impls] == [False, True, True]  # fla-core's forward has no backward of ours
    assert dispatch.chosen_name("ssd_chunked", x) == "ref"
    assert dispatch.chosen_name("ssd_chunked", x, needs_grad=True) == "ref"


def test_forward_only_impls_are_skipped_when_gradients_are_needed():
    op = "_test_grad_op"
    dispatch._REGISTRY.pop(op, None)
    dispatch.register(op, dispatch.Impl("ref", lambda x: True, lambda: "ref-fn"))
    dispatch.register(op, dispatch.Impl("fwd_only", lambda x: True, lambda: "fwd-fn", grad=False))
    try:
        x = torch.zeros(2, requires_grad=True)
        assert dispatch.chosen_name(op, x) == "fwd_only" and dispatch.choose(op, x) == "fwd-fn"
        assert dispatch.needs_grad(x, None) and dispatch.chosen_name(op, x, needs_grad=True) == "ref"
        with torch.no_grad():
            assert not dispatch.needs_grad(x)
        with dispatch.force("fwd_only"):
            assert dispatch.chosen_name(op, x, needs_grad=True) == "fwd_only"  # a pin is a pin
        with dispatch.force("nope"), pytest.raises(RuntimeError, match="no implementation named"):
            dispatch.choose(op, x)
    finally:
        dispatch._REGISTRY.pop(op)


@pytest.mark.parametrize(
    "G, HPG, P, N, want",
    [
        (192, 1, 16, 16, (8, 2)),  # m1-3b: 8 groups of 256 state elements, 2 warps (H100 sweep, 2026-12-07)
        (24, 1, 128, 128, (1, 4)),  # m1-3b-s128: one 128 x 128 group, 4 warps
        (3, 3, 64, 64, (1, 4)),  # SmolLM2 head-sized: 3 heads of 64 x 64 in a group already exceed 2,048
        (6, 1, 16, 16, (2, 2)),  # groups must divide G: 6 stops at 2
    ],
)
def test_decode_launch_shape(G, HPG, P, N, want):
    """The launch `studies/decode_sweep.py` found fastest, pinned so a change to the rule shows here."""
    pytest.importorskip("triton")
    from m1.ops.triton.decode import launch_shape

    assert launch_shape(G, HPG, P, N) == want


_INTERPRET_DECODE = r"""
import json, math, torch
from m1.ops.decode import mamba2_decode_step_ref
from m1.ops.triton.decode import launch_shape, mamba2_decode_step_triton
errs = {}
for H, P, G, N, W in [(16, 16, 16, 16, 4), (4, 32, 2, 64, 4), (4, 16, 4, 16, 3), (4, 16, 2, 16, 2)]:
    g = torch.Generator().manual_seed(H + N + W)
    r = lambda *s: torch.randn(*s, generator=g)
    inner, conv_dim = H * P, H * P + 2 * G * N
    kw = dict(n_heads=H, head_dim=P, n_groups=G, state_size=N, eps=1e-5, dt_limit=(0.0, math.inf))
    params = (r(conv_dim, W) * 0.5, r(conv_dim) * 0.1, r(H) - 1.0, -torch.exp(r(H) * 0.5), r(H), 1.0 + 0.1 * r(inner))
    cs, ss, zx, slots = r(6, conv_dim, W - 1), r(6, H, P, N), r(3, inner + conv_dim + H), torch.tensor([4, 0, 2])
    cs1, ss1, cs2, ss2 = cs.clone(), ss.clone(), cs.clone(), ss.clone()
    y1 = mamba2_decode_step_ref(zx, cs1, ss1, slots, *params, **kw)
    y2 = mamba2_decode_step_triton(zx, cs2, ss2, slots, *params, **kw)
    rel = lambda p, q: ((p - q).norm() / q.norm()).item()
    errs[f"{H}x{P}/{G}x{N} width {W} launch {launch_shape(G, H // G, P, N)}"] = [rel(y2, y1), rel(ss2, ss1), float(torch.equal(cs2, cs1))]
print(json.dumps(errs))
"""


def test_decode_kernel_matches_reference_under_interpreter():
    """The fused step at its default launch (several groups a program, and one group of 2 heads; conv widths 4, 3
    and 2) equals the reference step on fresh inputs, on the CPU through Triton's interpreter."""
    pytest.importorskip("triton")
    import os
    import subprocess
    import sys

    env = dict(os.environ, TRITON_INTERPRET="1")
    res = subprocess.run([sys.executable, "-c", _INTERPRET_DECODE], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    errs = json.loads(res.stdout.strip().splitlines()[-1])
    assert len(errs) == 4
    for name, (y_err, state_err, conv_equal) in errs.items():
        assert y_err < 1e-5 and state_err < 1e-5 and conv_equal == 1.0, (name, errs)
