"""Packed multi-prompt prefill (CPU, fp32): packs equal each prompt alone and the full forward."""

import pytest
import torch

from m1.engine import Engine, SamplingParams
from m1.engine.packed import attention_groups, plan_pieces
from tests.engine.conftest import KINDS, full_logits, prompts_of


def test_plan_pieces_respects_budget_and_order():
    prompts = [(list(range(n)), slot, []) for slot, n in enumerate([40, 3, 17, 8, 1])]
    packs = plan_pieces(prompts, chunk=8, budget=12)
    seen = {slot: 0 for slot in range(5)}
    for pack in packs:
        assert sum(len(p.ids) for p in pack) <= 12
        assert len({p.slot for p in pack}) == len(pack)  # a prompt at most once per pack
        for p in pack:
            assert p.start == seen[p.slot] and len(p.ids) <= 8  # pieces in order, none skipped
            seen[p.slot] += len(p.ids)
            assert p.last == (seen[p.slot] == len(prompts[p.slot][0]))
    assert seen == {slot: len(ids) for ids, slot, _ in prompts}


def test_attention_groups_bound_padding():
    lens = [100, 3, 90, 2, 50, 60, 1]
    fresh = [True, True, True, False, True, True, True]
    groups = attention_groups(lens, fresh)
    assert sorted(i for g in groups for i in g) == [0, 1, 2, 4, 5, 6]
    for g in groups:
        assert len(g) == 1 or len(g) * lens[g[0]] <= 2 * sum(lens[i] for i in g)


def _engine(model, **kw):
    kw.setdefault("max_batch_size", 8)
    kw.setdefault("max_model_len", 96)
    kw.setdefault("poll_interval", 3)
    return Engine(model, **kw)


def _prefill_states(eng, prompts, budget, chunk):
    """Prefill prompts into slots 0.. with fresh blocks; return logits and a copy of every state/KV row."""
    bs = eng.block_size
    items, nxt = [], 1
    for slot, p in enumerate(prompts):
        nb = -(-len(p) // bs)
        items.append((p, slot, list(range(nxt, nxt + nb))))
        nxt += nb
    logits = eng.runner.prefill_many(items, chunk, budget)
    states = {f"conv{i}": t[: len(prompts)].clone() for i, t in eng.cache.conv.items()}
    states |= {f"ssm{i}": t[: len(prompts)].clone() for i, t in eng.cache.ssm.items()}
    for i in eng.cache.k:  # the KV each prompt wrote, read back through its own blocks
        for j, (p, _, blocks) in enumerate(items):
            kv = torch.cat([eng.cache.k[i][blocks], eng.cache.v[i][blocks]]).flatten(0, 1)
            states[f"kv{i}_{j}"] = kv[: 2 * len(blocks) * bs]
    return logits, states


@pytest.mark.parametrize("kind", list(KINDS))
def test_packed_prefill_equals_each_alone_and_full_forward(models, kind):
    model = models[kind]
    prompts = prompts_of([5, 40, 1, 23, 16, 9])
    eng = _engine(model)
    packed, s_packed = _prefill_states(eng, prompts, budget=64, chunk=64)  # several prompts per pack
    eng2 = _engine(model)
    for j, p in enumerate(prompts):  # each alone, one prompt per pack (same slot and blocks as above)
        bs = eng2.block_size
        first = 1 + sum(-(-len(q) // bs) for q in prompts[:j])
        alone = eng2.runner.prefill_many([(p, j, list(range(first, first + -(-len(p) // bs))))], 64, 64)
        torch.testing.assert_close(packed[j], alone[0], rtol=1e-5, atol=1e-5)
        with torch.no_grad():
            full = model(torch.tensor([p])).logits[0, -1].float()
        torch.testing.assert_close(packed[j], full, rtol=1e-4, atol=1e-4)
    _, s_alone = _prefill_states(eng2, prompts, budget=1, chunk=64)  # budget below every prompt: one piece at a time
    for key in s_packed:
        torch.testing.assert_close(s_packed[key], s_alone[key], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", list(KINDS))
def test_prompts_longer_than_the_pack_budget(models, kind):
    """Budget 12, pieces of 8: long prompts run over several packs beside short ones, and still equal the forward."""
    model = models[kind]
    prompts = prompts_of([40, 3, 29, 12, 1])
    eng = _engine(model, prefill_chunk=8, prefill_tokens=12)
    outs = eng.generate(prompts, SamplingParams(temperature=0, max_tokens=10), use_tqdm=False)
    for p, o in zip(prompts, outs):
        c = o.outputs[0]
        logits = full_logits(model, p, c.token_ids)
        assert c.token_ids == logits.argmax(-1).tolist()
        ref = torch.log_softmax(logits, -1).gather(1, torch.tensor(c.token_ids)[:, None])[:, 0]
        assert (torch.tensor(c.logprobs) - ref).abs().max() <= 1e-4


@pytest.mark.parametrize("kind", ["hybrid", "attention"])
@pytest.mark.parametrize("block_size", [None, 16], ids=["cpu-default-blocks", "blocks-16"])
def test_packed_forks_for_n_samples(models, kind, block_size):
    """n samples of several prompts admitted in one packed prefill: each sample's logprobs equal the
    full forward, greedy samples agree, and sampled ones equal the same request run alone."""
    model = models[kind]
    prompts = prompts_of([7, 17, 30])  # a partial last block copied per sample (with 16-token blocks: 17 and 30)
    eng = _engine(model, max_batch_size=12, prefill_chunk=8, prefill_tokens=24, block_size=block_size)
    greedy = eng.generate(prompts, SamplingParams(n=3, temperature=0, max_tokens=6), use_tqdm=False)
    for p, o in zip(prompts, greedy):
        assert len({tuple(c.token_ids) for c in o.outputs}) == 1
        assert o.outputs[0].token_ids == full_logits(model, p, o.outputs[0].token_ids).argmax(-1).tolist()
    params = SamplingParams(n=3, temperature=1.0, max_tokens=6, seed=3)
    together = eng.generate(prompts, params, use_tqdm=False)
    for i, p in enumerate(prompts):
        for c in together[i].outputs:
            logits = full_logits(model, p, c.token_ids)
            ref = torch.log_softmax(logits, -1).gather(1, torch.tensor(c.token_ids)[:, None])[:, 0]
            assert (torch.tensor(c.logprobs) - ref).abs().max() <= 1e-4
        alone = eng.generate([[0]] * i + [p], [SamplingParams(max_tokens=1)] * i + [params], use_tqdm=False)[i]
        assert [c.token_ids for c in alone.outputs] == [c.token_ids for c in together[i].outputs]
