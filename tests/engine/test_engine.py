"""The engine against the model's own full forward (CPU, fp32), and its batching behaviour."""

import pytest
import torch

from m1.engine import Engine, SamplingParams
from tests.engine.conftest import KINDS, full_logits, optimizer_steps, prompts_of

# Prompt lengths cross block (16) and prefill-chunk (8 here) boundaries.
LENGTHS = [1, 5, 16, 23, 40]


def engine(model, **kw):
    kw.setdefault("max_batch_size", 4)
    kw.setdefault("max_model_len", 96)
    kw.setdefault("prefill_chunk", 8)
    kw.setdefault("poll_interval", 3)
    return Engine(model, **kw)


@pytest.mark.parametrize("kind", list(KINDS))
def test_greedy_equals_full_forward_argmax(models, kind):
    model = models[kind]
    prompts = prompts_of(LENGTHS)
    outs = engine(model).generate(prompts, SamplingParams(temperature=0, max_tokens=20), use_tqdm=False)
    for p, o in zip(prompts, outs):
        c = o.outputs[0]
        assert c.finish_reason == "length" and len(c.token_ids) == 20
        logits = full_logits(model, p, c.token_ids)
        assert c.token_ids == logits.argmax(-1).tolist()
        ref = torch.log_softmax(logits, -1).gather(1, torch.tensor(c.token_ids)[:, None])[:, 0]
        assert torch.allclose(torch.tensor(c.logprobs), ref, atol=1e-4)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampled_logprobs_match_full_forward(models, kind, temperature):
    model = models[kind]
    prompts = prompts_of([7, 30])
    params = SamplingParams(n=3, temperature=temperature, max_tokens=16, seed=1)
    outs = engine(model).generate(prompts, params, use_tqdm=False)
    for p, o in zip(prompts, outs):
        for c in o.outputs:
            logits = full_logits(model, p, c.token_ids)
            ref = torch.log_softmax(logits / temperature, -1).gather(1, torch.tensor(c.token_ids)[:, None])[:, 0]
            assert (torch.tensor(c.logprobs) - ref).abs().max() <= 1e-4
        assert len({tuple(c.token_ids) for c in o.outputs}) > 1  # the samples differ


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("block_size", [None, 16], ids=["cpu-default-blocks", "blocks-16"])
def test_mixed_lengths_equal_each_alone(models, kind, block_size):
    """vLLM's test_batching: a batch of mixed-length prompts gives what a loop of one prompt at a time
    gives, greedy and sampled: the same tokens, the same logprobs within float error. Both KV layouts:
    the CPU default (one block per sequence, attention on a view of the pool) and 16-token blocks."""
    if kind == "mamba" and block_size == 16:
        pytest.skip("no attention layer: no KV layout to vary")
    model = models[kind]
    prompts = prompts_of([3, 37, 1, 25])
    eng = engine(model, max_batch_size=8, block_size=block_size)
    assert (eng.block_size == 16) == (block_size == 16 or kind == "mamba")
    for params in (SamplingParams(temperature=0, max_tokens=20), SamplingParams(temperature=1.0, max_tokens=20, seed=5)):
        together = eng.generate(prompts, params, use_tqdm=False)
        for i, p in enumerate(prompts):
            # Alone, but with the request index it had, so its random stream is the same.
            alone = eng.generate([[0]] * i + [p], [SamplingParams(max_tokens=1)] * i + [params], use_tqdm=False)[i]
            a, t = alone.outputs[0], together[i].outputs[0]
            assert a.token_ids == t.token_ids
            assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(t.logprobs), atol=1e-5)


