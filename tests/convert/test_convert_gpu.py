"""Conversion on CUDA: measured placement and `m1 convert --attention-layers auto:K` where the teacher is.

A 2026-12-06 GPU run of `auto:6` fitted every mixer on the CPU (the all-Mamba student was never moved to
the teacher's device) for 11 minutes, then failed on the first held-out KL with a device mismatch. These
tests pin the GPU path; they are skipped without CUDA and run in studies/gpu_check.sh.
"""

import json

import pytest
import torch

import m1.convert.placement as P
from m1.convert.calibrate import CalibrationConfig
from tests.helpers import convert_with_auto_placement, tiny_llama

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

SHAPE = dict(mamba_heads=8, mamba_head_dim=8, mamba_groups=8, state_size=8)


def test_placement_ranks_on_the_teachers_gpu(monkeypatch):
    seen = []
    real = P.calibrate

    def spy(student, *a, **k):
        seen.append(next(student.parameters()).device.type)
        return real(student, *a, **k)

    monkeypatch.setattr(P, "calibrate", spy)
    teacher = tiny_llama().cuda()
    ids = torch.randint(0, 97, (8, 32), generator=torch.Generator().manual_seed(0))  # CPU ids: the ranking moves them
    r = P.rank_attention_layers(teacher, ids, 2, CalibrationConfig(fit_max_steps=5, fit_batch=2), min_fit_tokens=0, **SHAPE)
    assert seen == ["cuda"]
    assert sorted(x["layer"] for x in r["ranking"]) == [0, 1, 2, 3] and len(r["chosen"]) == 2
    assert all(x["kl"] > 0 for x in r["ranking"])


def test_convert_auto_placement_on_the_gpu(tmp_path, monkeypatch):
    from m1.modeling import HybridForCausalLM

    monkeypatch.setattr(P, "MIN_TOKENS_PER_CANDIDATE", 0)
    out = convert_with_auto_placement(tmp_path, "cuda", 2)
    ranking = json.loads((out / "placement.json").read_text())
    model = HybridForCausalLM.from_pretrained(out)
    assert list(model.config.attention_layers) == ranking["chosen"] and len(ranking["chosen"]) == 1
