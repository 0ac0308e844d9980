"""`m1 demo --quick` end to end through the real CLI router, its pinned seeded numbers, then a
rerun that skips every stage and keeps the first run's numbers and timings."""

from __future__ import annotations

import json

import pytest

from m1.cli import main
from m1.demo import STAGES, attention_layer_indices
from m1.demo.report import TARGETS

# Seeded numbers of the quick run (seed 0). Losses are pinned to a relative 1e-3; accuracies,
# which depend on sampled text and so on the CPU's arithmetic, within an absolute tolerance.
PINNED_FIRST_LOSS = {
    "teacher": 5.446764,
    "distill": 0.054327,
    "sft": 3.100505,
    "teacher_sft": 2.556715,
}
# KL(teacher || hybrid) at the start of distillation: the calibrated init and M1's attention copy.
PINNED_INIT_KL = {"kl_converted": 0.002296, "kl_attention": 0.248352}
ACCURACY_TOLERANCE = 0.1


def test_attention_layers_are_spread_and_end_at_the_last_layer():
    assert attention_layer_indices(4, 0.25) == [3]
    assert attention_layer_indices(8, 0.25) == [3, 7]
    assert attention_layer_indices(28, 6 / 28) == [3, 8, 13, 17, 22, 27]
    assert attention_layer_indices(4, 1.0) == [0, 1, 2, 3]


def test_demo_help_lists_the_options_and_every_stage(capsys):
    with pytest.raises(SystemExit) as e:
        main(["demo", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--out", "--quick", "--seed", "--force"):
        assert flag in text
    for stage in STAGES:
        assert stage.name in text and stage.title in text


def test_demo_package_has_no_private_sampling_or_grading():
    """Every accuracy comes from m1.eval; no demo module samples, grades or trains by itself."""
    import inspect

    import m1.demo.report
    import m1.demo.stages

    for mod in (m1.demo.stages, m1.demo.report):
        src = inspect.getsource(mod)
        for banned in ("extract_answer(", "backward(", ".step()", "greedy_accuracy"):
            assert banned not in src, (mod.__name__, banned)


def _first(curve):
    return curve[0][1]


def test_quick_demo_end_to_end_then_rerun_skips(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the demo needs nothing from the source checkout's working directory
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-2].endswith("summary.json") and printed[-1].endswith("report.md")
    assert any(line.startswith("| target |") for line in printed)
    assert any(line.startswith("plot:") and line.endswith("accuracy_vs_time.png") for line in printed)

    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "quick"
    assert set(summary["stages"]) == {s.name for s in STAGES}
    env = summary["environment"]
    for key in ("python", "torch", "transformers", "trl", "cpu"):
        assert env[key], key

    # Targets: the names, each a record.
    names = [t["name"] for t in summary["targets"]]
    assert names == [name for name, *_ in TARGETS if name in names]
    assert {"constant_baseline", "wall_time", "grpo_gain", "maj_gain", "sft_hard_vs_teacher_trained"} <= set(names)
    for t in summary["targets"]:
        assert {"name", "value", "threshold", "met"} <= set(t)
    ci_targets = {t["name"]: t for t in summary["targets"] if "ci" in t}
    assert {"grpo_gain", "maj_gain"} <= set(ci_targets)
    for t in ci_targets.values():
        assert t["ci"][0] <= t["value"] <= t["ci"][1]
    base = summary["constant_baseline"]
    assert set(base) == {"easy", "hard"} and all(0 < b["accuracy"] < 1 for b in base.values())

    # Pinned seeded numbers.
    st = summary["stages"]
    firsts = {"teacher": st["teacher"]["first_loss"],
              **{k: _first(st[k]["loss_curve"]) for k in ("distill", "sft", "teacher_sft")}}
    for k, v in PINNED_FIRST_LOSS.items():
        assert firsts[k] == pytest.approx(v, rel=1e-3), (k, firsts[k])
    for k in ("grpo", "teacher_grpo"):  # the quick policies earn no reward yet, so GRPO's loss is 0: pin its steps
        assert len(st[k]["loss_curve"]) == len(st[k]["reward_curve"]) == 2, k
    for k, v in PINNED_INIT_KL.items():
        assert st["init_kl"][k] == pytest.approx(v, rel=1e-3), k
    assert st["init_kl"]["ratio_converted_to_random"] < st["init_kl"]["ratio_attention_to_random"] < 1
    assert st["eval"]["workers"] == 2  # two single-thread evaluation workers
    models = st["eval"]["models"]
    assert set(models) == {"sft", "grpo", "teacher_sft", "teacher_grpo"}
    for name, by_set in models.items():
        p1 = by_set["hard"]["pass@1"]
        assert 0.0 <= p1["ci95"][0] <= p1["mean"] <= p1["ci95"][1] <= 1.0
        assert p1["mean"] <= ACCURACY_TOLERANCE, name  # quick models are barely trained
    for name in ("grpo", "teacher_grpo"):
        assert {"pass@k", "maj@k", "samples_per_s"} <= set(models[name]["hard_k"])
    assert {"verify@k", "weighted_vote@k"} <= set(models["grpo"]["hard_k"])
    for stage, members in (("eval_init", ("teacher", "hybrid_init")), ("eval_distill", ("distill", "distill_m1"))):
        for name in members:
            easy = st[stage][name]["easy"]
            assert easy["n"] == 64 and easy["accuracy"] <= ACCURACY_TOLERANCE, (stage, name)
    assert "distill_easy_vs_teacher" in names

    # Evaluation went through m1.eval's runner: its samples.jsonl and summary.json per set.
    assert (out / "eval" / "grpo" / "hard_k" / "samples.jsonl").exists()
    assert (out / "eval_init" / "teacher" / "easy" / "summary.json").exists()
    assert st["verifier"]["pairs"] == 16 and 0 <= st["verifier"]["pairwise_accuracy"] <= 1
    for stage in ("distill", "sft", "teacher_sft", "grpo", "teacher_grpo"):
        assert (out / stage / "run" / "final" / "model.safetensors").exists(), stage
    report = (out / "report.md").read_text()
    for heading in ("Targets", "Greedy accuracy", "KL(teacher || hybrid)", "Training stages", "Accuracy of every stage",
                    "Accuracy against wall-clock budget", "Engine throughput", "Constant-answer baseline"):
        assert heading in report, heading
    for png in ("accuracy_by_stage.png", "accuracy_vs_samples.png", "accuracy_vs_time.png", "throughput_vs_length.png"):
        assert (out / png).stat().st_size > 1000, png
        assert png in summary["plots"]

    # A rerun skips every finished stage and keeps the first run's numbers and timings.
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("skipped") == len(STAGES)
    again = json.loads((out / "summary.json").read_text())
    assert again["stages"] == summary["stages"]
    assert again["total_seconds"] == summary["total_seconds"]
    assert again["targets"] == summary["targets"]

    # A stage without its marker (a killed run) reruns, and so does every stage after it.
    (out / "speed" / "DONE.json").unlink()
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("skipped") == len(STAGES) - 1
