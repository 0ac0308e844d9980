"""The distillation study through the product's commands (issue 19): `m1 convert` + `m1 distill`.

SmolLM2-135M-Instruct (the GGUF teacher) -> a hybrid keeping attention at 6 of 30 layers, in
M1's state-16 Mamba shape (36 heads x 16, 36 groups, state 16) unless `--shape head` (9 x 64,
state 64). Two recipes on the same packed text (`studies/build_train_text.py`), the same
steps, batch and schedule:

- `m1-paper`: `m1 convert --init attention`, then `m1 distill --loss reverse_kl` (one stage);
- `staged`:   `m1 convert --init calibrated` (calibration rows from the same text), then
              `m1 distill --stages align,kl --align-fraction 0.1 --loss forward_kl`.

Both: 64 rows x 512 tokens a step, AdamW (beta2 0.95, no weight decay), peak lr 3e-4, 5%
warm-up then cosine, bf16 autocast, full-vocabulary divergence in chunks of 4,096 tokens.

The GPU machine allows 10 minutes a call, so each call of this script continues the run:
the student is converted once, `m1 distill --resume --max-seconds S` trains until S and saves
a complete checkpoint (exit 75), and the newest checkpoint is then measured. Everything
lives under `--work` (the device's /tmp survives between back-to-back calls); each call
appends its records to `--work/records.jsonl` and copies them to `--out`.

Held-out measures (the study's, `m1.convert.fidelity`): MATH500 as raw text cut at 512
tokens, fp32: KL(teacher || hybrid), the reverse KL, the perplexity ratio, top-1 agreement;
and the perplexity ratio on 32 rows of 2,048 tokens joined from MATH500 solutions.

    python studies/distill_cli.py --recipe staged --teacher T.gguf --data train_text.jsonl.gz \\
        --math500 math500.jsonl --work /tmp/m1cli --budget 540 --out $OUT
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from m1.checkpoint import load_causal_lm, load_tokenizer  # noqa: E402
from m1.convert.fidelity import fidelity, joined_sequences, math500_texts, tokenize_texts  # noqa: E402
from m1.modeling import HybridForCausalLM  # noqa: E402
from m1.train.runs import complete_checkpoints  # noqa: E402

UNIFORM = "3,8,13,18,23,28"
SHAPES = {
    "state16": ["--mamba-heads", "36", "--mamba-head-dim", "16", "--mamba-groups", "36", "--state-size", "16"],
    "head": [],  # m1 convert's default: the teacher's query heads x head dim, state = head dim (9 x 64, state 64)
}
STATE_SIZE = {"state16": 16, "head": 64}
ROWS, LENGTH = 64, 512  # rows a step, tokens a row (--rows/--length change them for a CPU smoke run only)


def sh(cmd: list[str], log: Path) -> int:
    """Run a product command, its output teed to `log` and to this process's stdout."""
    print("$ " + " ".join(cmd), flush=True)
    with log.open("a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in p.stdout:
            f.write(line)
            if "it/s]" not in line and "s/it]" not in line:  # progress-bar redraws go to the log only
                sys.stdout.write(line)
        return p.wait()


def env_record() -> dict:
    import transformers

    try:
        import trl

        trl_v = trl.__version__
    except ImportError:
        trl_v = None
    commit = os.environ.get("M1_COMMIT") or subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                                            cwd=Path(__file__).parent).stdout.strip() or "unknown"
    return {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu",
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": commit,
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "transformers": transformers.__version__, "trl": trl_v}}


