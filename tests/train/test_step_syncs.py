"""The distillation step's fast paths against their references: host-chosen score positions
(`HostBatchFacts`) against the boolean mask, and no host-device sync in a step's forward and backward."""

from __future__ import annotations

import torch

from m1.train.distill import SCORE_INDEX, WHOLE_ROWS, HostBatchFacts
from m1.train.losses import next_token_positions


def _syncs(fn) -> dict[str, list[str]]:
    """The ops that wait for the device (on CUDA) while `fn` runs on CPU, each with the innermost
    Python function above it that is not torch's own."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], with_stack=True) as prof:
        fn()
    found: dict[str, list[str]] = {"aten::_local_scalar_dense": [], "aten::nonzero": []}
    for e in prof.events():
        if e.name in found:
            p = e.cpu_parent
            while p is not None and (p.name.startswith(("aten::", "<built-in", "torch/")) or ".py(" not in p.name):
                p = p.cpu_parent
            found[e.name].append(p.name if p is not None else "?")
    return found


def test_host_facts_select_what_the_mask_selects():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 50, (3, 9), generator=g)
    labels[0, :4] = -100  # a prompt
    labels[1, 6:] = -100  # padding
    labels[2, ::3] = -100
    attention = torch.ones(3, 9, dtype=torch.long)
    attention[1, 6:] = 0
    batch = HostBatchFacts(lambda ex: {"input_ids": labels.clamp(min=0), "attention_mask": attention, "labels": labels})([])
    hidden = torch.randn(3, 9, 5, generator=g)
    got = hidden.flatten(0, 1).index_select(0, batch[SCORE_INDEX])
    assert torch.equal(got, hidden[next_token_positions(labels)])
    assert batch[WHOLE_ROWS] is False
    whole = HostBatchFacts(lambda ex: {"input_ids": labels.clamp(min=0), "attention_mask": torch.ones(3, 9), "labels": labels})([])
    assert whole[WHOLE_ROWS] is True
    packed = HostBatchFacts(lambda ex: {"input_ids": labels, "position_ids": torch.zeros(3, 9), "labels": labels})([])
    assert packed[WHOLE_ROWS] is False  # position ids may restart: they must reach the model


def _trainer(task_dir, tmp_path, data):
    from m1.train.config import DistillConfig
    from m1.train.distill import build_trainer

    cfg = DistillConfig(teacher=str(task_dir / "teacher"), student=str(task_dir / "student"), data=str(data),
                        out=str(tmp_path / "run"), max_steps=1, per_device_batch_size=4, max_length=64,
                        loss_chunk_size=32, report_to=[], num_threads=2)
    trainer, _ = build_trainer(cfg)
    trainer.current_gradient_accumulation_steps = 1  # what train() sets before each step
    return trainer


def _loss_and_grads(trainer, batch):
    model = trainer.model
    model.zero_grad()
    loss = trainer.compute_loss(model, batch, num_items_in_batch=None)
    loss.backward()
    acc = trainer._kl_acc.clone()
    trainer._kl_acc = None
    return loss.detach(), acc, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _compare(trainer):
    batch = next(iter(trainer.get_train_dataloader()))
    assert SCORE_INDEX in batch and WHOLE_ROWS in batch
    reference = {k: v for k, v in batch.items() if k not in (SCORE_INDEX, WHOLE_ROWS)}
    fast, ref = _loss_and_grads(trainer, batch), _loss_and_grads(trainer, reference)
    torch.testing.assert_close(fast[0], ref[0], rtol=1e-6, atol=0)
    torch.testing.assert_close(fast[1], ref[1], rtol=1e-6, atol=0)
    assert fast[2].keys() == ref[2].keys() and len(ref[2]) > 0
    for n in ref[2]:
        torch.testing.assert_close(fast[2][n], ref[2][n], rtol=1e-5, atol=1e-7, msg=n)
    return batch


def test_conversations_loss_and_grads_match_the_mask_reference(task_dir, tmp_path):
    """Padded conversations (prompt tokens not scored): the host index gives the boolean mask's loss,
    logged sums and gradients, and the attention mask still reaches the models."""
    trainer = _trainer(task_dir, tmp_path, task_dir / "train.jsonl")
    batch = _compare(trainer)
    assert batch[WHOLE_ROWS] is False or bool(batch["attention_mask"].all())


def test_packed_text_step_matches_the_reference_and_never_syncs(task_dir, tmp_path):
    """A raw-text corpus (whole rows, every token a target): the same loss and gradients as the mask
    reference with the attention mask passed, and a forward + backward without a single host sync."""
    import json

    from m1.tasks import make_split

    texts = [p.prompt + " " + p.solution for p in make_split("easy", 40, seed=3, split="train")]
    data = tmp_path / "text.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    trainer = _trainer(task_dir, tmp_path, data)
    batch = _compare(trainer)
    assert batch[WHOLE_ROWS] is True
    model = trainer.model

    def step():
        trainer.compute_loss(model, batch, num_items_in_batch=torch.tensor(100.0)).backward()

    found = _syncs(step)
    # the one left is transformers' Llama teacher: with no attention mask it checks its own positions
    # for packed sequences (with a mask it would check the mask instead); m1's code syncs nowhere
    assert found["aten::nonzero"] == [] and len(found["aten::_local_scalar_dense"]) <= 1, found
    assert all("transformers/masking_utils.py" in site for site in found["aten::_local_scalar_dense"]), found
    reference = {k: v for k, v in batch.items() if k not in (SCORE_INDEX, WHOLE_ROWS)}
    assert len(_syncs(lambda: trainer.compute_loss(model, reference).backward())["aten::nonzero"]) == 3  # the reference: mask, twice, and its backward


def test_hybrid_forward_without_mask_or_positions_never_syncs():
    """Positions the model makes itself cannot restart, so it does not look at them (a sync);
    positions a caller passes still split packed rows."""
    from m1.convert import convert_from_transformer
    from tests.helpers import tiny_llama

    model = convert_from_transformer(tiny_llama(layers=3), attention_layers=[1], mamba_heads=4, mamba_head_dim=16, mamba_groups=4, state_size=16)
    ids = torch.randint(0, 97, (2, 12))
    assert _syncs(lambda: model(input_ids=ids)) == {"aten::_local_scalar_dense": [], "aten::nonzero": []}
    pos = torch.cat([torch.arange(5), torch.arange(7)])[None].expand(2, 12)
    assert len(_syncs(lambda: model(input_ids=ids, position_ids=pos))["aten::_local_scalar_dense"]) > 0
    split = model(input_ids=ids, position_ids=pos).logits
    alone = model(input_ids=ids[:, 5:]).logits
    torch.testing.assert_close(split[:, 5:], alone, rtol=1e-4, atol=1e-5)