def test_seeds_reproduce_and_do_not_depend_on_batching(models):
    model = models["hybrid"]
    prompts = prompts_of([9, 21])
    params = SamplingParams(n=5, temperature=0.9, top_p=0.9, top_k=20, max_tokens=8, seed=123)
    a = engine(model, max_batch_size=16).generate(prompts, params, use_tqdm=False)
    b = engine(model, max_batch_size=3, poll_interval=1).generate(prompts, params, use_tqdm=False)  # n > slots: re-prefills
    c = engine(model).generate(prompts, SamplingParams(n=5, temperature=0.9, top_p=0.9, top_k=20, max_tokens=8, seed=124), use_tqdm=False)
    ids = lambda outs: [[c.token_ids for c in o.outputs] for o in outs]
    assert ids(a) == ids(b)
    assert ids(a) != ids(c)


def test_top_k_one_and_tiny_top_p_are_greedy(models):
    model = models["hybrid"]
    prompts = prompts_of([6, 18])
    eng = engine(model)
    greedy = eng.generate(prompts, SamplingParams(temperature=0, max_tokens=8), use_tqdm=False)
    for params in (SamplingParams(temperature=1.0, top_k=1, max_tokens=8, seed=3), SamplingParams(temperature=1.0, top_p=1e-6, max_tokens=8, seed=3)):
        outs = eng.generate(prompts, params, use_tqdm=False)
        assert [o.outputs[0].token_ids for o in outs] == [o.outputs[0].token_ids for o in greedy]


def test_stop_strings_cut_at_the_right_place(models, tokenizer):
    model = models["hybrid"]
    eng = engine(model, tokenizer=tokenizer)
    prompt = "hello_world"
    base = eng.generate(prompt, SamplingParams(temperature=0, max_tokens=30), use_tqdm=False)[0].outputs[0]
    stop = base.text[11:13]
    cut = base.text.find(stop)
    out = eng.generate(prompt, SamplingParams(temperature=0, max_tokens=30, stop=[stop, "\x7f\x7f\x7f"]), use_tqdm=False)[0].outputs[0]
    assert out.finish_reason == "stop"
    assert out.text == base.text[:cut]
    assert out.token_ids == base.token_ids[: cut + len(stop)]  # up to the token that completed the stop string
    assert len(out.logprobs) == len(out.token_ids)
    tok = base.token_ids[4]
    first = base.token_ids.index(tok)
    out = eng.generate(prompt, SamplingParams(temperature=0, max_tokens=30, stop_token_ids=[tok]), use_tqdm=False)[0].outputs[0]
    assert out.finish_reason == "stop" and out.token_ids == base.token_ids[: first + 1]


def test_streaming_yields_the_same_text_as_generate(models, tokenizer):
    model = models["hybrid"]
    eng = engine(model, tokenizer=tokenizer)
    params = SamplingParams(n=3, temperature=1.0, max_tokens=25, seed=7, stop=["zz"])
    full = eng.generate("abc", params, use_tqdm=False)[0]
    texts, toks, reasons = {}, {}, {}
    for d in eng.stream("abc", params):
        texts[d.index] = texts.get(d.index, "") + d.text
        toks.setdefault(d.index, []).extend(d.token_ids)
        if d.finish_reason:
            reasons[d.index] = d.finish_reason
    for c in full.outputs:
        assert texts[c.index] == c.text and toks[c.index] == c.token_ids and reasons[c.index] == c.finish_reason


def test_200_requests_through_8_slots_all_finish(models):
    model = models["hybrid"]
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 30, (200,), generator=g).tolist()
    maxes = torch.randint(1, 12, (200,), generator=g).tolist()
    params = [SamplingParams(n=1 + i % 3, temperature=0.8, max_tokens=m, seed=i, ignore_eos=True) for i, m in enumerate(maxes)]
    outs = engine(model, max_batch_size=8, poll_interval=4).generate(prompts_of(lengths), params, use_tqdm=False)
    assert len(outs) == 200
    for o, p in zip(outs, params):
        assert len(o.outputs) == p.n
        assert all(c.finish_reason == "length" and len(c.token_ids) == p.max_tokens for c in o.outputs)


