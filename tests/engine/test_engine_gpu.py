"""GPU fast paths against their references: the Triton paged-decode kernel, CUDA-graph decode,
and the engine on CUDA against the full forward. Skipped without CUDA."""

import pytest
import torch

from m1.engine import Engine, SamplingParams
from m1.engine.paged_attention import paged_decode_ref
from tests.engine.conftest import full_logits, make_model, prompts_of

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("heads,kv_heads,head_dim,block", [(24, 8, 128, 64), (4, 2, 16, 16), (8, 8, 64, 32)])
def test_triton_paged_decode_matches_reference(dtype, heads, kv_heads, head_dim, block):
    from m1.engine.triton_paged import paged_decode_triton

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


def test_graphs_recaptured_after_parameters_move():
    model = make_model("hybrid").cuda()
    eng = Engine(model, max_batch_size=4, max_model_len=64)
    p = SamplingParams(temperature=0, max_tokens=6)
    eng.generate([[1, 2, 3]], p, use_tqdm=False)
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone() * 2)  # re-allocated
    out = eng.generate([[1, 2, 3]], p, use_tqdm=False)[0].outputs[0]
    ref = full_logits(model, [1, 2, 3], out.token_ids).argmax(-1).tolist()
    assert out.token_ids == ref


def test_cuda_graph_decode_equals_eager():
    model = make_model("hybrid").cuda().to(torch.bfloat16)
    prompts = prompts_of([3, 30, 17, 9, 50])
    params = SamplingParams(n=2, temperature=0.8, top_k=30, max_tokens=24, seed=0)
    outs = {}
    for graphs in (True, False):
        eng = Engine(model, max_batch_size=8, max_model_len=128, use_cuda_graphs=graphs, poll_interval=5)
        outs[graphs] = eng.generate(prompts, params, use_tqdm=False)
    for a, b in zip(outs[True], outs[False]):
        for ca, cb in zip(a.outputs, b.outputs):
            assert ca.token_ids == cb.token_ids
            assert torch.allclose(torch.tensor(ca.logprobs), torch.tensor(cb.logprobs), atol=1e-5)


@pytest.mark.parametrize("kind", ["hybrid", "attention", "mamba"])
def test_cuda_engine_matches_full_forward(kind):
    model = make_model(kind).cuda()
    prompts = prompts_of([5, 40, 70])
    eng = Engine(model, max_batch_size=4, max_model_len=128, prefill_chunk=32)
    outs = eng.generate(prompts, SamplingParams(temperature=0, max_tokens=16), use_tqdm=False)
    for p, o in zip(prompts, outs):
        c = o.outputs[0]
        logits = full_logits(model, p, c.token_ids)
        logp = torch.log_softmax(logits, -1)
        chosen = logp.gather(1, torch.tensor(c.token_ids, device="cuda")[:, None])[:, 0]
        assert c.finish_reason == "length" and len(c.token_ids) == 16
        # Triton dots run in tf32: allow near-ties, but every token must be (near) the argmax.
        assert (logp.max(-1).values - chosen).max() < 1e-2
        assert (chosen.cpu() - torch.tensor(c.logprobs)).abs().max() < 1e-2
