"""vLLM's hybrid-model invariants (tests/engine/test_invariants.py) on the GPU path: CUDA graphs, the Triton
paged attention, SSD and decode kernels, fp32 (whose dots run in tf32). Skipped without CUDA; run by
studies/gpu_check.sh.

On the CPU the invariants hold exactly. Here two runs that batch rows differently run different kernel
shapes, so they may round differently: greedy outputs must agree token for token until they first differ,
and where they differ the two tokens must be a near tie under the full forward (the same 1e-2 bound
`test_engine_gpu.py` allows between the engine and the full forward). A run against itself after other work
(the slot test) uses the same shapes, so there the outputs must be equal.
(Preemption forced against the full forward on CUDA: `test_engine_gpu.py::test_cuda_preemption_by_recompute_tolerance`.)
"""

import pytest
import torch

from m1.engine import Engine, SamplingParams
from tests.engine.conftest import full_logits, make_model, prompts_of, slot_churn

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

TOL = 1e-2


def _engine(model, **kw):
    kw.setdefault("max_model_len", 96)
    kw.setdefault("poll_interval", 3)
    return Engine(model, **kw)


def _agree_until_near_tie(model, prompt, a, b) -> int:
    """Greedy completions a and b (token ids, logprobs) of one prompt: equal up to their first difference,
    logprobs within TOL there, and that difference a near tie under the full forward. Returns the number of
    tokens compared before it (all of them when none)."""
    n = min(len(a.token_ids), len(b.token_ids))
    for t in range(n):
        if a.token_ids[t] != b.token_ids[t]:
            logp = torch.log_softmax(full_logits(model, prompt, a.token_ids[: t + 1]), -1)[t]
            gap = (logp[a.token_ids[t]] - logp[b.token_ids[t]]).abs().item()
            assert gap < TOL, f"step {t}: tokens {a.token_ids[t]} and {b.token_ids[t]} differ by {gap:.3g} nats: not a near tie"
            return t
        assert abs(a.logprobs[t] - b.logprobs[t]) < TOL, (t, a.logprobs[t], b.logprobs[t])
    assert len(a.token_ids) == len(b.token_ids)
    return n


@pytest.mark.parametrize("kind", ["hybrid", "attention", "mamba"])
def test_cuda_batched_equals_one_prompt_at_a_time(kind):
    model = make_model(kind).cuda()
    prompts = prompts_of([5, 40, 17, 63, 2, 29])
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    batched = _engine(model, max_batch_size=8, max_model_len=128).generate(prompts, params, use_tqdm=False)
    alone = _engine(model, max_batch_size=1, max_model_len=128)
    compared = 0
    for p, o in zip(prompts, batched):
        compared += _agree_until_near_tie(model, p, o.outputs[0], alone.generate([p], params, use_tqdm=False)[0].outputs[0])
    assert compared >= len(prompts) * 24 // 2  # not a near tie at every first step


@pytest.mark.parametrize("kind", ["hybrid", "mamba"])
def test_cuda_n3_with_chunked_prefill_equals_three_single_samples(kind):
    """Greedy n = 3 forked from a chunked prefill (pieces of 4, packs of 6 tokens mixing prompts) against one
    sample prefilled whole and decoded alone."""
    model = make_model(kind).cuda()
    prompts = prompts_of([23, 9, 40])
    chunked = _engine(model, max_batch_size=9, prefill_chunk=4, prefill_tokens=6)
    single = _engine(model, max_batch_size=1)
    forked = chunked.generate(prompts, SamplingParams(n=3, temperature=0, max_tokens=16, ignore_eos=True), use_tqdm=False)
    one = single.generate(prompts, SamplingParams(temperature=0, max_tokens=16, ignore_eos=True), use_tqdm=False)
    compared = 0
    for p, f, o in zip(prompts, forked, one):
        assert len(f.outputs) == 3
        for c in f.outputs:
            compared += _agree_until_near_tie(model, p, c, o.outputs[0])
    assert compared >= 3 * 3 * 16 // 2


@pytest.mark.parametrize("kind", ["hybrid", "mamba"])
def test_cuda_slots_are_clean_after_100_requests(kind):
    """100 requests through two slots (mixed lengths, n of 1 to 3, stop tokens), then probes: equal to the same
    probes on a fresh engine of the same shape (same kernels, same CUDA graphs), sampled and greedy."""
    model = make_model(kind).cuda()
    prompts, params, probes, probe_params = slot_churn()
    fresh = _engine(model, max_batch_size=2).generate(probes, probe_params, use_tqdm=False)
    used = _engine(model, max_batch_size=2)
    outs = used.generate(prompts, params, use_tqdm=False)
    assert any(c.finish_reason == "stop" for o in outs for c in o.outputs)
    again = used.generate(probes, probe_params, use_tqdm=False)
    for a, b in zip(again, fresh, strict=True):
        for x, y in zip(a.outputs, b.outputs, strict=True):
            assert x.token_ids == y.token_ids
            assert torch.allclose(torch.tensor(x.logprobs), torch.tensor(y.logprobs), atol=1e-4)


@pytest.mark.parametrize("kind", ["hybrid", "attention"])
def test_cuda_nano_batches_equal_one_stream(kind):
    """Decode graphs split into 2 and 3 nano-batches on side streams (`Engine(nano_batches=...)`): the same greedy
    tokens as one stream, up to near ties (each nano-batch's GEMMs have other shapes), over uneven row counts
    (the last nano-batch holds the graph bucket's padding rows) and sampled rows alike."""
    model = make_model(kind).cuda()
    prompts = prompts_of([5, 40, 17, 63, 2, 29, 11, 33, 8])
    greedy = SamplingParams(temperature=0, max_tokens=20, ignore_eos=True)
    one = _engine(model, max_batch_size=16, max_model_len=128).generate(prompts, greedy, use_tqdm=False)
    for parts in (2, 3):
        eng = _engine(model, max_batch_size=16, max_model_len=128, nano_batches=parts)
        eng.graphs.nano_min_rows = 1  # every bucket split, small ones included
        split = eng.generate(prompts, greedy, use_tqdm=False)
        compared = sum(_agree_until_near_tie(model, p, a.outputs[0], b.outputs[0]) for p, a, b in zip(prompts, split, one))
        assert compared >= len(prompts) * 20 // 2
        # sampled rows: each row's key and counter pick its tokens, whichever stream decodes it
        sampled = SamplingParams(n=2, temperature=0.8, max_tokens=12, ignore_eos=True, seed=3)
        a = eng.generate(prompts[:4], sampled, use_tqdm=False)
        b = _engine(model, max_batch_size=16, max_model_len=128).generate(prompts[:4], sampled, use_tqdm=False)
        same = sum(x.token_ids == y.token_ids for oa, ob in zip(a, b) for x, y in zip(oa.outputs, ob.outputs))
        assert same >= 6, f"{parts} nano-batches: {same} of 8 sampled completions equal to one stream's"