def test_memory_pressure_1000_requests_only_impossible_ones_fail(models):
    model = models["hybrid"]
    budget_tokens = 192  # the KV pool holds 12 blocks of 16 tokens: a few sequences at a time
    from m1.engine.cache import kv_bytes_per_token, state_bytes_per_slot

    budget = state_bytes_per_slot(model.config, torch.float32) * 17 + kv_bytes_per_token(model.config, torch.float32) * (budget_tokens + 16)
    eng = engine(model, max_batch_size=16, max_model_len=200, poll_interval=4, memory_budget_gb=budget / 2**30)
    assert eng.layout.usable_blocks == budget_tokens // 16
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(1, 40, (1000,), generator=g).tolist()
    maxes = torch.randint(1, 16, (1000,), generator=g).tolist()
    for i in range(3, 1000, 97):
        maxes[i] = 190  # beyond max_model_len with its prompt
    for i in range(50, 1000, 101):
        lengths[i], maxes[i] = 30, 170  # within max_model_len, but more than the whole pool
    params = [SamplingParams(n=1 + (i % 7 == 0), temperature=0.5, max_tokens=m, seed=i, ignore_eos=True) for i, m in enumerate(maxes)]
    outs = eng.generate(prompts_of(lengths, seed=2), params, use_tqdm=False)
    n_err = 0
    for o, L, p in zip(outs, lengths, params):
        need = -(-(L + p.max_tokens) // 16)
        impossible = L + p.max_tokens > 200 or need > budget_tokens // 16
        for c in o.outputs:
            if impossible:
                assert c.finish_reason == "error" and c.error and ("max_model_len" in c.error or "KV blocks" in c.error)
                n_err += 1
            else:
                assert c.finish_reason == "length" and len(c.token_ids) == p.max_tokens
    assert 0 < n_err < 1000
    assert eng.generate([[1]], SamplingParams(max_tokens=3, temperature=0), use_tqdm=False)[0].outputs[0].finish_reason == "length"


@pytest.mark.parametrize("kind", list(KINDS))
def test_live_weights_after_optimizer_steps(models, kind):
    """The engine built once serves the weights of each later step (on-policy distillation and GRPO keep one
    engine over the weights they train): after AdamW steps on every parameter, its greedy tokens are the trained
    model's full-forward argmax, and they moved."""
    model = models[kind]
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    eng = engine(model)
    prompt = prompts_of([10])
    p = SamplingParams(temperature=0, max_tokens=8)
    try:
        before = eng.generate(prompt, p, use_tqdm=False)[0].outputs[0].token_ids
        optimizer_steps(model, prompt[0])
        model.eval()
        after = eng.generate(prompt, p, use_tqdm=False)[0].outputs[0].token_ids
        assert after != before
        assert after == full_logits(model, prompt[0], after).argmax(-1).tolist()
    finally:
        model.load_state_dict(saved)


def test_string_prompts_need_a_tokenizer(models):
    with pytest.raises(ValueError, match="tokenizer"):
        engine(models["hybrid"]).generate("abc", SamplingParams(max_tokens=2), use_tqdm=False)


def test_mamba_layer_step_continues_its_forward(models):
    """The layer's public decode step, token by token from zero states, equals its full forward."""
    mx = next(layer.mamba for layer in models["hybrid"].model.layers if not layer.is_attention)
    g = torch.Generator().manual_seed(0)
    h = torch.randn(2, 9, models["hybrid"].config.hidden_size, generator=g)
    with torch.no_grad():
        full = mx(h)
        conv = torch.zeros(3, mx.conv_dim, mx.conv_width - 1)
        ssm = torch.zeros(3, mx.num_heads, mx.head_dim, mx.state_size)
        slots = torch.tensor([2, 0])
        steps = torch.stack([mx.step(h[:, t], conv, ssm, slots) for t in range(h.shape[1])], dim=1)
    assert torch.allclose(steps, full, atol=1e-5)
    assert conv[1].abs().sum() == 0 and ssm[1].abs().sum() == 0  # the unused slot is untouched


@pytest.mark.parametrize("kind", list(KINDS))
def test_cpu_fast_paths_equal_the_references(models, kind):
    """The CPU decode path (paged attention `sdpa`, in-place Mamba step `cpu`, oneDNN linears, the sampler
    over row chunks) against the references (`M1_OPS=ref`, one sampler call): same tokens,
    logprobs within float error; mixed lengths, n > 1, top-p, several poll windows."""
    from m1.ops import dispatch

    model = models[kind]
    prompts = prompts_of([3, 37, 1, 25, 16])
    params = [SamplingParams(n=2, temperature=0.8, top_p=0.9 if i % 2 else 1.0, max_tokens=14, seed=i, ignore_eos=True)
              for i in range(len(prompts))]
    fast = engine(model, max_batch_size=8)
    fast.runner.logit_rows = 3  # chunk even this small batch
    got = fast.generate(prompts, params, use_tqdm=False)
    with dispatch.force("ref"):
        ref = engine(model, max_batch_size=8)
        ref.runner.logit_rows = None
        want = ref.generate(prompts, params, use_tqdm=False)
    assert (fast.runner.linears.impl_name, ref.runner.linears.impl_name) == (dispatch.chosen_name("linear", torch.empty(0)), "ref")
    for g, w in zip(got, want):
        for a, b in zip(g.outputs, w.outputs):
            assert a.token_ids == b.token_ids
            assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5)