def newest(run: Path) -> tuple[Path | None, int, str]:
    """(checkpoint dir, training tokens so far, stage) of the newest model a run has written."""
    align_steps = 0
    align = run / "align"
    if align.exists():
        cfg = (align / "config.yaml").read_text()
        align_steps = int(next(l.split(":")[1] for l in cfg.splitlines() if l.startswith("max_steps:")))
        if not (align / "final" / "config.json").exists():
            done = complete_checkpoints(align)
            if not done:
                return None, 0, "align"
            step = int(done[-1].name.split("-")[1])
            return done[-1], step * ROWS * LENGTH, "align"
    if (run / "final" / "config.json").exists():
        cfg = (run / "config.yaml").read_text()
        steps = int(next(l.split(":")[1] for l in cfg.splitlines() if l.startswith("max_steps:")))
        return run / "final", (align_steps + steps) * ROWS * LENGTH, "final"
    done = complete_checkpoints(run)
    if not done:
        return (align / "final", align_steps * ROWS * LENGTH, "align") if align_steps else (None, 0, "kl")
    step = int(done[-1].name.split("-")[1])
    return done[-1], (align_steps + step) * ROWS * LENGTH, "kl"


def main() -> None:
    global ROWS, LENGTH
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", choices=["staged", "m1-paper"], required=True)
    p.add_argument("--shape", choices=list(SHAPES), default="state16")
    p.add_argument("--attention-layers", default=UNIFORM, help="list, or auto:K (measured placement)")
    p.add_argument("--teacher", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True, help="train_text.jsonl.gz (studies/build_train_text.py)")
    p.add_argument("--math500", type=Path, required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--out", type=Path, default=None, help="copy records and logs here after the call")
    p.add_argument("--tokens", type=float, default=40e6, help="training tokens of the whole run (align included)")
    p.add_argument("--budget", type=float, default=540, help="seconds this call may take, measuring included")
    p.add_argument("--eval-reserve", type=float, default=75, help="seconds kept for measuring at the end")
    p.add_argument("--calibration-seconds", type=float, default=60)
    p.add_argument("--rows", type=int, default=ROWS, help="rows a step (smoke runs only)")
    p.add_argument("--length", type=int, default=LENGTH, help="tokens a row (smoke runs only)")
    p.add_argument("--heldout-limit", type=int, default=0, help="first N MATH500 rows and 2 long rows (smoke runs only; 0: all)")
    p.add_argument("--name", default=None, help="run folder name (default: recipe[-shape][-placement])")
    a = p.parse_args()
    ROWS, LENGTH = a.rows, a.length
    t_start = time.monotonic()
    name = a.name or "-".join([a.recipe] + ([a.shape] if a.shape != "state16" else []) +
                              ([a.attention_layers.replace(":", "")] if a.attention_layers != UNIFORM else []))
    root = a.work / name
    root.mkdir(parents=True, exist_ok=True)
    log = root / "commands.log"
    student, run = root / "student", root / "run"
    steps = round(a.tokens / (ROWS * LENGTH))
    m1 = [sys.executable, "-m", "m1.cli"]

    if not (student / "config.json").exists():
        shutil.rmtree(student, ignore_errors=True)
        cmd = m1 + ["convert", str(a.teacher), str(student), "--attention-layers", a.attention_layers, *SHAPES[a.shape]]
        if a.recipe == "staged":
            cmd += ["--init", "calibrated", "--calibration-data", str(a.data), "--calibration-sequences", "64" if ROWS == 64 else "4",
                    "--calibration-length", str(LENGTH), "--calibration-seconds", str(a.calibration_seconds)]
        else:
            cmd += ["--init", "attention"]
        t0 = time.monotonic()
        rc = sh(cmd, log)
        (root / "convert_seconds.txt").write_text(f"{time.monotonic() - t0:.1f}\n")
        if rc != 0:
            raise SystemExit(f"m1 convert failed ({rc}); see {log}")

    records = a.work / "records.jsonl"
    seen = [json.loads(l) for l in records.read_text().splitlines()] if records.exists() else []
    mine = [r for r in seen if r["run"] == name]

    teacher = tok = held = None

    def measure(model_dir: Path, tokens: int, stage: str, extra: dict) -> None:
        nonlocal teacher, tok, held
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        if teacher is None:
            teacher = load_causal_lm(a.teacher).to(dev).eval()
            tok = load_tokenizer(a.teacher)
            ids, mask = tokenize_texts(tok, math500_texts(a.math500, a.heldout_limit or None), 512)
            long_rows = joined_sequences(tok, math500_texts(a.math500), 2048, 2 if a.heldout_limit else 32)
            held = (ids.to(dev), mask.to(dev), long_rows.to(dev))
        t0 = time.monotonic()
        s = HybridForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).to(dev).eval()
        f = fidelity(teacher, s, held[0], held[1], batch=32)
        f2 = fidelity(teacher, s, held[2], None, batch=8)
        del s
        layers = list(HybridForCausalLM.config_class.from_pretrained(str(student)).attention_layers)
        rec = dict(env_record(), run=name, method="cli", recipe=a.recipe, attention_layers=layers, state_size=STATE_SIZE[a.shape],
                   shape=a.shape, heldout="math500", tokens=tokens, target_tokens=steps * ROWS * LENGTH, stage=stage,
                   checkpoint=str(model_dir.relative_to(root)), heldout_kl=f["heldout_kl"], heldout_kl_reverse=f["heldout_kl_reverse"],
                   ppl_ratio=f["ppl_ratio"], ppl_ratio_2048=f2["ppl_ratio"], heldout_kl_2048=f2["heldout_kl"],
                   top1_agreement=f["top1_agreement"], heldout_tokens=f["tokens"], measure_seconds=round(time.monotonic() - t0, 1), **extra)
        with records.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
        print("RECORD " + json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rec.items() if k != "versions"}), flush=True)

    if not any(r["tokens"] == 0 for r in mine):
        extra = {}
        if (student / "calibration.json").exists():
            extra["calibration_seconds_total"] = json.loads((student / "calibration.json").read_text()).get("seconds", {}).get("total")
        measure(student, 0, "init", extra)
        if teacher is not None:
            del teacher
            teacher = None
            torch.cuda.empty_cache()

    left = a.budget - (time.monotonic() - t_start) - a.eval_reserve
    ckpt, tokens, stage = newest(run)
    if stage != "final" and left > 30:
        cmd = m1 + ["distill", "--teacher", str(a.teacher), "--student", str(student), "--data", str(a.data), "--data-format", "text",
                    "--max-length", str(LENGTH), "--per-device-batch-size", str(ROWS), "--max-steps", str(steps),
                    "--learning-rate", "3e-4", "--warmup-steps", "0.05", "--adam-beta2", "0.95", "--weight-decay", "0",
                    "--lr-scheduler", "cosine", "--loss-chunk-size", "4096", "--save-steps", "100",
                    "--save-total-limit", "1", "--logging-steps", "10", "--out", str(run), "--resume", "--max-seconds", f"{left:.0f}",
                    "--report-to"]
        if torch.cuda.is_available():
            cmd += ["--bf16"]
        if a.recipe == "staged":
            cmd += ["--loss", "forward_kl", "--stages", "align,kl", "--align-fraction", "0.1", "--align-learning-rate", "1e-3"]
        else:
            cmd += ["--loss", "reverse_kl"]
        t0 = time.monotonic()
        before = tokens
        rc = sh(cmd, log)
        took = time.monotonic() - t0
        if rc not in (0, 75):
            raise SystemExit(f"m1 distill failed ({rc}); see {log}")
        ckpt, tokens, stage = newest(run)
        print(f"distill call: rc {rc}, {(tokens - before) / 1e6:.2f}M tokens in {took:.0f}s "
              f"({(tokens - before) / max(took, 1e-9):.0f} tok/s including loading), now {tokens / 1e6:.2f}M, stage {stage}", flush=True)
        if ckpt is not None and not any(r["tokens"] == tokens for r in mine):
            measure(ckpt, tokens, stage, {"call_seconds": round(took, 1), "call_tokens": tokens - before})
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        shutil.copy(records, a.out / "records.jsonl")
        for src, dst in [(log, f"{name}_commands.log"), (run / "metrics.jsonl", f"{name}_metrics.jsonl"),
                         (run / "align" / "metrics.jsonl", f"{name}_align_metrics.jsonl"), (student / "calibration.json", f"{name}_calibration.json")]:
            if src.exists():
                shutil.copy(src, a.out / dst)
    print(f"done in {time.monotonic() - t_start:.0f}s", flush=True)


if __name__ == "__main__":
    main()
