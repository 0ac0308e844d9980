"""The align stage: its loss (m1.train.align) and its share of the distillation budget (issue 11)."""

import pytest
import torch

from m1.convert.mapping import convert_from_transformer
from m1.train.align import align_loss
from tests.helpers import tiny_llama

SHAPE = dict(mamba_heads=8, mamba_head_dim=8, mamba_groups=8, state_size=8)  # 4 attention heads x 16 -> 2 sub-heads each


def test_align_stage_gradients_reach_only_the_mixers():
    teacher = tiny_llama()
    student = convert_from_transformer(teacher, [1], **SHAPE)
    ids = torch.randint(0, 97, (2, 16))
    mask = torch.ones_like(ids)
    mask[1, :5] = 0  # left padding is excluded from the loss
    loss = align_loss(student, teacher, ids, mask)
    loss.backward()
    with_grad = {n for n, p in student.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad and all(".mamba." in n for n in with_grad)
    assert {n.split(".")[2] for n in with_grad} == {"0", "2", "3"}
    assert not any(p.grad is not None for p in teacher.parameters())
    before = {n: p.detach().clone() for n, p in student.named_parameters()}
    torch.optim.SGD(student.parameters(), lr=0.1).step()
    changed = {n for n, p in student.named_parameters() if not torch.equal(before[n], p)}
    assert changed == with_grad


def test_stage_plan_splits_the_step_budget():
    from m1.errors import UserError
    from m1.train.config import DistillConfig
    from m1.train.distill import stage_plan

    assert stage_plan(DistillConfig(max_steps=100)) == [("kl", 100)]
    assert stage_plan(DistillConfig(max_steps=100, stages="align,kl", align_fraction=0.25)) == [("align", 25), ("kl", 75)]
    with pytest.raises(UserError, match="stages"):
        stage_plan(DistillConfig(stages="kl,align"))
    with pytest.raises(UserError, match="align_fraction"):
        stage_plan(DistillConfig(stages="align,kl", align_fraction=1.5))
