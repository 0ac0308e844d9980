"""Data-parallel eval (two CPU worker processes) against one process: same samples, same summary."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from m1.eval.cli import eval_main
from m1.eval.samples import TIMING_KEYS

from tests.helpers import save_tiny_model, write_problems

ARGS = ["--n", "4", "--chunk-size", "2", "--temperature", "1.0", "--top-p", "0.9", "--max-tokens", "12",
        "--seed", "5", "--backend", "hf"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("dp")
    model = save_tiny_model(root / "model")
    problems = write_problems(root / "toy.jsonl", n=5)  # odd count: the ranks get 3 and 2 problems
    ref = root / "single"
    assert eval_main(["--model", str(model), "--benchmark", str(problems), "--out", str(ref)] + ARGS) == 0
    return model, problems, ref


def rows(out: Path) -> list[dict]:
    """samples.jsonl in file order, without the per-sample timing."""
    return [{k: v for k, v in json.loads(line).items() if k != "gen_time_s"} for line in open(out / "samples.jsonl")]


def summary(out: Path) -> dict:
    s = json.loads((out / "summary.json").read_text())
    return {"config": {k: v for k, v in s["config"].items() if k != "out"},
            "benchmarks": {b: {k: v for k, v in x.items() if k not in TIMING_KEYS} for b, x in s["benchmarks"].items()}}


def test_two_processes_match_one(tmp_path, setup):
    model, problems, ref = setup
    out = tmp_path / "dp2"
    assert eval_main(["--model", str(model), "--benchmark", str(problems), "--out", str(out), "--data-parallel", "2"] + ARGS) == 0
    # token-identical samples (the tokenizer is per character, so equal text and counts are equal tokens),
    # merged in the order one process writes them
    assert rows(out) == rows(ref)
    assert len(rows(out)) == 5 * 4
    assert summary(out) == summary(ref)
    assert json.loads((out / "summary.json").read_text())["data_parallel"] == 2
    # each rank generated its own share: problems 0, 2, 4 and 1, 3
    shards = sorted((out / "shards").iterdir())
    assert [d.name for d in shards] == ["rank0-of-2", "rank1-of-2"]
    assert [sorted({r["problem_id"] for r in rows(d)}) for d in shards] == [["p0", "p2", "p4"], ["p1", "p3"]]
    assert (out / "report.md").exists()


def test_parallel_resumes_a_partial_single_process_run(tmp_path, setup):
    """Rows of an interrupted one-process run go to their shards; only the rest is generated.

    The ranks run one after the other in this process (`run_parallel` spawns them; the shard
    logic is the same), which keeps the test free of process start-up time."""
    import torch

    from m1.eval.benchmarks import PromptConfig
    from m1.eval.loop import EvalConfig, eval_sampling
    from m1.eval.parallel import _problem_order, merge_shards, run_shard, seed_shards

    model, problems, ref = setup
    out = tmp_path / "mixed"
    assert eval_main(["--model", str(model), "--benchmark", str(problems), "--out", str(out), "--limit", "2"] + ARGS) == 0
    first = rows(out)
    cfg = EvalConfig(model=str(model), benchmarks=[str(problems)], out=out, n=4, chunk_size=2, seed=5,
                     sampling=eval_sampling(1.0, 0.9, 12), prompt=PromptConfig())
    order = _problem_order(cfg)
    seed_shards(cfg, 2, order)
    assert [len(rows(out / "shards" / f"rank{r}-of-2")) for r in (0, 1)] == [4, 4]  # p0 -> rank 0, p1 -> rank 1
    threads = torch.get_num_threads()
    try:
        for rank in (0, 1):
            run_shard(cfg, "hf", rank, 2, "cpu")
    finally:
        torch.set_num_threads(threads)
    merge_shards(cfg, 2, order)
    assert rows(out)[: len(first)] == first
    assert rows(out) == rows(ref)
    assert summary(out) == summary(ref)


@pytest.mark.slow
def test_torchrun_matches_one_process(tmp_path, setup):
    """The same split under torchrun (WORLD_SIZE/RANK from the launcher, a gloo barrier)."""
    model, problems, ref = setup
    out = tmp_path / "torchrun"
    # torchrun's own parser would read a bare --n as an ambiguous abbreviation: use --num-samples
    args = ["--num-samples" if a == "--n" else a for a in ARGS]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "m1.cli", "eval", "--model", str(model), "--benchmark", str(problems), "--out", str(out)] + args
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert rows(out) == rows(ref)
    assert summary(out) == summary(ref)
