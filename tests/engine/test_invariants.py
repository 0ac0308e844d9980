"""vLLM's hybrid-model invariants (its tests/models/language/generation/test_hybrid.py), as m1 tests.

- batched output equals a loop of one prompt at a time (vLLM `test_batching`):
  `test_engine.py::test_mixed_lengths_equal_each_alone`, every layer mix and both CPU KV layouts;
- n = 3 with chunked prefill equals three single samples (`test_chunked_prefill_with_parallel_sampling`): here;
- a slot's state is clean after 100 requests have used it (`test_state_cleanup`,
  `test_fail_upon_inc_requests_and_finished_requests_lt_available_blocks`): here;
- the same output with preemption forced and without: `test_preemption.py` (greedy and sampled, tokens
  and logprobs, streaming);
- greedy logprobs of the engine and of transformers agree over 64 tokens (`test_models`, `check_logprobs_close`),
  on SmolLM2-135M converted to a 6-of-30 hybrid: here, `slow`. The engine reports the chosen token's
  logprob, not a top 5: the check takes transformers' top 5 at each step and requires the engine's
  token among them with the same logprob, and at a divergence a near tie.

The tiny-model tests run on CPU in the default suite, fp32.
"""

import pytest
import torch

from m1.engine import Engine, SamplingParams
from tests.engine.conftest import KINDS, prompts_of, slot_churn


def _engine(model, **kw):
    kw.setdefault("max_model_len", 96)
    kw.setdefault("poll_interval", 3)
    return Engine(model, **kw)


def _same(outs_a, outs_b, atol=1e-5):
    for a, b in zip(outs_a, outs_b, strict=True):
        for x, y in zip(a.outputs, b.outputs, strict=True):
            assert x.token_ids == y.token_ids
            assert torch.allclose(torch.tensor(x.logprobs), torch.tensor(y.logprobs), atol=atol)


@pytest.mark.parametrize("kind", list(KINDS))
def test_n3_with_chunked_prefill_equals_three_single_samples(models, kind):
    """n = 3 samples forked from one prefill that is chunked (pieces of 4, packs of 6 tokens mixing
    prompts) equal the same three samples each prefilled alone (one slot: every sample is admitted,
    prefilled whole and decoded by itself), sampled and greedy."""
    model = models[kind]
    prompts = prompts_of([23, 9, 40])
    chunked = _engine(model, max_batch_size=9, prefill_chunk=4, prefill_tokens=6)
    single = _engine(model, max_batch_size=1)
    params = SamplingParams(n=3, temperature=1.0, max_tokens=12, seed=5, ignore_eos=True)
    forked = chunked.generate(prompts, params, use_tqdm=False)
    _same(forked, single.generate(prompts, params, use_tqdm=False))
    assert all(len({tuple(c.token_ids) for c in o.outputs}) > 1 for o in forked)  # the samples do differ
    greedy = chunked.generate(prompts, SamplingParams(n=3, temperature=0, max_tokens=12, ignore_eos=True), use_tqdm=False)
    one = single.generate(prompts, SamplingParams(temperature=0, max_tokens=12, ignore_eos=True), use_tqdm=False)
    for g, o in zip(greedy, one):
        for c in g.outputs:
            assert c.token_ids == o.outputs[0].token_ids
            assert torch.allclose(torch.tensor(c.logprobs), torch.tensor(o.outputs[0].logprobs), atol=1e-5)


@pytest.mark.parametrize("kind", ["hybrid", "mamba"])  # the hybrid's slots hold KV blocks and Mamba states
def test_slots_are_clean_after_100_requests(models, kind):
    """100 requests (mixed lengths, n of 1 to 3 forked, some stopped early by a stop token) through two
    slots, then probes: the same outputs as on a fresh engine, so nothing a slot held leaks into its
    next sample (Mamba conv/SSM state, KV blocks, per-slot decode inputs)."""
    model = models[kind]
    prompts, params, probes, probe_params = slot_churn()
    fresh = _engine(model, max_batch_size=2).generate(probes, probe_params, use_tqdm=False)
    used = _engine(model, max_batch_size=2)
    outs = used.generate(prompts, params, use_tqdm=False)
    assert all(c.finish_reason in ("stop", "length") for o in outs for c in o.outputs)
    assert any(c.finish_reason == "stop" for o in outs for c in o.outputs)
    _same(used.generate(probes, probe_params, use_tqdm=False), fresh)


