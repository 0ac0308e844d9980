"""`m1 demo`: every stage end to end on the synthetic task, on a CPU, in minutes.

- `m1.demo.config`: the typed sizes of every stage (full and ``--quick``);
- `m1.demo.stages`: the stages, each a few calls into m1.tasks, m1.convert, m1.train, m1.eval;
- `m1.demo.report`: summary.json, report.md and the plots;
- this module: the run loop and the command line.

Each stage writes its own directory under ``--out`` and, last of all, a ``DONE.json`` marker
holding its results and its time. A rerun skips every stage whose marker exists (unless
``--force``), so a killed run resumes at the stage it was in, and the summary (times
included) is rebuilt from the markers.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from pathlib import Path

from m1.demo.config import Context, DemoConfig
from m1.demo.stages import STAGES, Stage, attention_layer_indices

log = logging.getLogger(__name__)

MARKER = "DONE.json"

__all__ = ["DemoConfig", "Context", "Stage", "STAGES", "attention_layer_indices", "run_stage", "run_demo", "build_parser", "cli_main"]


def run_stage(ctx: Context, stage: Stage, force: bool) -> bool:
    """Run one stage unless its marker says it finished with the same settings; returns
    whether it ran. The marker is written last, so a killed stage has none and reruns."""
    out = ctx.path(stage.name)
    marker = out / MARKER
    settings = {"quick": ctx.cfg.quick, "seed": ctx.cfg.seed}
    if marker.exists() and not force:
        done = json.loads(marker.read_text())
        if done.get("settings") == settings:
            ctx.results[stage.name] = done
            print(f"[{stage.name}] done earlier, skipped ({marker})", flush=True)
            return False
        log.info("%s was built with %s, now %s: rebuilding", stage.name, done.get("settings"), settings)
    if out.exists():
        shutil.rmtree(out)  # a partial stage from a killed run, or stale settings
    out.mkdir(parents=True)
    print(f"[{stage.name}] {stage.title} ...", flush=True)
    t0 = time.perf_counter()
    result = stage.run(ctx, out)
    result["stage_seconds"] = round(time.perf_counter() - t0, 1)
    result["settings"] = settings
    marker.write_text(json.dumps(result, indent=1))
    ctx.results[stage.name] = result
    print(f"[{stage.name}] done in {result['stage_seconds']:.1f}s", flush=True)
    return True


def run_demo(cfg: DemoConfig) -> dict:
    import torch

    from m1.demo.report import demo_summary, write_demo_report

    torch.set_num_threads(cfg.threads)
    cfg.out.mkdir(parents=True, exist_ok=True)
    ctx = Context(cfg)
    t0 = time.perf_counter()
    ran = False
    for stage in STAGES:
        # Once a stage has run, everything after it is stale and runs too.
        ran = run_stage(ctx, stage, force=cfg.force or ran) or ran
    summary = demo_summary(ctx)
    summary["this_invocation_seconds"] = round(time.perf_counter() - t0, 1)
    (cfg.out / "summary.json").write_text(json.dumps(summary, indent=1))
    write_demo_report(summary, cfg.out / "report.md")
    return summary


def build_parser() -> argparse.ArgumentParser:
    stages = "\n".join(f"  {s.name:<16} {s.title}" for s in STAGES)
    p = argparse.ArgumentParser(
        prog="m1 demo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run every m1 stage end to end on a tiny synthetic reasoning task, on CPU. "
        "Finished stages are skipped on rerun.\n\nstages, in order:\n" + stages,
        epilog="Outputs under --out: one directory per stage, summary.json (results, targets, versions), report.md and plots.",
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output directory (default: runs/demo)")
    p.add_argument("--quick", action="store_true", help="tiny sizes for CI: a few minutes, accuracy targets do not apply")
    p.add_argument("--seed", type=int, default=0, help="seed for data and training (default: 0)")
    p.add_argument("--force", action="store_true", help="rerun stages even if they finished earlier")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch CPU threads (default: all cores)")
    return p


def cli_main(argv: list[str]) -> int:
    from m1.demo.report import targets_table

    args = build_parser().parse_args(argv)
    cfg = DemoConfig.make(out=args.out, quick=args.quick, seed=args.seed, force=args.force, threads=args.threads)
    summary = run_demo(cfg)
    print("\n".join(targets_table(summary)), flush=True)
    print(f"demo finished: {summary['total_seconds']:.0f}s of stage time", flush=True)
    for png in summary.get("plots", []):
        print(f"plot:    {cfg.out / png}", flush=True)
    print(f"summary: {cfg.out / 'summary.json'}", flush=True)
    print(f"report:  {cfg.out / 'report.md'}", flush=True)
    return 0