def test_nano_batches_must_be_positive():
    from tests.engine.conftest import make_model

    with pytest.raises(ValueError, match="nano_batches"):
        Engine(make_model("hybrid"), max_batch_size=2, max_model_len=32, nano_batches=0)


def test_end_tokens_are_the_tokenizers_and_the_generation_configs(models, tokenizer):
    """A completion ends at the tokenizer's EOS or at any EOS the model's generation config lists
    (Llama 3 lists three; a GGUF tokenizer read by transformers < 5.24 named the wrong one)."""
    import copy

    from m1.engine import Engine, end_token_ids

    model = copy.deepcopy(models["hybrid"])
    prompt = [5, 9, 14]
    free = Engine(model, tokenizer, max_batch_size=2).generate([prompt], SamplingParams(max_tokens=12, temperature=0.0))
    ids = free[0].outputs[0].token_ids
    assert len(ids) == 12 and free[0].outputs[0].finish_reason == "length"
    stop_at = next(i for i in range(3, 12) if ids[i] not in ids[:i])  # the first position of its token
    model.generation_config.eos_token_id = [96, ids[stop_at]]
    assert end_token_ids(model, tokenizer) == {96, ids[stop_at]}
    out = Engine(model, tokenizer, max_batch_size=2).generate([prompt], SamplingParams(max_tokens=12, temperature=0.0))[0].outputs[0]
    assert out.finish_reason == "stop" and list(out.token_ids) == list(ids[: stop_at + 1])  # the EOS stays in token_ids
    # the tokenizer's EOS joins them; with no generation config the model config's EOS counts
    tok = copy.copy(tokenizer)
    tok.eos_token_id = 7
    assert end_token_ids(model, tok) == {7, 96, ids[stop_at]}
    model.generation_config = None
    model.config.eos_token_id = 3
    assert end_token_ids(model, tok) == {3, 7}


def test_cpu_linears_skip_the_weight_copy_when_memory_is_short(models, monkeypatch):
    """Where a prepared (oneDNN) copy of the weights would take more than half the available memory, the engine
    uses the weights as they are, with the same tokens."""
    import m1.engine.runner as runner_mod

    model = models["hybrid"]
    prompts = prompts_of([5, 9])
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    want = [o.outputs[0].token_ids for o in engine(model).generate(prompts, params, use_tqdm=False)]
    monkeypatch.setattr(runner_mod, "available_memory_bytes", lambda: 1000)
    short = engine(model)
    assert short.runner.linears.impl_name == "ref"
    assert [o.outputs[0].token_ids for o in short.generate(prompts, params, use_tqdm=False)] == want
