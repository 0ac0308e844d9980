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

__all__ = ["DemoConfig", "Context", "Stage", "STAGES", "attention_layer_indices", "run_stage", "run_stages", "run_demo", "stage_batches", "build_parser", "cli_main"]


def is_done(ctx: Context, stage: Stage) -> bool:
    """Whether the stage's marker holds a finished run with the current settings."""
    marker = ctx.path(stage.name) / MARKER
    if not marker.exists():
        return False
    return json.loads(marker.read_text()).get("settings") == {"quick": ctx.cfg.quick, "seed": ctx.cfg.seed}


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


def _stage_in_worker(cfg: DemoConfig, name: str, force: bool) -> tuple[bool, dict]:
    """One stage of a parallel group in its own single-thread process (see `Stage.group`)."""
    import dataclasses

    import torch

    torch.set_num_threads(1)
    ctx = Context(dataclasses.replace(cfg, threads=1))  # the recipes read their thread count from here
    for stage in STAGES:  # the results of earlier stages, as their markers hold them
        if stage.name == name:
            break
        marker = ctx.path(stage.name) / MARKER
        if marker.exists():
            ctx.results[stage.name] = json.loads(marker.read_text())
    ran = run_stage(ctx, next(s for s in STAGES if s.name == name), force)
    return ran, ctx.results[name]


def stage_batches(stages: list[Stage]) -> list[list[Stage]]:
    """Stages in order, consecutive members of one group together."""
    out: list[list[Stage]] = []
    for s in stages:
        if out and s.group and out[-1][0].group == s.group:
            out[-1].append(s)
        else:
            out.append([s])
    return out


def run_stages(cfg: DemoConfig, until: str | None = None) -> Context:
    """Every stage in order (up to and including ``until``), finished ones skipped; returns
    the context holding each stage's results."""
    import concurrent.futures
    import multiprocessing

    import torch

    torch.set_num_threads(cfg.threads)
    cfg.out.mkdir(parents=True, exist_ok=True)
    ctx = Context(cfg)
    ran = False
    for batch in stage_batches(STAGES):
        if until is not None and until not in ctx.results and any(s.name == until for s in batch):
            batch = batch[: [s.name for s in batch].index(until) + 1]
        # Once a stage has run, everything after it is stale and runs too.
        force = cfg.force or ran
        if len(batch) == 1 or cfg.threads < 2:
            for stage in batch:
                ran = run_stage(ctx, stage, force=force or ran) or ran
            if until is not None and until in ctx.results:
                break
            continue
        if not force:  # members finished earlier are skipped here, not in a worker process
            for stage in [s for s in batch if is_done(ctx, s)]:
                run_stage(ctx, stage, force=False)
            batch = [s for s in batch if s.name not in ctx.results]
            if len(batch) < 2:
                for stage in batch:
                    ran = run_stage(ctx, stage, force=False) or ran
                if until is not None and until in ctx.results:
                    break
                continue
        g0 = time.perf_counter()
        with concurrent.futures.ProcessPoolExecutor(len(batch), mp_context=multiprocessing.get_context("spawn")) as pool:
            done = list(pool.map(_stage_in_worker, [cfg] * len(batch), [s.name for s in batch], [force] * len(batch)))
        wall = round(time.perf_counter() - g0, 1)
        for stage, (stage_ran, result) in zip(batch, done):
            ran = ran or stage_ran
            if stage_ran:  # the group's wall time, for the run's total (its members overlap)
                result["group_wall_seconds"] = wall
                (ctx.path(stage.name) / MARKER).write_text(json.dumps(result, indent=1))
            ctx.results[stage.name] = result
        if until is not None and until in ctx.results:
            break
    return ctx


def run_demo(cfg: DemoConfig) -> dict:
    from m1.demo.report import demo_summary, write_demo_report

    t0 = time.perf_counter()
    ctx = run_stages(cfg)
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
    import sys

    from m1.demo.report import targets_table
    from m1.errors import UserError

    args = build_parser().parse_args(argv)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {args.out}: cannot create it ({e.strerror or e})") from None
    if not sys.stderr.isatty():
        # A log file, not a terminal: progress bars redraw at most every 30 s, so the log stays
        # readable (tqdm reads TQDM_* defaults from the environment; worker processes inherit it).
        os.environ.setdefault("TQDM_MININTERVAL", "30")
    cfg = DemoConfig.make(out=args.out, quick=args.quick, seed=args.seed, force=args.force, threads=args.threads)
    summary = run_demo(cfg)
    print("\n".join(targets_table(summary)), flush=True)
    print(f"demo finished: {summary['total_seconds']:.0f}s of stage time", flush=True)
    for png in summary.get("plots", []):
        print(f"plot:    {cfg.out / png}", flush=True)
    print(f"summary: {cfg.out / 'summary.json'}", flush=True)
    print(f"report:  {cfg.out / 'report.md'}", flush=True)
    return 0
