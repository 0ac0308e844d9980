"""The Triton paged decode-attention kernel against its reference (m1.ops.paged_attention). Skipped without CUDA."""

import pytest
import torch

from m1.ops import dispatch
from m1.ops.paged_attention import paged_decode_ref

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("heads,kv_heads,head_dim,block", [(24, 8, 128, 64), (4, 2, 16, 16), (8, 8, 64, 32)])
def test_triton_paged_decode_matches_reference(dtype, heads, kv_heads, head_dim, block):
    from m1.ops.triton.paged_attention import paged_decode_triton

    g = torch.Generator(device="cuda").manual_seed(0)
    b, num_blocks, cols = 9, 200, 20
    k = torch.randn(num_blocks, block, kv_heads, head_dim, device="cuda", dtype=dtype, generator=g)
    v = torch.randn(num_blocks, block, kv_heads, head_dim, device="cuda", dtype=dtype, generator=g)
    q = torch.randn(b, heads, head_dim, device="cuda", dtype=dtype, generator=g)
    tables = torch.randperm(num_blocks - 1, device="cuda", generator=g)[: b * cols].view(b, cols).int() + 1
    seq_lens = torch.tensor([1, 2, block - 1, block, block + 1, 3 * block + 5, cols * block, 7, 100], device="cuda").clamp(max=cols * block).int()
    scale = head_dim**-0.5
    ref = paged_decode_ref(q.double(), k.double(), v.double(), tables, seq_lens, scale)
    out = torch.full_like(q, float("nan"))
    out = paged_decode_triton(q, k, v, tables, seq_lens, scale)
    assert torch.isfinite(out).all()
    err = (out.double() - ref).norm() / ref.norm()
    assert err < 1e-2, err


def test_paged_decode_dispatches_to_triton_on_cuda():
    q = torch.zeros(2, 4, 64, device="cuda", dtype=torch.bfloat16)
    assert dispatch.chosen_name("paged_decode", q) == "triton"
