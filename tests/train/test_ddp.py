"""Two-process DDP distillation (gloo, CPU) against one process on the doubled batch.

Rank r of 2 with per-device batch B sees rows [r*B, (r+1)*B) of the one-process batch of
2B (accelerate shards the same seeded sampler by batch), so the ranks need not hold equal
numbers of assistant tokens. The divergence is summed per rank
and divided by the assistant-token count of the whole step across ranks (transformers'
``num_items_in_batch``, gathered), then multiplied by the world size that DDP's gradient
average divides out: the loss and the update are those of one process on 2B rows.
"""

from __future__ import annotations

import os
import subprocess
import sys

from m1.cli import main as m1_main
from m1.train.runs import read_metrics

from tests.train.conftest import distill_argv

STEPS = 3


def metric(out, key) -> list[float]:
    return [r[key] for r in read_metrics(out) if key in r]


def test_two_process_distill_matches_one_process_on_doubled_batch(task_dir, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    common = ("--save-steps", "100", "--num-threads", "1")
    assert m1_main(distill_argv(task_dir, one, STEPS, *common, "--per-device-batch-size", "8")) == 0

    # the real CLI under torchrun: 2 CPU processes, gloo (accelerate picks MULTI_CPU from
    # ACCELERATE_USE_CPU; `accelerate launch --cpu` would start one process only)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "m1.cli", *distill_argv(task_dir, two, STEPS, *common, "--per-device-batch-size", "4")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    # one metrics writer (rank 0), and a step covered 8 rows of the data, not 4
    epochs = lambda out: [r["epoch"] for r in read_metrics(out) if "loss" in r]  # noqa: E731
    assert epochs(two) == epochs(one) and len(epochs(two)) == STEPS

    ref, got = metric(one, "loss"), metric(two, "loss")
    assert len(ref) == len(got) == STEPS
    for a, b in zip(got, ref):
        assert abs(a - b) <= 1e-4, (got, ref)
    # the per-token divergence the run logs is also global (summed over ranks, not rank 0's own)
    kl_ref, kl_got = metric(one, "reverse_kl_per_token"), metric(two, "reverse_kl_per_token")
    assert len(kl_ref) == len(kl_got) == STEPS
    for a, b in zip(kl_got, kl_ref):
        assert abs(a - b) <= 1e-4, (kl_got, kl_ref)

    from safetensors.torch import load_file

    p1 = load_file(one / "final" / "model.safetensors")
    p2 = load_file(two / "final" / "model.safetensors")
    assert p1.keys() == p2.keys()
    worst = max((p1[k] - p2[k]).abs().max().item() for k in p1)
    assert worst <= 1e-4, worst
    # and training moved them (a no-op run would also "match")
    base = load_file(task_dir / "student" / "model.safetensors")
    assert max((p1[k] - base[k]).abs().max().item() for k in p1) > 1e-3
