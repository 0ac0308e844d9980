"""`m1 demo --quick` end to end through the real CLI router, then a rerun that skips every stage."""

from __future__ import annotations

import json

import pytest

from m1.cli import main
from m1.demo import STAGES, attention_layer_indices


def test_attention_layers_are_spread_and_end_at_the_last_layer():
    assert attention_layer_indices(4, 0.25) == [3]
    assert attention_layer_indices(8, 0.25) == [3, 7]
    assert attention_layer_indices(28, 6 / 28) == [3, 8, 13, 17, 22, 27]
    assert attention_layer_indices(4, 1.0) == [0, 1, 2, 3]


def test_demo_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as e:
        main(["demo", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--out", "--quick", "--seed", "--force"):
        assert flag in text


def test_quick_demo_end_to_end_then_rerun_skips(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-2].endswith("summary.json") and printed[-1].endswith("report.md")

    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "quick"
    assert set(summary["stages"]) == {s.name for s in STAGES}
    for name in ("teacher/easy", "hybrid_init/easy"):
        assert 0.0 <= summary["accuracy"][name] <= 1.0
    assert summary["stages"]["tokenizer"]["hard_to_easy_token_ratio"] >= 4
    assert summary["stages"]["teacher"]["params"] > 0
    assert summary["targets"]["teacher_easy_greedy_ge_0.90"]["applies"] is False
    report = (out / "report.md").read_text()
    for heading in ("Greedy accuracy", "KL(teacher || hybrid)", "Training stages", "Accuracy of every stage",
                    "Accuracy against wall-clock budget", "Engine throughput", "Targets"):
        assert heading in report, heading

    # Every later stage left its outputs and the keys the report reads.
    st = summary["stages"]
    kl = st["init_kl"]
    assert len(kl["kl_attention_init"]) == len(kl["kl_random_init"]) == 3 and kl["ratio"] > 0
    for stage in ("distill", "sft", "grpo"):
        assert (out / stage / "run" / "final" / "model.safetensors").exists(), stage
        assert (out / stage / "run" / "metrics.jsonl").exists(), stage
        assert "--data-format" in st[stage]["argv"]
    assert st["distill"]["loss_curve"] and st["sft"]["loss_curve"]
    assert st["grpo"]["reward_curve"] and "--rollout-backend" in st["grpo"]["argv"]
    assert all(0.0 <= r <= 1.0 for _, r in summary["grpo_reward_curve"])
    assert (out / "verifier" / "model" / "config.json").exists() and st["verifier"]["samples"] > 0
    models = st["eval"]["models"]
    assert set(models) == {"teacher", "hybrid_init", "distill", "sft", "grpo"}
    for name, by_set in models.items():
        for d in ("easy", "hard"):
            p1 = by_set[d]["pass@1"]
            assert 0.0 <= p1["ci95"][0] <= p1["mean"] <= p1["ci95"][1] <= 1.0
    for name in ("teacher", "sft", "grpo"):
        s = models[name]["hard_k"]
        assert {"pass@k", "maj@k", "verify@k", "samples_per_s"} <= set(s)
    sp = st["speed"]
    assert set(sp["throughput"]) == {"teacher", "hybrid"} and len(sp["hybrid_over_teacher"]) == len(sp["lengths"])
    assert set(summary["accuracy_vs_budget"]) == {"teacher", "grpo"}
    for target in ("sft_easy_ge_0.9x_teacher", "grpo_hard_pass1_ge_sft_plus_0.05_disjoint_ci", "init_kl_attention_le_0.5x_random"):
        assert "met" in summary["targets"][target], target
    assert not any(t["applies"] for name, t in summary["targets"].items() if name != "init_kl_attention_le_0.5x_random")
    for png in ("accuracy_by_stage.png", "accuracy_vs_samples.png", "accuracy_vs_time.png", "throughput_vs_length.png"):
        assert (out / png).stat().st_size > 1000, png
        assert png in summary["plots"]

    # Outputs are normal HF checkpoints with safetensors weights and the tokenizer.
    for d in ("teacher", "convert"):
        assert (out / d / "model.safetensors").exists() and (out / d / "tokenizer.json").exists()
    assert (out / "data" / "test_hard.jsonl").exists()

    # A rerun skips every finished stage and rebuilds the same summary from the markers.
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    rerun = capsys.readouterr().out
    assert rerun.count("skipped") == len(STAGES)
    again = json.loads((out / "summary.json").read_text())
    assert again["stages"] == summary["stages"]

    # A stage without its marker (a killed run) reruns, and so does every stage after it.
    (out / "convert" / "DONE.json").unlink()
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    names = [s.name for s in STAGES]
    assert capsys.readouterr().out.count("skipped") == names.index("convert")
