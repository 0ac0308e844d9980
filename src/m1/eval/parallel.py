"""Data-parallel evaluation: one generator per process, a fixed split, one merged result.

Two ways in, same outcome:
- ``m1 eval --data-parallel N`` spawns N worker processes (``torch.multiprocessing``);
- ``torchrun --nproc_per_node N -m m1.cli eval ...`` runs one rank per process
  (``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` from the environment, a gloo group for the
  barrier only).

Each rank loads its own generator (HF model or m1 Engine) on ``cuda:<local rank>`` when the
host has enough GPUs, else on the CPU with ``cpu_count // N`` threads. Problem ``i`` of a
benchmark goes to rank ``i % N``: the split depends on the problem list alone, never on
timing. Sampling seeds are per (benchmark, problem, chunk) (`loop.chunk_seed`), so every
sample is the one a single process would draw, given the same arithmetic on the device.

Each rank streams to ``OUT/shards/rank<r>-of-<N>/samples.jsonl`` (and resumes from it, as
the single-process loop does). When all ranks are done, rank 0 (or the parent) merges the
shards into ``OUT/samples.jsonl`` in single-process order (benchmark, problem, sample) and
writes ``OUT/summary.json`` from it. Rows of an earlier single-process run in
``OUT/samples.jsonl`` are handed to their shards first, so a run can resume across modes.

Timing: ``gen_time_s`` and ``samples_per_s`` keep their single-process meaning (the sum of
per-sample generation time, so samples/s is one generator's throughput, comparable across
models in `m1 scaling`); ``wall_time_s`` becomes the longest rank's generation time, and
``summary.json`` records ``data_parallel``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from datetime import timedelta
from pathlib import Path

from m1.eval.loop import EvalConfig, write_summary
from m1.eval.samples import read_samples, summarize_samples

logger = logging.getLogger(__name__)


def dist_env() -> tuple[int, int, int] | None:
    """(rank, world, local_rank) when launched by torchrun with more than one process, else None."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    rank = int(os.environ["RANK"])
    return rank, world, int(os.environ.get("LOCAL_RANK", rank))


def shard_dir(out: Path, rank: int, world: int) -> Path:
    return out / "shards" / f"rank{rank}-of-{world}"


def rank_device(local_rank: int, world: int) -> str:
    """``cuda:<local_rank>`` when this host has a GPU per rank, else ``cpu``."""
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() >= world:
        return f"cuda:{local_rank}"
    return "cpu"


def _problem_order(cfg: EvalConfig) -> dict[tuple[str, str], tuple[int, int]]:
    from m1.eval.benchmarks import load_benchmark

    order = {}
    for b, bench in enumerate(cfg.benchmarks):
        for i, p in enumerate(load_benchmark(bench, data_dir=cfg.data_dir, limit=cfg.limit)):
            order[(bench, p.id)] = (b, i)
    return order


def _write_rows(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".jsonl.tmp")
    with open(tmp, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)


def seed_shards(cfg: EvalConfig, world: int, order: dict) -> None:
    """Hand rows already in ``OUT/samples.jsonl`` to the shard that owns their problem."""
    merged = read_samples(cfg.out / "samples.jsonl")
    if not merged:
        return
    for rank in range(world):
        d = shard_dir(cfg.out, rank, world)
        d.mkdir(parents=True, exist_ok=True)
        have = read_samples(d / "samples.jsonl")
        keys = {(r["benchmark"], r["problem_id"], r["sample"]) for r in have}
        add = [r for r in merged
               if (r["benchmark"], r["problem_id"]) in order and order[(r["benchmark"], r["problem_id"])][1] % world == rank
               and (r["benchmark"], r["problem_id"], r["sample"]) not in keys]
        if add:
            _write_rows(d / "samples.jsonl", have + add)


