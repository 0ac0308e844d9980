"""The decode step's fused ops: references equal the model's modules (CPU); the Triton kernels
equal the references under the Triton interpreter (CPU, when triton is installed) and on CUDA."""

import json
import os
import subprocess
import sys

import pytest
import torch

from m1.ops.fused import add_rms_norm, add_rms_norm_ref, swiglu, swiglu_ref
from m1.layers.mlp import GatedMLP
from m1.layers.norm import RMSNorm
from m1.ops import dispatch


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_references_equal_the_model_modules(dtype):
    g = torch.Generator().manual_seed(0)
    x, r = torch.randn(4, 48, generator=g).to(dtype), torch.randn(4, 48, generator=g).to(dtype)
    norm = RMSNorm(48, 1e-5).to(dtype)
    with torch.no_grad():
        norm.weight.normal_(generator=g)
        out, res = add_rms_norm_ref(x, r, norm.weight, 1e-5)
        assert torch.equal(res, r + x) and torch.equal(out, norm(r + x))
        out, res = add_rms_norm_ref(x, None, norm.weight, 1e-5)
        assert torch.equal(res, x) and torch.equal(out, norm(x))
        mlp = GatedMLP(48, 40).to(dtype)
        assert torch.equal(mlp.output_linear(swiglu_ref(mlp.input_linear(x))), mlp(x))
    assert dispatch.chosen_name("add_rms_norm", x) == "ref" and dispatch.chosen_name("swiglu", x) == "ref"  # CPU


_INTERPRET = r"""
import json, torch
from m1.ops.triton.fused import add_rms_norm_triton, swiglu_triton
from m1.ops.fused import add_rms_norm_ref, swiglu_ref
errs = {}
for dt in (torch.float32, torch.bfloat16):
    g = torch.Generator().manual_seed(0)
    x, r = torch.randn(5, 300, generator=g).to(dt), torch.randn(5, 300, generator=g).to(dt)
    w = torch.randn(300, generator=g).to(dt)
    (a, ra), (b, rb) = add_rms_norm_triton(x, r, w, 1e-6), add_rms_norm_ref(x, r, w, 1e-6)
    (c, _), (d, _) = add_rms_norm_triton(x, None, w, 1e-6), add_rms_norm_ref(x, None, w, 1e-6)
    gu = torch.randn(3, 2 * 1500, generator=g).to(dt)
    rel = lambda p, q: ((p.float() - q.float()).abs().max() / q.float().abs().max()).item()
    errs[str(dt)] = [rel(a, b), rel(ra, rb), rel(c, d), rel(swiglu_triton(gu), swiglu_ref(gu))]
print(json.dumps(errs))
"""


def test_triton_kernels_match_references_under_interpreter():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    res = subprocess.run([sys.executable, "-c", _INTERPRET], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    errs = json.loads(res.stdout.strip().splitlines()[-1])
    assert max(errs["torch.float32"]) < 1e-5, errs
    assert max(errs["torch.bfloat16"]) < 2e-2, errs  # at most an ulp or so: the interpreter's bf16 rounding


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows,d,inter", [(1, 3072, 8192), (37, 96, 200), (256, 4096, 14336)])
def test_triton_fused_ops_on_cuda(dtype, rows, d, inter):
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(rows, d, device="cuda", generator=g).to(dtype)
    r = torch.randn(rows, d, device="cuda", generator=g).to(dtype)
    w = torch.randn(d, device="cuda", generator=g).to(dtype)
    gu = torch.randn(rows, 2 * inter, device="cuda", generator=g).to(dtype)
    assert dispatch.chosen_name("add_rms_norm", x) == "triton"
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1.6e-2, atol=1.6e-2)
    for res in (r, None):
        out, s = add_rms_norm(x, res, w, 1e-5)
        out_ref, s_ref = add_rms_norm_ref(x, res, w, 1e-5)
        torch.testing.assert_close(s, s_ref, **tol)
        torch.testing.assert_close(out, out_ref, **tol)
    torch.testing.assert_close(swiglu(gu), swiglu_ref(gu), **tol)
