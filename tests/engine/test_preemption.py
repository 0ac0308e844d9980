"""On-demand KV blocks with preemption by recompute (CPU, fp32): a constrained run must
give what an unconstrained one gives, lose nothing, and stay reproducible by seed."""

import pytest
import torch

from m1.engine import Engine, SamplingParams
from m1.engine.cache import kv_bytes_per_token, state_bytes_per_slot
from tests.engine.conftest import prompts_of

BS = 16


def budget_gb(model, slots: int, kv_tokens: int) -> float:
    """A budget whose KV pool holds exactly kv_tokens (+ the null block) beside `slots` slot states."""
    cfg = model.config
    b = state_bytes_per_slot(cfg, torch.float32) * (slots + 1) + kv_bytes_per_token(cfg, torch.float32) * (kv_tokens + BS)
    return b / 2**30


def engine(model, kv_tokens=None, **kw):
    kw.setdefault("max_batch_size", 8)
    kw.setdefault("max_model_len", 128)
    kw.setdefault("prefill_chunk", 16)
    kw.setdefault("poll_interval", 4)
    if kv_tokens is not None:
        kw["memory_budget_gb"] = budget_gb(model, kw["max_batch_size"], kv_tokens)
    return Engine(model, block_size=BS, **kw)


def ids(outs):
    return [[c.token_ids for c in o.outputs] for o in outs]


@pytest.mark.parametrize("kind", ["hybrid", "attention"])
def test_preempting_run_gives_the_unconstrained_greedy_outputs(models, kind):
    model = models[kind]
    prompts = prompts_of([20, 3, 33, 17, 9, 26, 12, 40, 5, 30])
    params = [SamplingParams(n=1 + (i % 3 == 0), temperature=0, max_tokens=40, ignore_eos=True) for i in range(len(prompts))]
    free = engine(model).generate(prompts, params, use_tqdm=False)
    tight = engine(model, kv_tokens=10 * BS)  # 10 blocks; 8 slots of ~4-5 blocks each must preempt
    assert tight.layout.usable_blocks == 10 and tight.kv_policy == "on_demand"
    outs = tight.generate(prompts, params, use_tqdm=False)
    assert tight.stats.last_preemptions > 0 and tight.stats.recomputed_tokens > 0
    assert ids(outs) == ids(free)
    for o in outs:
        for c in o.outputs:
            assert c.finish_reason == "length" and len(c.token_ids) == 40 == len(c.logprobs)
    ref = [[c.logprobs for c in o.outputs] for o in free]
    got = [[c.logprobs for c in o.outputs] for o in outs]
    assert torch.allclose(torch.tensor(sum(got, [])), torch.tensor(sum(ref, [])), atol=1e-4)
    # The reserve-at-admission policy under the same budget never preempts, and agrees.
    reserve = engine(model, kv_tokens=10 * BS, kv_policy="reserve")
    assert ids(reserve.generate(prompts, params, use_tqdm=False)) == ids(free)
    assert reserve.stats.preemptions == 0


def test_sampled_outputs_reproducible_by_seed_across_preemption(models):
    model = models["hybrid"]
    prompts = prompts_of([14, 31, 7, 22, 19, 2])
    params = SamplingParams(n=3, temperature=0.9, top_p=0.95, max_tokens=36, seed=11, ignore_eos=True)
    free = engine(model).generate(prompts, params, use_tqdm=False)
    tight = engine(model, kv_tokens=9 * BS)
    a = tight.generate(prompts, params, use_tqdm=False)
    assert tight.stats.last_preemptions > 0
    b = tight.generate(prompts, params, use_tqdm=False)
    assert ids(a) == ids(b) == ids(free)
    other = tight.generate(prompts, SamplingParams(n=3, temperature=0.9, top_p=0.95, max_tokens=36, seed=12, ignore_eos=True),
                           use_tqdm=False)
    assert ids(other) != ids(a)


