"""Distillation study on a real pretrained teacher (issue 11): SmolLM2-135M-Instruct -> hybrid.

Compares, at equal training tokens, on the same data in the same order, with the same 6
attention layers and M1's state-16 Mamba shape (36 heads x 16, 36 groups, state 16):

- `m1-paper`: M1's recipe: the attention copy (`--init attention`), then end-to-end reverse KL;
- `staged`:   `--init calibrated` (m1.convert.calibrate), a teacher-forced `align` stage (only the
              mixers train; `m1.train.distill.align_loss`), then end-to-end forward KL.

Held-out measures (fixed by the issue): MATH500 as raw text (problem + "\\n\\n" + solution,
no chat template) cut at 512 tokens, in fp32: forward KL(teacher || hybrid) and the reverse
KL over the full vocabulary, the perplexity ratio exp(NLL_hybrid - NLL_teacher), greedy
top-1 agreement, and the perplexity ratio on 2,048-token rows made by joining solutions.

The training loop here is a plain PyTorch loop over m1's own pieces (the calibration, the
align loss and the chunked divergence that `m1 distill` uses), because the device image has
no TRL; `m1 distill --stages align,kl` runs the same losses through TRL's trainer.

Training text (never MATH500): GSM8K train solutions, AIME 1983-2023 solutions, MATH train
problems with answers, and other models' completions on non-MATH500 benchmarks
(../shared/data), packed into 512-token rows in one fixed shuffled order.

Getting the teacher onto the device: the GGUF file (98 MB) is larger than one call carries,
so it travels in two parts under an ignored folder and is joined in /tmp (which survives
between calls while the machine is warm):

    call 1: carry .devcarry/a  ->  cp .devcarry/a/* /tmp/m1study/
    call 2: carry .devcarry/b  ->  cp .devcarry/b/* /tmp/m1study/; cat /tmp/m1study/gguf.part.* > /tmp/m1study/smollm2.gguf
            python studies/distill_smollm2.py --recipe staged --data /tmp/m1study ...

Each run writes one JSON record per evaluation point to OUT/distill_smollm2_<recipe>.jsonl
(device, date, versions, commit, seconds, and the issue's schema fields).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import platform
import random
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from m1.convert.calibrate import CalibrationConfig, calibrate  # noqa: E402
from m1.checkpoint import load_causal_lm, load_tokenizer  # noqa: E402
from m1.convert.mapping import convert_from_transformer  # noqa: E402
from m1.convert.fidelity import fidelity, joined_sequences, math500_texts, tokenize_texts  # noqa: E402
from m1.train.align import align_loss  # noqa: E402
from m1.train.losses import chunked_divergence  # noqa: E402

UNIFORM = [3, 8, 13, 18, 23, 28]  # 6 of 30, evenly spaced (M1's share of attention)
STATE16 = dict(mamba_heads=36, mamba_head_dim=16, mamba_groups=36, state_size=16)


def env_record() -> dict:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent).stdout.strip()
    import transformers

    return {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__},
        "commit": commit or os.environ.get("M1_COMMIT", "unknown"),
    }


def train_rows(tokenizer, data_dir: Path, seq_len: int, seed: int) -> torch.Tensor:
    texts = [json.loads(l)["text"] for l in gzip.open(data_dir / "train_text.jsonl.gz", "rt")]
    random.Random(seed).shuffle(texts)
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        stream += ids + [eos]
    n = len(stream) // seq_len
    return torch.tensor(stream[: n * seq_len]).view(n, seq_len)


@torch.no_grad()
def evaluate(teacher32, student, held, held_mask, long_rows) -> dict:
    s32 = student.float().eval()
    f = fidelity(teacher32, s32, held, held_mask, batch=32)
    f2 = fidelity(teacher32, s32, long_rows, None, batch=8)
    return {
        "heldout_kl": f["heldout_kl"], "heldout_kl_reverse": f["heldout_kl_reverse"], "ppl_ratio": f["ppl_ratio"],
        "top1_agreement": f["top1_agreement"], "ppl_ratio_2048": f2["ppl_ratio"], "heldout_kl_2048": f2["heldout_kl"],
        "heldout_tokens": f["tokens"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", choices=["staged", "m1-paper"], required=True)
    p.add_argument("--data", type=Path, required=True, help="folder with smollm2.gguf, train_text.jsonl.gz, math500.jsonl")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tokens", type=float, default=30e6, help="student training tokens (align included)")
    p.add_argument("--deadline-s", type=float, default=520, help="stop training after this many seconds of the run")
    p.add_argument("--eval-at", default="0,1e6,2.5e6,5e6,10e6,20e6,30e6")
    p.add_argument("--attention-layers", default=",".join(map(str, UNIFORM)))
    p.add_argument("--batch", type=int, default=64, help="512-token rows per step")
    p.add_argument("--lr", type=float, default=3e-4, help="peak lr of the end-to-end stage (both recipes)")
    p.add_argument("--align-fraction", type=float, default=0.1)
    p.add_argument("--align-lr", type=float, default=1e-3)
    p.add_argument("--calib-seconds", type=float, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--heldout-limit", type=int, default=0, help="first N MATH500 rows only (smoke runs; 0: all 500)")
    p.add_argument("--calib-rows", type=int, default=64)
    args = p.parse_args()

    t_start = time.monotonic()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # CPU only for a smoke run
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    rec_path = args.out / f"distill_smollm2_{args.recipe}.jsonl"
    base = env_record()
    layers = [int(x) for x in args.attention_layers.split(",")]
    gguf = args.data / "smollm2.gguf"
    teacher32 = load_causal_lm(gguf).to(dev).eval()
    tok = load_tokenizer(gguf)
    teacher = load_causal_lm(gguf, dtype=torch.bfloat16 if dev.type == "cuda" else torch.float32).to(dev).eval().requires_grad_(False)

    held_texts = math500_texts(args.data / "math500.jsonl", limit=args.heldout_limit or None)
    held, held_mask = tokenize_texts(tok, held_texts, 512)
    long_rows = joined_sequences(tok, math500_texts(args.data / "math500.jsonl"), 2048, 32 if not args.heldout_limit else 2)
    held, held_mask, long_rows = held.to(dev), held_mask.to(dev), long_rows.to(dev)
    rows = train_rows(tok, args.data, 512, args.seed)
    print(f"train rows {rows.shape}, {rows.numel() / 1e6:.1f}M tokens; held-out {int(held_mask.sum())} tokens", flush=True)

    t0 = time.monotonic()
    student = convert_from_transformer(teacher32, layers, init="attention", **STATE16).to(dev)
    calib_report = None
    if args.recipe == "staged":
        calib_ids = rows[-args.calib_rows :].to(dev)  # calibration rows come from the end of the order, the training from the start
        calib_report = calibrate(student, teacher32, calib_ids, None, CalibrationConfig(fit_seconds=args.calib_seconds, fit_batch=8), progress=False)
    init_seconds = time.monotonic() - t0

    tokens_per_step = args.batch * rows.shape[1]
    total_steps = int(args.tokens // tokens_per_step)
    align_steps = int(total_steps * args.align_fraction) if args.recipe == "staged" else 0
    eval_at = sorted(float(x) for x in args.eval_at.split(","))
    mixers = [q for n, q in student.named_parameters() if ".mamba." in n]
    step, tokens, next_eval = 0, 0, 0

    def record(extra):
        r = dict(base, recipe=args.recipe, attention_layers=layers, state_size=16, heldout="math500", tokens=tokens, step=step,
                 seconds=time.monotonic() - t_start, init_seconds=init_seconds, **extra)
        with rec_path.open("a") as f:
            f.write(json.dumps(r) + "\n")
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if k not in ("versions",)}), flush=True)

    def maybe_eval(force=False):
        nonlocal next_eval
        if force or (next_eval < len(eval_at) and tokens >= eval_at[next_eval]):
            while next_eval < len(eval_at) and tokens >= eval_at[next_eval]:
                next_eval += 1
            student.eval()
            m = evaluate(teacher32, student, held, held_mask, long_rows)
            student.train()
            record(dict(m, stage="align" if step < align_steps else "kl"))

    if calib_report is not None:
        record({"stage": "calibrated", **evaluate(teacher32, student, held, held_mask, long_rows), "calibration": calib_report.to_dict()})
        next_eval = 1
    student.train()
    opt_align = torch.optim.AdamW(mixers, lr=args.align_lr, weight_decay=0.0) if align_steps else None
    opt = torch.optim.AdamW(student.parameters(), lr=args.lr, weight_decay=0.0, betas=(0.9, 0.95))
    kl_steps = total_steps - align_steps
    warm = max(1, kl_steps // 20)

    def lr_at(i, n, w):
        return min(1.0, (i + 1) / w) * 0.5 * (1 + math.cos(math.pi * min(i, n) / max(n, 1)))

    last_loss = None
    stopped_by_deadline = False
    while step < total_steps:
        if time.monotonic() - t_start > args.deadline_s:
            stopped_by_deadline = True
            break
        maybe_eval()
        ids = rows[(step * args.batch) % rows.shape[0] :][: args.batch].to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            if step < align_steps:
                loss = align_loss(student, teacher, ids)
                o = opt_align
                for g in o.param_groups:
                    g["lr"] = args.align_lr * lr_at(step, align_steps, max(1, align_steps // 20))
            else:
                with torch.no_grad():
                    t_hidden = teacher.model(input_ids=ids).last_hidden_state[:, :-1].reshape(-1, teacher.config.hidden_size)
                kind = "reverse_kl" if args.recipe == "m1-paper" else "forward_kl"

                def loss_fn(hidden, head):
                    return chunked_divergence(hidden[:, :-1].reshape(-1, hidden.shape[-1]), t_hidden, head, teacher.lm_head, kind, 4096)

                loss = student(input_ids=ids, chunked_loss=loss_fn).loss / t_hidden.shape[0]
                o = opt
                for g in o.param_groups:
                    g["lr"] = args.lr * lr_at(step - align_steps, kl_steps, warm)
        o.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        o.step()
        last_loss = loss.item() if step % 50 == 0 else last_loss
        if step % 50 == 0:
            print(f"step {step}/{total_steps} tokens {tokens / 1e6:.2f}M loss {last_loss:.4f} {time.monotonic() - t_start:.0f}s", flush=True)
        step += 1
        tokens += tokens_per_step
    maybe_eval(force=True)
    record({"stage": "final", "stopped_by_deadline": stopped_by_deadline, "target_tokens": args.tokens,
            "tokens_per_s": tokens / max(1e-9, time.monotonic() - t_start - init_seconds), **evaluate(teacher32, student, held, held_mask, long_rows)})


if __name__ == "__main__":
    main()
