"""Recipe tests: the real CLI on tiny models, pinned first losses, resume, freezing, learning."""

from __future__ import annotations

import math
import random

import pytest
import torch

from m1.cli import main as m1_main
from m1.train.runs import read_metrics
from tests.train.conftest import distill_argv


def losses(out):
    return [r["loss"] for r in read_metrics(out) if "loss" in r]


def heldout_kl(task_dir, student_dir) -> float:
    """Forward KL(teacher || student) per assistant token on the held-out conversations."""
    import torch.nn.functional as F
    from transformers import AutoTokenizer

    from m1.train.data import load_conversations, tokenize_conversations
    from m1.train.model import load_student, load_teacher

    tok = AutoTokenizer.from_pretrained(task_dir / "teacher")
    ds = tokenize_conversations(tok, load_conversations(str(task_dir / "heldout.jsonl")))
    teacher, student = load_teacher(task_dir / "teacher"), load_student(student_dir).eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for row in ds:
            ids = torch.tensor([row["input_ids"]])
            sel = torch.tensor(row["completion_mask"][1:] + [0]).bool()
            t = F.log_softmax(teacher(input_ids=ids).logits[0][sel], -1)
            s = F.log_softmax(student(input_ids=ids).logits[0][sel], -1)
            total += (t.exp() * (t - s)).sum().item()
            n += int(sel.sum())
    return total / n


def test_distill_cli_pins_first_losses(task_dir, tmp_path):
    assert m1_main(distill_argv(task_dir, tmp_path / "run", 3, "--save-steps", "100")) == 0
    got = losses(tmp_path / "run")
    assert len(got) == 3 and all(math.isfinite(x) for x in got)
    # pinned on this fixture (seeded teacher, fp32, 2 threads); a change here means the recipe changed
    assert got[0] == pytest.approx(PINNED_DISTILL[0], rel=2e-3)
    assert got[1] < got[0]
    assert (tmp_path / "run" / "final" / "model.safetensors").exists()
    from m1.modeling import HybridForCausalLM

    HybridForCausalLM.from_pretrained(tmp_path / "run" / "final")  # strict load of the hybrid format


PINNED_DISTILL = [0.46198082]  # reverse KL per assistant token at step 1 (measured, CPU fp32; re-taken after the task's answer-spread cap changed the data)


def test_resume_after_kill_reproduces_losses(task_dir, tmp_path):
    from m1.train import distill
    from m1.train.config import parse_config, DistillConfig
    from m1.train.runs import prepare_out
    from transformers import TrainerCallback

    steps = 6
    assert m1_main(distill_argv(task_dir, tmp_path / "full", steps, "--save-steps", "2")) == 0
    reference = losses(tmp_path / "full")

    kill_at = random.Random(14).choice([3, 4, 5])  # seeded: a failure reproduces at the same step

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == kill_at:
                raise KeyboardInterrupt(f"killed at step {kill_at}")

    cfg = parse_config(DistillConfig, distill_argv(task_dir, tmp_path / "killed", steps, "--save-steps", "2")[1:], "t", "t")
    prepare_out(cfg)
    trainer, _ = distill.build_trainer(cfg)
    trainer.add_callback(Kill())
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert m1_main(distill_argv(task_dir, tmp_path / "killed", steps, "--save-steps", "2", "--resume")) == 0
    resumed = losses(tmp_path / "killed")
    assert len(resumed) == len(reference) == steps
    for a, b in zip(resumed, reference):
        assert abs(a - b) <= 1e-4, (kill_at, resumed, reference)


def test_freeze_non_mamba_trains_only_mamba(task_dir, tmp_path):
    from safetensors.torch import load_file

    assert m1_main(distill_argv(task_dir, tmp_path / "run", 2, "--freeze", "non_mamba", "--save-steps", "100")) == 0
    before = load_file(task_dir / "student" / "model.safetensors")
    after = load_file(tmp_path / "run" / "final" / "model.safetensors")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    mamba = {k for k in before if ".mamba." in k}
    assert changed and changed <= mamba, sorted(changed - mamba)
    assert len(changed) >= len(mamba) // 2


def test_stepwise_schedule_trains_one_mamba_layer_group_per_stage(task_dir, tmp_path):
    """`--stepwise-layers 1 --stepwise-steps 5` (configs/distill_mambainllama.yaml's schedule): in the first stage only
    the first Mamba layer learns; every other parameter, embeddings and MLPs included, is left exactly as it was."""
    from safetensors.torch import load_file

    from m1.train.distill import mamba_layer_index

    argv = distill_argv(task_dir, tmp_path / "run", 2, "--stepwise-layers", "1", "--stepwise-steps", "5", "--save-steps", "100")
    assert m1_main(argv) == 0
    before = load_file(task_dir / "student" / "model.safetensors")
    after = load_file(tmp_path / "run" / "final" / "model.safetensors")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    first = min(i for k in before if (i := mamba_layer_index(k)) is not None)
    assert changed and all(mamba_layer_index(k) == first for k in changed), sorted(changed)
    assert len(changed) == sum(mamba_layer_index(k) == first for k in before)


def test_trainable_pattern_selects_exact_parameters(task_dir):
    from m1.train.distill import select_trainable
    from m1.train.model import load_student

    model = load_student(task_dir / "student")
    names = select_trainable(model, pattern=r"\.mamba\.out_proj\.")
    assert names and all(".mamba.out_proj." in n for n in names)
    assert sum(p.requires_grad for p in model.parameters()) == len(names)


def test_distillation_reduces_heldout_kl_short(task_dir, tmp_path):
    before = heldout_kl(task_dir, task_dir / "student")
    assert m1_main(distill_argv(task_dir, tmp_path / "run", 15, "--save-steps", "100")) == 0
    after = heldout_kl(task_dir, tmp_path / "run" / "final")
    assert after < 0.7 * before, (before, after)


@pytest.mark.slow
def test_distillation_halves_heldout_kl_in_200_steps(task_dir, tmp_path):
    before = heldout_kl(task_dir, task_dir / "student")
    assert m1_main(distill_argv(task_dir, tmp_path / "run", 200, "--save-steps", "1000", "--lr-scheduler", "cosine")) == 0
    after = heldout_kl(task_dir, tmp_path / "run" / "final")
    print(f"held-out KL(teacher||student): {before:.4f} -> {after:.4f}")
    assert after <= 0.5 * before, (before, after)


def test_grpo_cli_logprob_gap_small(task_dir, tmp_path):
    out = tmp_path / "grpo"
    argv = ["grpo", "--model", str(task_dir / "student"), "--prompts", str(task_dir / "prompts.jsonl"), "--out", str(out),
            "--max-steps", "2", "--per-device-batch-size", "8", "--num-generations", "4", "--generation-batch-size", "16",
            "--mini-batch-size", "8", "--max-completion-length", "24", "--learning-rate", "1e-4", "--rollout-backend",
            "generate", "--num-threads", "2", "--report-to", "--save-steps", "100"]
    assert m1_main(argv) == 0
    rows = read_metrics(out)
    gaps = [r["sampling/logprob_gap/max"] for r in rows if "sampling/logprob_gap/max" in r]
    assert gaps and max(gaps) <= 1e-3, gaps
    # TRL logs entropy_coef at every optimizer step while the bonus is on: a missing key means
    # the bonus was off (M1's recipe has it at 0.01), so absence must fail
    coefs = [r["entropy_coef"] for r in rows if "entropy_coef" in r]
    assert coefs and all(c == pytest.approx(0.01) for c in coefs), coefs
    assert (out / "final" / "model.safetensors").exists()