def test_streaming_across_preemption_equals_generate(models, tokenizer):
    model = models["hybrid"]
    params = SamplingParams(n=6, temperature=1.0, max_tokens=40, seed=3, ignore_eos=True)
    eng = engine(model, tokenizer=tokenizer, kv_tokens=8 * BS)
    full = eng.generate("abcdefghijklmnopq", params, use_tqdm=False)[0]
    assert eng.stats.last_preemptions > 0
    toks: dict[int, list[int]] = {}
    for d in eng.stream("abcdefghijklmnopq", params):
        toks.setdefault(d.index, []).extend(d.token_ids)
    assert [toks[c.index] for c in full.outputs] == [c.token_ids for c in full.outputs]


def test_1000_requests_under_preemption_all_finish_and_the_impossible_one_fails_alone(models):
    model = models["hybrid"]
    eng = engine(model, kv_tokens=12 * BS, max_batch_size=16, max_model_len=256)
    g = torch.Generator().manual_seed(3)
    lengths = torch.randint(1, 40, (1000,), generator=g).tolist()
    maxes = torch.randint(1, 24, (1000,), generator=g).tolist()
    lengths[500], maxes[500] = 30, 200  # within max_model_len, but more than the whole pool (12 blocks)
    params = [SamplingParams(n=1 + (i % 5 == 0), temperature=0.7, max_tokens=m, seed=i, ignore_eos=True) for i, m in enumerate(maxes)]
    outs = eng.generate(prompts_of(lengths, seed=4), params, use_tqdm=False)
    assert len(outs) == 1000
    assert eng.stats.last_preemptions > 0
    for i, (o, p) in enumerate(zip(outs, params)):
        assert len(o.outputs) == p.n
        for c in o.outputs:
            if i == 500:
                assert c.finish_reason == "error" and "KV blocks" in c.error
            else:
                assert c.finish_reason == "length" and len(c.token_ids) == p.max_tokens, (i, c)
    assert outs[500].error and all(o.error is None for j, o in enumerate(outs) if j != 500)


def test_stop_hook_ends_samples_unseen_by_the_scheduler(models):
    model = models["hybrid"]
    eng = engine(model, kv_tokens=10 * BS, max_model_len=160)
    want = {0: 5, 1: 33, 2: 1}
    eng.stop_hook = lambda rid, j, n: n >= want[rid]
    seen = {}
    eng.token_hook = lambda rid, j, k: seen.__setitem__(rid, seen.get(rid, 0) + k)
    outs = eng.generate(prompts_of([10, 20, 30]), SamplingParams(temperature=0, max_tokens=100, ignore_eos=True), use_tqdm=False)
    assert [len(o.outputs[0].token_ids) for o in outs] == [5, 33, 1]
    assert all(o.outputs[0].finish_reason == "stop" for o in outs)
    assert seen == want


def test_unknown_kv_policy_is_an_error(models):
    with pytest.raises(ValueError, match="kv_policy"):
        engine(models["hybrid"], kv_policy="lazy")


def test_preemptions_are_logged_as_periodic_summaries(models, caplog):
    """Not one INFO line per preemption: a summary per `preemption_log_every_s` and one at the end,
    whose counts add up; each preemption stays visible at DEBUG."""
    import logging
    import re

    model = models["hybrid"]
    prompts = prompts_of([20, 3, 33, 17, 9, 26, 12, 40])
    params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)

    def summaries(every_s, level=logging.INFO):
        eng = engine(model, kv_tokens=8 * BS)
        eng.preemption_log_every_s = every_s
        caplog.clear()
        with caplog.at_level(level, logger="m1.engine"):
            eng.generate(prompts, params, use_tqdm=False)
        lines = [r for r in caplog.records if r.name == "m1.engine.scheduler" and r.levelno == logging.INFO]
        debug = [r for r in caplog.records if r.name == "m1.engine.scheduler" and r.levelno == logging.DEBUG]
        counts = [int(re.search(r"preempted (\d+) samples", r.getMessage()).group(1)) for r in lines]
        return eng.stats.last_preemptions, counts, debug

    total, counts, _ = summaries(1e9)  # never due: the final summary only
    assert total > 2 and counts == [total]
    again, counts, debug = summaries(0.0, logging.DEBUG)  # due at every window with preemptions
    assert again == total and sum(counts) == total and 1 < len(counts) <= total
    assert len(debug) == total and all("preempted request" in r.getMessage() for r in debug)
