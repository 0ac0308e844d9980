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
    assert "Greedy accuracy" in (out / "report.md").read_text()

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
