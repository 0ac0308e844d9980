"""`m1 convert` end to end through the command line, calibrated init, on a tiny model (CPU in CI;
on a GPU machine the same test converts on the GPU, the path `m1 convert --device` picks there)."""

from __future__ import annotations

import gzip
import json

import torch

from m1.cli import main as m1_main
from m1.modeling import HybridForCausalLM
from tests.helpers import save_tiny_model


def test_convert_calibrated_from_a_gzip_text_file(tmp_path, capsys):
    teacher = save_tiny_model(tmp_path / "teacher")
    with gzip.open(tmp_path / "calib.jsonl.gz", "wt") as f:
        for i in range(40):
            f.write(json.dumps({"text": " ".join(str((i * 7 + j) % 50) for j in range(30))}) + "\n")
    out = tmp_path / "hybrid"
    rc = m1_main(["convert", str(teacher), str(out), "--attention-layers", "1", "--calibration-data", str(tmp_path / "calib.jsonl.gz"),
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
