"""Paged decode attention (CPU): the reference equals attention over the contiguous sequence."""

import torch

from m1.ops import dispatch
from m1.ops.paged_attention import paged_decode, paged_decode_ref


def test_reference_equals_dense_attention_and_cpu_dispatches_to_it():
    g = torch.Generator().manual_seed(0)
    b, H, KVH, d, bs, nblocks, cols = 3, 4, 2, 16, 4, 20, 5
    k = torch.randn(nblocks, bs, KVH, d, generator=g, dtype=torch.float64)
    v = torch.randn(nblocks, bs, KVH, d, generator=g, dtype=torch.float64)
    q = torch.randn(b, H, d, generator=g, dtype=torch.float64)
    tables = (torch.randperm(nblocks - 1, generator=g)[: b * cols].view(b, cols) + 1).int()
    lens = torch.tensor([1, 7, cols * bs]).int()
    out = paged_decode(q, k, v, tables, lens)
    assert dispatch.chosen_name("paged_decode", q) == "ref"
    for r in range(b):
        L = int(lens[r])
        kk = k[tables[r].long()].reshape(-1, KVH, d)[:L].repeat_interleave(H // KVH, dim=1)  # (L, H, d)
        vv = v[tables[r].long()].reshape(-1, KVH, d)[:L].repeat_interleave(H // KVH, dim=1)
        p = torch.softmax(torch.einsum("hd,lhd->hl", q[r], kk) / d**0.5, -1)
        assert torch.allclose(out[r], torch.einsum("hl,lhd->hd", p, vv), atol=1e-10)
    assert torch.equal(paged_decode_ref(q, k, v, tables, lens, d**-0.5, max_blocks=cols), out)
