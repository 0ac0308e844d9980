"""Paged decode attention (CPU): the reference equals attention over the contiguous sequence,
and the CPU fast path (`sdpa`) equals the reference."""

import pytest
import torch

from m1.ops import dispatch
from m1.ops.paged_attention import paged_decode, paged_decode_ref, paged_decode_sdpa
from m1.ops.workspace import Workspace


def _case(g, dtype, b=3, H=4, KVH=2, d=16, bs=4, nblocks=20, cols=5):
    k = torch.randn(nblocks, bs, KVH, d, generator=g, dtype=dtype)
    v = torch.randn(nblocks, bs, KVH, d, generator=g, dtype=dtype)
    q = torch.randn(b, H, d, generator=g, dtype=dtype)
    tables = (torch.randperm(nblocks - 1, generator=g)[: b * cols].view(b, cols) + 1).int()
    return q, k, v, tables


def test_reference_equals_dense_attention_and_float64_dispatches_to_it():
    g = torch.Generator().manual_seed(0)
    b, H, KVH, d, bs, cols = 3, 4, 2, 16, 4, 5
    q, k, v, tables = _case(g, torch.float64)
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


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("heads, kv_heads", [(4, 2), (9, 3), (4, 4)])
def test_cpu_sdpa_path_equals_reference(dtype, atol, heads, kv_heads):
    g = torch.Generator().manual_seed(1)
    q, k, v, tables = _case(g, dtype, b=6, H=heads, KVH=kv_heads, d=32, bs=16, nblocks=40, cols=6)
    lens = torch.tensor([1, 16, 17, 40, 96, 5]).int()
    assert dispatch.chosen_name("paged_decode", q) == "sdpa"
    ws = Workspace()
    for max_blocks in (None, 6, 7):  # every column, exactly the needed ones, a bound past the table
        ref = paged_decode_ref(q, k, v, tables, lens, 0.3, max_blocks=max_blocks)
        for out in (paged_decode_sdpa(q, k, v, tables, lens, 0.3, max_blocks=max_blocks),
                    paged_decode(q, k, v, tables, lens, 0.3, max_blocks=max_blocks, workspace=ws)):
            assert out.dtype == dtype and out.shape == ref.shape
            torch.testing.assert_close(out.float(), ref.float(), rtol=0, atol=atol)
    big = ws.nbytes
    paged_decode(q[:2], k, v, tables[:2], lens[:2], 0.3, workspace=ws)  # a smaller batch reuses the buffers
    assert ws.nbytes == big
    with dispatch.force("ref"):
        assert torch.equal(paged_decode(q, k, v, tables, lens, 0.3), paged_decode_ref(q, k, v, tables, lens, 0.3))


@pytest.mark.parametrize("blocks", [
    pytest.param([1, 2, 3, 4], id="a-range-in-order"),
    pytest.param([3, 1, 4, 2], id="a-range-permuted"),
    pytest.param([5, 1, 4, 2], id="a-range-with-a-gap"),  # rows 1..5 attended on the view, row 3 idle
    pytest.param([0, 5, 2, 3], id="scattered"),  # gaps over a quarter of the batch: gathered
])
def test_cpu_sdpa_path_on_one_block_per_sequence_equals_reference(blocks):
    """One block per row (the engine's CPU layout): a range of blocks, in any order and with gaps of at
    most a quarter of the batch (finished sequences), is attended as a view of the pool (no gather); any
    other set is gathered. Both equal the reference, with `max_len`
    cutting the positions read."""
    g = torch.Generator().manual_seed(2)
    q, k, v, _ = _case(g, torch.float32, b=4, H=6, KVH=2, d=16, bs=48, nblocks=6, cols=1)
    tables = torch.tensor(blocks, dtype=torch.int32)[:, None]
    for lens, max_len in (([1, 30, 48, 17], None), ([1, 30, 48, 17], 48), ([1, 30, 29, 17], 31)):  # max_len > every length
        lens = torch.tensor(lens).int()
        ref = paged_decode_ref(q, k, v, tables, lens, 0.25)
        torch.testing.assert_close(paged_decode_sdpa(q, k, v, tables, lens, 0.25, max_blocks=1, max_len=max_len), ref,
                                   rtol=0, atol=1e-5)


def test_contiguous_range():
    from m1.ops.slots import contiguous_range, inverse

    assert contiguous_range(torch.tensor([3, 4, 5])) == (3, None)
    lo, order = contiguous_range(torch.tensor([5, 3, 4]))
    assert lo == 3 and order.tolist() == [1, 2, 0] and inverse(order).tolist() == [2, 0, 1]
    assert contiguous_range(torch.tensor([3, 5])) is None
    assert contiguous_range(torch.tensor([3, 3, 4])) is None  # not a permutation (3 repeated, 5 missing)
    assert contiguous_range(torch.tensor([4, 3, 3])) is None
    assert contiguous_range(torch.tensor([], dtype=torch.long)) is None


def test_covering_range():
    from m1.ops.slots import covering_range

    assert covering_range(torch.tensor([3, 4, 5]), 0) == (3, 3)
    assert covering_range(torch.tensor([7, 3, 5]), 2) == (3, 5)  # 4 and 6 idle
    assert covering_range(torch.tensor([7, 3, 5]), 1) is None
    assert covering_range(torch.tensor([3, 5, 3]), 5) is None  # a block named twice
    assert covering_range(torch.tensor([], dtype=torch.long), 4) is None


def test_cpu_sdpa_path_reads_the_pool_in_place_across_gaps(monkeypatch):
    """With a few finished rows' blocks missing from a busy range, the CPU path gathers nothing
    (`index_select` never sees the pool) and still equals the reference."""
    import m1.ops.paged_attention as PA

    g = torch.Generator().manual_seed(3)
    q, k, v, _ = _case(g, torch.float32, b=8, H=6, KVH=2, d=16, bs=32, nblocks=12, cols=1)
    tables = torch.tensor([9, 0, 1, 2, 3, 5, 6, 7], dtype=torch.int32)[:, None]  # 4 and 8 idle
    lens = torch.tensor([1, 5, 32, 17, 9, 30, 2, 31]).int()
    seen = []
    real = torch.index_select
    monkeypatch.setattr(torch, "index_select", lambda t, *a, **kw: seen.append(t.shape) or real(t, *a, **kw))
    out = PA.paged_decode_sdpa(q, k, v, tables, lens, 0.25, max_blocks=1, max_len=33, workspace=Workspace())
    monkeypatch.undo()
    assert k.shape not in seen
    torch.testing.assert_close(out, paged_decode_ref(q, k, v, tables, lens, 0.25), rtol=0, atol=1e-5)
