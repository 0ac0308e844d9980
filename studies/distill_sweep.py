"""How much the demo's distillation result varies, and which settings give it a margin.

The demo's `distill_easy_vs_teacher` target (the distilled hybrid's greedy easy accuracy over the
teacher's, >= 0.95) was 0.978 and 0.988 on an Intel Xeon and 0.932 on an AMD EPYC (2 cores each,
same code and seed: the CPUs round the teacher's training differently, so the teacher itself
differs). This script reruns the demo's `distill` stage from a finished demo run's teacher and
calibrated hybrid (`m1 demo --out DIR`), with a training seed and `DistillSizes` of choice, and
measures it as the demo's `eval_distill` stage does (greedy, the first 500 easy test problems),
against that run's teacher.

    python studies/distill_sweep.py --demo runs/demo --out /tmp/dsweep/base_s1 --seed 1
    python studies/distill_sweep.py --demo runs/demo --out /tmp/dsweep/steps750 --set steps=750
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from m1.demo.config import Context, DemoConfig, DistillSizes  # noqa: E402
from m1.demo.stages import _test, evaluate, stage_distill  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--demo", type=Path, required=True, help="a finished full demo run (teacher, convert, eval_init)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0, help="training seed (the data stay the demo run's)")
    p.add_argument("--set", action="append", default=[], help="DistillSizes field=value")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    base = DistillSizes()
    over = {}
    for item in a.set:
        k, v = item.split("=", 1)
        cur = getattr(base, k)
        over[k] = (v.lower() in ("1", "true")) if isinstance(cur, bool) else type(cur)(v)
    sizes = dataclasses.replace(base, m1_baseline=False, **over)
    a.out.mkdir(parents=True, exist_ok=True)
    for stage in ("data", "tokenizer", "teacher", "convert", "convert_teacher"):
        link = a.out / stage
        if not link.exists():
            link.symlink_to((a.demo / stage).resolve())
    cfg = dataclasses.replace(DemoConfig.make(a.out, seed=a.seed, threads=a.threads), distill=sizes)
    ctx = Context(cfg)
    t0 = time.perf_counter()
    if not (a.out / "distill" / "run" / "final" / "config.json").exists():
        (a.out / "distill").mkdir(exist_ok=True)
        r = stage_distill(ctx, a.out / "distill")
        curve = r.get("loss_curve", [])
    else:
        curve = []
    train_s = time.perf_counter() - t0
    e = cfg.init_eval
    s = evaluate(ctx, a.out / "distill" / "run" / "final", _test(ctx, "easy"), a.out / "eval", n=1, limit=e.n_easy,
                 temperature=0.0, max_tokens=e.max_tokens_easy)
    teacher = json.loads((a.demo / "summary.json").read_text())["accuracy"]["teacher/easy"]
    acc = s["pass@1"]["mean"]
    rec = {"demo": str(a.demo), "seed": a.seed, "sizes": dataclasses.asdict(sizes), "distill_easy": acc, "teacher_easy": teacher,
           "ratio": acc / teacher, "met": acc / teacher >= 0.95, "ci95": s["pass@1"]["ci95"], "problems": s["problems"],
           "train_seconds": round(train_s, 1), "final_loss": curve[-1][1] if curve else None, "torch": torch.__version__}
    (a.out / "result.json").write_text(json.dumps(rec, indent=1))
    print(json.dumps(rec))


if __name__ == "__main__":
    main()
