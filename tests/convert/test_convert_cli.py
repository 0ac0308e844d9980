"""`m1 convert` end to end through the command line, calibrated init, on a tiny model (CPU in CI;
on a GPU machine the same test converts on the GPU, the path `m1 convert --device` picks there)."""

from __future__ import annotations

import json

import torch

from m1.cli import main as m1_main
from m1.modeling import HybridForCausalLM
from tests.helpers import convert_with_auto_placement, save_tiny_model, write_calibration_text


def test_convert_calibrated_from_a_gzip_text_file(tmp_path, capsys):
    teacher = save_tiny_model(tmp_path / "teacher")
    calib = write_calibration_text(tmp_path / "calib.jsonl.gz")
    out = tmp_path / "hybrid"
    rc = m1_main(["convert", str(teacher), str(out), "--attention-layers", "1", "--calibration-data", str(calib),
                  "--calibration-sequences", "4", "--calibration-length", "32", "--calibration-seconds", "2"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "calibrated 1 Mamba layers on 128 tokens" in printed
    report = json.loads((out / "calibration.json").read_text())
    assert report["tokens"] == 128 and len(report["layers"]) == 1
    layer = report["layers"][0]
    assert layer["rel_mse_fit"] < layer["rel_mse_copy"]  # the fit moved the mixer towards the attention it replaces
    model = HybridForCausalLM.from_pretrained(out)
    assert list(model.config.attention_layers) == [1]
    assert next(model.parameters()).device == torch.device("cpu")  # written from wherever it was calibrated
    ids = torch.randint(0, 90, (1, 12))
    assert torch.isfinite(model(ids).logits).all()


def test_convert_auto_placement_keeps_its_ranking_beside_the_checkpoint(tmp_path, monkeypatch):
    """`auto:K` writes placement.json and placement.png into the output. The checkpoint's atomic write replaces the
    whole directory, so files written before it vanished: a 2026-12-06 GPU run lost its ranking this way."""
    import m1.convert.placement as P

    monkeypatch.setattr(P, "MIN_TOKENS_PER_CANDIDATE", 0)
    out = convert_with_auto_placement(tmp_path, "cpu", 1)
    ranking = json.loads((out / "placement.json").read_text())
    assert (out / "placement.png").stat().st_size > 0
    n_layers = json.loads((tmp_path / "teacher" / "config.json").read_text())["num_hidden_layers"]
    assert sorted(r["layer"] for r in ranking["ranking"]) == list(range(n_layers)) and len(ranking["chosen"]) == 1
    model = HybridForCausalLM.from_pretrained(out)
    assert list(model.config.attention_layers) == ranking["chosen"]
    assert (out / "calibration.json").exists()
