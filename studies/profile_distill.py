"""Where a distillation step's time goes on the GPU: `m1 distill`'s own trainer, profiled.

Converts SmolLM2 (attention init, no calibration: the step's cost does not depend on the init),
builds the trainer `m1 distill` builds (`m1.train.distill.build_trainer`, raw-text corpus, 64 x 512
tokens a step, bf16 autocast), and runs `--steps` steps with `torch.profiler` recording steps
[warmup, steps). Writes the top kernels by GPU time and the step time to OUT/profile_<loss>.txt.

    python studies/profile_distill.py --teacher T.gguf --data train_text.jsonl.gz --out $OUT
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from transformers import TrainerCallback  # noqa: E402

from m1.checkpoint import load_causal_lm, load_tokenizer  # noqa: E402
from m1.convert.mapping import convert_from_transformer  # noqa: E402
from m1.train.config import DistillConfig  # noqa: E402
from m1.train.distill import build_trainer  # noqa: E402
from m1.train.runs import prepare_out  # noqa: E402


class Profile(TrainerCallback):
    def __init__(self, warmup: int, prof):
        self.warmup, self.prof, self.t = warmup, prof, {}

    def on_step_begin(self, args, state, control, **kw):
        if state.global_step == self.warmup:
            torch.cuda.synchronize()
            self.t["start"] = time.perf_counter()
            self.prof.start()

    def on_step_end(self, args, state, control, **kw):
        if self.t.get("start") is not None:
            self.prof.step()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--teacher", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path("/tmp/m1prof"))
    p.add_argument("--steps", type=int, default=14)
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--loss", default="forward_kl")
    p.add_argument("--chunk", type=int, default=4096)
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    student = a.work / "student"
    if not (student / "config.json").exists():
        teacher = load_causal_lm(a.teacher)
        model = convert_from_transformer(teacher, [3, 8, 13, 18, 23, 28], init="attention", mamba_heads=36, mamba_head_dim=16,
                                         mamba_groups=36, state_size=16)
        model.save_pretrained(student)
        load_tokenizer(a.teacher).save_pretrained(student)
    cfg = DistillConfig(teacher=str(a.teacher), student=str(student), data=str(a.data), data_format="text", max_length=512,
                        per_device_batch_size=64, max_steps=a.steps, learning_rate=3e-4, bf16=True, loss=a.loss,
                        loss_chunk_size=a.chunk, save_steps=10_000, logging_steps=1000, out=str(a.work / f"run_{a.loss}_{a.chunk}"),
                        report_to=[], adam_beta2=0.95)
    prepare_out(cfg)
    trainer, _ = build_trainer(cfg)
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA])
    cb = Profile(a.warmup, prof)
    trainer.add_callback(cb)
    trainer.train()
    torch.cuda.synchronize()
    prof.stop()
    seconds = time.perf_counter() - cb.t["start"]
    n = a.steps - a.warmup
    head = (f"{torch.cuda.get_device_name(0)}, loss {a.loss}, chunk {a.chunk}, 64 x 512 tokens a step: "
            f"{seconds / n * 1000:.0f} ms a step under the profiler ({n * 64 * 512 / seconds:.0f} tok/s), "
            f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB\n")
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=45, max_name_column_width=70)
    (a.out / f"profile_{a.loss}_{a.chunk}.txt").write_text(head + table)
    print(head + table[:6000])


if __name__ == "__main__":
    main()