# ---- SmolLM2 against transformers (slow) -----------------------------------------------------------------
SIX = [3, 8, 13, 18, 23, 28]
PROMPTS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did she sell?",
    "The capital of France is",
    "def fibonacci(n):",
    "Write a haiku about the sea.",
]


def check_logprobs_close(ref_tokens, ref_top, got_tokens, got_logprobs, atol):
    """vLLM's check_logprobs_close for an engine that reports the chosen token's logprob: the greedy
    sequences agree token for token until they first differ; up to there each logprob agrees with the
    reference's for that token; where they differ, each side's token is among the other's top-k (ours
    among the reference's top-k, and the reference's token scored by it within `atol` of our token's
    logprob, i.e. a near tie), and the comparison stops (the continuations diverge)."""
    for t, (a, b) in enumerate(zip(ref_tokens, got_tokens)):
        top = ref_top[t]  # {token: logprob}, the reference's top k at step t
        assert b in top, f"step {t}: token {b} not in the reference's top {len(top)} {top}"
        assert abs(top[b] - got_logprobs[t]) <= atol, (t, top[b], got_logprobs[t])
        if a != b:
            assert abs(top[a] - top[b]) <= atol, f"step {t}: {a} vs {b} is not a near tie: {top}"
            return t
    assert len(ref_tokens) == len(got_tokens)  # both stopped at the same EOS, or neither did
    return len(ref_tokens)


@pytest.mark.slow
def test_greedy_logprobs_agree_with_transformers_on_a_smollm2_hybrid(tmp_path):
    from tests.convert.test_smollm2 import GGUF, INSTALL

    if GGUF is None:
        pytest.skip(f"SmolLM2 GGUF not installed ({INSTALL})")
    from transformers import AutoModelForCausalLM

    from m1 import HybridForCausalLM
    from m1.checkpoint import load_causal_lm, load_tokenizer
    from m1.convert import convert_from_transformer

    torch.set_num_threads(2)
    teacher = load_causal_lm(GGUF).eval()
    tok = load_tokenizer(GGUF)
    # The head-sized Mamba shape: m1 and transformers' GraniteMoeHybrid agree layer by layer (tests/convert/test_smollm2.py).
    convert_from_transformer(teacher, SIX, mamba_heads=9, mamba_head_dim=64, mamba_groups=9, state_size=64).save_pretrained(tmp_path / "h")
    ours = HybridForCausalLM.from_pretrained(tmp_path / "h").eval()
    theirs = AutoModelForCausalLM.from_pretrained(tmp_path / "h").eval()
    assert type(theirs).__name__ == "GraniteMoeHybridForCausalLM"
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    k, n_new = 5, 64
    outs = Engine(ours, max_batch_size=len(ids), max_model_len=max(map(len, ids)) + n_new + 1).generate(
        ids, SamplingParams(temperature=0, max_tokens=n_new), use_tqdm=False)
    agreed = []
    for p, o in zip(ids, outs):
        with torch.no_grad():
            hf = theirs.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long), do_sample=False,
                                 max_new_tokens=n_new, output_logits=True, return_dict_in_generate=True,
                                 pad_token_id=tok.eos_token_id)
        ref_tokens = hf.sequences[0, len(p):].tolist()
        ref_top = []
        for logits in hf.logits:
            lp = torch.log_softmax(logits[0].float(), -1)
            v, i = lp.topk(k)
            ref_top.append(dict(zip(i.tolist(), v.tolist())))
        c = o.outputs[0]
        agreed.append(check_logprobs_close(ref_tokens, ref_top, c.token_ids, c.logprobs, atol=2e-3))
    assert sum(agreed) >= n_new  # tokens compared before any divergence: not an early near tie everywhere
