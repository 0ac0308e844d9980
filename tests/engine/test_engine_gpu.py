"""GPU fast paths of the engine: CUDA-graph decode, and the engine on CUDA against the full forward.
Skipped without CUDA. (The paged-attention kernel against its reference is in tests/ops.)"""

import pytest
import torch

from m1.engine import Engine, SamplingParams
from tests.engine.conftest import full_logits, make_model, optimizer_steps, prompts_of

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_preemption_by_recompute_tolerance(dtype):
    """Recompute replaces a sample's decode-built state by a prefill-built one, and on the GPU the
    two differ by rounding (tf32 dots in fp32; bf16 activations in bf16). The tolerance stated
    here: every token of a preempted run stays (near) the full forward's argmax, within the same
    bound as an unconstrained run (1e-2 in fp32, 0.25 nats in bf16), and its logprobs agree with
    the full forward to that bound; tokens after a near-tie may differ from an unconstrained run."""
    from m1.engine.cache import kv_bytes_per_token, state_bytes_per_slot

    model = make_model("hybrid").cuda().to(dtype)
    prompts = prompts_of([20, 3, 33, 17, 9, 26, 12, 40])
    cfg = model.config
    budget = state_bytes_per_slot(cfg, dtype) * 9 + kv_bytes_per_token(cfg, dtype) * (10 * 16 + 16)
    eng = Engine(model, max_batch_size=8, max_model_len=128, block_size=16, poll_interval=4, memory_budget_gb=budget / 2**30)
    outs = eng.generate(prompts, SamplingParams(temperature=0, max_tokens=40, ignore_eos=True), use_tqdm=False)
    assert eng.stats.last_preemptions > 0
    tol = 1e-2 if dtype == torch.float32 else 0.25
    for p, o in zip(prompts, outs):
        c = o.outputs[0]
        assert c.finish_reason == "length" and len(c.token_ids) == 40
        logp = torch.log_softmax(full_logits(model, p, c.token_ids), -1)
        chosen = logp.gather(1, torch.tensor(c.token_ids, device="cuda")[:, None])[:, 0]
        assert (logp.max(-1).values - chosen).max() < tol
        assert (chosen.cpu() - torch.tensor(c.logprobs)).abs().max() < tol


@pytest.mark.parametrize("kind", ["hybrid", "attention", "mamba"])
def test_cuda_graphs_serve_weights_after_optimizer_steps(kind):
    """One engine over weights being trained (on-policy distillation, GRPO): after AdamW steps on every parameter
    (in place: the captured decode graphs keep reading the same addresses), greedy tokens are the trained model's
    full-forward argmax, and they moved."""
    model = make_model(kind).cuda()
    eng = Engine(model, max_batch_size=4, max_model_len=64)
    prompt = prompts_of([10])
    p = SamplingParams(temperature=0, max_tokens=8)
    before = eng.generate(prompt, p, use_tqdm=False)[0].outputs[0].token_ids
    assert eng.graphs is not None, "decode CUDA graphs were expected on this path"
    optimizer_steps(model, prompt[0])
    model.eval()
    after = eng.generate(prompt, p, use_tqdm=False)[0].outputs[0].token_ids
    assert after != before
    assert after == full_logits(model, prompt[0], after).argmax(-1).tolist()