def merge_shards(cfg: EvalConfig, world: int, order: dict | None = None) -> dict[str, dict]:
    """Merge the shards into ``OUT/samples.jsonl`` (single-process order) and write ``summary.json``."""
    order = _problem_order(cfg) if order is None else order
    rows, busiest = [], {b: 0.0 for b in cfg.benchmarks}
    seen = set()
    for rank in range(world):
        shard_rows = read_samples(shard_dir(cfg.out, rank, world) / "samples.jsonl")
        for b in cfg.benchmarks:  # the longest rank's generation time is the wall time
            busiest[b] = max(busiest[b], sum(r["gen_time_s"] for r in shard_rows if r["benchmark"] == b))
        for r in shard_rows:
            key = (r["benchmark"], r["problem_id"], r["sample"])
            if key not in seen:
                seen.add(key)
                rows.append(r)
    unknown = (len(cfg.benchmarks), 0)
    rows.sort(key=lambda r: (*order.get((r["benchmark"], r["problem_id"]), unknown), r["sample"]))
    _write_rows(cfg.out / "samples.jsonl", rows)
    summaries = {b: summarize_samples([r for r in rows if r["benchmark"] == b], cfg.n) for b in cfg.benchmarks}
    for b, s in summaries.items():
        if s.get("problems"):
            s["wall_time_s"] = busiest[b]
    write_summary(cfg, summaries, data_parallel=world)
    return summaries


def run_shard(cfg: EvalConfig, backend: str, rank: int, world: int, device: str, generator_kwargs: dict | None = None) -> None:
    """One rank: load its generator on ``device`` and evaluate its share of the problems.

    ``generator_kwargs`` (`load_generator`'s sizes: ``max_batch_size``, ``requests_per_call``,
    ``memory_budget_gb``) size each rank's engine as one process's would be sized."""
    import torch

    from m1.eval.generation import load_generator
    from m1.eval.loop import run_eval
    from m1.eval.verifiers import load_verifier

    if device == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    else:
        torch.cuda.set_device(torch.device(device))
    gen, tok = load_generator(backend, cfg.model, device=device, **(generator_kwargs or {}))
    verifier = load_verifier(cfg.verifier, getattr(gen, "model", None), tok, cfg.prompt)
    shard_cfg = dataclasses.replace(cfg, out=shard_dir(cfg.out, rank, world))
    logger.info("rank %d/%d on %s: %s", rank, world, device, shard_cfg.out)
    run_eval(shard_cfg, gen, tok, verifier, shard=(rank, world))


def _spawned(rank: int, cfg: EvalConfig, backend: str, world: int, generator_kwargs: dict | None) -> None:
    logging.basicConfig(level=logging.INFO, format=f"[rank {rank}] %(levelname)s %(name)s: %(message)s")
    run_shard(cfg, backend, rank, world, rank_device(rank, world), generator_kwargs)


def run_parallel(cfg: EvalConfig, backend: str, data_parallel: int = 1, generator_kwargs: dict | None = None) -> dict[str, dict] | None:
    """Evaluate with N ranks; the merged summaries on rank 0 / the parent, None on other ranks.

    Under torchrun (``WORLD_SIZE`` > 1) this process is one rank and ``data_parallel`` must
    be 1 or equal the world size; otherwise ``data_parallel`` worker processes are spawned.
    """
    env = dist_env()
    if env is not None:
        rank, world, local_rank = env
        if data_parallel not in (1, world):
            raise ValueError(f"--data-parallel {data_parallel} under torchrun with WORLD_SIZE={world}; pass 1 or {world}")
        import torch.distributed as dist

        if not dist.is_initialized():  # only a barrier is needed: gloo works next to any device
            dist.init_process_group("gloo", timeout=timedelta(hours=72))
        cfg.out.mkdir(parents=True, exist_ok=True)
        order = _problem_order(cfg)
        if rank == 0:
            seed_shards(cfg, world, order)
        dist.barrier()
        run_shard(cfg, backend, rank, world, rank_device(local_rank, world), generator_kwargs)
        dist.barrier()
        return merge_shards(cfg, world, order) if rank == 0 else None

    if data_parallel < 1:
        raise ValueError(f"--data-parallel must be >= 1, got {data_parallel}")
    import torch.multiprocessing as mp

    cfg.out.mkdir(parents=True, exist_ok=True)
    order = _problem_order(cfg)
    seed_shards(cfg, data_parallel, order)
    # spawn (not fork): each worker starts clean, with its own CUDA context and grader process
    mp.spawn(_spawned, args=(cfg, backend, data_parallel, generator_kwargs), nprocs=data_parallel, join=True)
    return merge_shards(cfg, data_parallel, order)
