import torch

from m1.ops.norm import gated_rms_norm_ref


def test_grouped_norm_normalises_each_group():
    g = torch.Generator().manual_seed(0)
    y, z = torch.randn(2, 3, 8, generator=g), torch.randn(2, 3, 8, generator=g)
    out = gated_rms_norm_ref(y, z, torch.ones(8), eps=0.0, group_size=4)
    grouped = out.view(2, 3, 2, 4)
    assert torch.allclose(grouped.pow(2).mean(-1), torch.ones(2, 3, 2), atol=1e-5)


def test_constant_gate_is_removed_by_the_norm():
    """Why attention init may use a constant z: norm(y * c) == norm(y) for c > 0."""
    g = torch.Generator().manual_seed(1)
    y = torch.randn(4, 16, generator=g)
    w = torch.rand(16, generator=g)
    a = gated_rms_norm_ref(y, torch.full_like(y, 3.0), w, eps=0.0, group_size=8)
    b = gated_rms_norm_ref(y, None, w, eps=0.0, group_size=8)
    assert torch.allclose(a, b, atol=1e-5)


_INTERPRET = r"""
import json, torch
from m1.ops.triton.norm import gated_rms_norm_triton
from m1.ops.norm import gated_rms_norm_ref
res = []
g = torch.Generator().manual_seed(0)
for dt in (torch.float32, torch.bfloat16, "mixed"):  # mixed: y fp32 (an SSD output), z and weight bf16
    ydt, zdt = (torch.float32, torch.bfloat16) if dt == "mixed" else (dt, dt)
    for rows, D, G, has_z in ((5, 48, 16, True), (3, 96, 32, False), (7, 40, 40, True)):  # 40: a group that is no power of 2
        y = torch.randn(rows, D, generator=g).to(ydt).requires_grad_()
        z = torch.randn(rows, D, generator=g).to(zdt).requires_grad_() if has_z else None
        w = (1 + 0.1 * torch.randn(D, generator=g)).to(zdt).requires_grad_()
        ins = [t for t in (y, z, w) if t is not None]
        out = gated_rms_norm_triton(y, z, w, eps=1e-5, group_size=G)
        dout = torch.randn(rows, D, generator=g).to(out.dtype)
        got = torch.autograd.grad(out, ins, dout)
        ins64 = [t.detach().double().requires_grad_() for t in ins]
        y64, w64 = ins64[0], ins64[-1]
        ref = gated_rms_norm_ref(y64, ins64[1] if has_z else None, w64, eps=1e-5, group_size=G)
        want = torch.autograd.grad(ref, ins64, dout.double())
        rel = lambda a, b: ((a.double() - b).abs().max() / b.abs().max()).item()
        same = gated_rms_norm_ref(*[t.detach() if t is not None else None for t in (y, z, w)], eps=1e-5, group_size=G)
        res.append(dict(dtype=str(dt), out=rel(out, ref), grads=[rel(a, b) for a, b in zip(got, want)],
                        dtypes=[str(out.dtype), str(same.dtype)] + [f"{a.dtype}/{b.dtype}" for a, b in zip(got, ins)]))
        # out_dtype: the kernel writes the product in bf16 directly; the reference casts after it. On the
        # GPU both round to nearest (the same values); the interpreter's bf16 store may round the other
        # way, so within one bf16 ulp here. The gradients are the same (dout arrives in bf16 either way).
        out_b = gated_rms_norm_triton(y, z, w, eps=1e-5, group_size=G, out_dtype=torch.bfloat16)
        dout_b = dout.to(torch.bfloat16)
        got_b = torch.autograd.grad(out_b, ins, dout_b)
        out_f = gated_rms_norm_triton(y, z, w, eps=1e-5, group_size=G)  # the default result, then a cast
        want_b = torch.autograd.grad(out_f.to(torch.bfloat16), ins, dout_b)
        ref_b = gated_rms_norm_ref(y, z, w, eps=1e-5, group_size=G, out_dtype=torch.bfloat16)
        res[-1]["out_dtype"] = [str(out_b.dtype), ((out_b.float() - out_f.detach()).abs() / out_f.detach().abs().clamp(min=1e-30)).max().item(),
                                max((a.double() - b.double()).abs().max().item() for a, b in zip(got_b, want_b)),
                                str(ref_b.dtype), rel(ref_b, ref)]
print(json.dumps(res))
"""


def test_triton_kernel_matches_the_float64_reference_under_the_interpreter():
    """The Triton gated RMSNorm (forward and backward) run by Triton's CPU interpreter: outputs and the
    gradients of y, z and weight against the reference in float64, fp32 and bf16, with and without z."""
    import json
    import os
    import subprocess
    import sys

    import pytest

    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    res = subprocess.run([sys.executable, "-c", _INTERPRET], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    for r in json.loads(res.stdout.strip().splitlines()[-1]):
        tol = 1e-6 if r["dtype"] == "torch.float32" else 2e-2
        assert r["out"] < tol and max(r["grads"]) < tol, r
        assert r["dtypes"][0] == r["dtypes"][1] and all(a == b for a, b in (d.split("/") for d in r["dtypes"][2:])), r
        kernel_dtype, out_diff, grad_diff, ref_dtype, ref_rel = r["out_dtype"]
        assert kernel_dtype == ref_dtype == "torch.bfloat16" and out_diff <= 2**-7 and grad_diff == 0 and ref_rel < 2e-2, r


def test_out_dtype_rounds_the_reference_once_more():
    """out_dtype is a cast of the default result (values and gradients), what a consumer's cast would do."""
    g = torch.Generator().manual_seed(2)
    y = torch.randn(3, 5, 32, generator=g).to(torch.bfloat16).requires_grad_()
    z = torch.randn(3, 5, 32, generator=g).to(torch.bfloat16).requires_grad_()
    w = (1 + 0.1 * torch.randn(32, generator=g)).requires_grad_()
    dout = torch.randn(3, 5, 32, generator=g).to(torch.bfloat16)
    out = gated_rms_norm_ref(y, z, w, eps=1e-5, group_size=8, out_dtype=torch.bfloat16)
    want = gated_rms_norm_ref(y, z, w, eps=1e-5, group_size=8)
    assert want.dtype == torch.float32 and out.dtype == torch.bfloat16
    assert torch.equal(out, want.to(torch.bfloat16))
    for a, b in zip(torch.autograd.grad(out, (y, z, w), dout), torch.autograd.grad(want.to(torch.bfloat16), (y, z, w), dout)):
        assert torch.equal(a, b)


def test_cpu_dispatches_to_the_reference():
    from m1.ops import dispatch

    assert dispatch.chosen_name("gated_rms_norm", torch.zeros(2, 4)) == "ref"
    assert [i.name for i in dispatch._REGISTRY["gated_rms_norm"]] == ["triton", "ref"]
