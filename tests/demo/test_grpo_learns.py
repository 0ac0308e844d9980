"""Slow: GRPO (`m1 grpo`, Engine rollouts, grader reward) raises the demo SFT hybrid's mean
reward on hard prompts by >= 0.15 within 50 steps on CPU.

The starting model is the demo pipeline's SFT hybrid: from ``M1_DEMO_RUN`` (a finished full
``m1 demo`` run directory) when set, else built in a session fixture by the demo's own stage
functions (full sizes; several minutes). Run with ``pytest -m slow tests/test_demo_grpo_learns.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from m1.demo import STAGES, Context, DemoConfig, run_stage
from m1.demo.config import GRPOSizes
from m1.demo.stages import grpo_config, write_grpo_prompts
from m1.train.runs import read_metrics

pytestmark = pytest.mark.slow

GRPO = GRPOSizes(steps=40, generations=8, generation_batch=64, mini_batch=32, lr=2e-5, temperature=1.0, max_tokens=256, n_prompts=2000)


@pytest.fixture(scope="session")
def demo_ctx(tmp_path_factory) -> Context:
    given = os.environ.get("M1_DEMO_RUN")
    out = Path(given) if given else tmp_path_factory.mktemp("demo")
    cfg = DemoConfig.make(out=out, quick=False, seed=0, force=False, threads=2)
    ctx = Context(cfg)
    for stage in STAGES:
        run_stage(ctx, stage, force=False)  # finished stages (markers) are reused
        if stage.name == "sft":
            break
    return ctx


def test_grpo_raises_mean_reward(demo_ctx, tmp_path):
    from m1.train import grpo

    prompts = tmp_path / "prompts.jsonl"
    write_grpo_prompts(demo_ctx, prompts, GRPO.n_prompts)
    run = tmp_path / "grpo"
    model = str(demo_ctx.path("sft", "run", "final"))
    grpo.run(grpo_config(model, str(prompts), str(run), GRPO, seed=0, threads=1))
    curve = [(m["step"], m["reward"]) for m in read_metrics(run) if "reward" in m]
    (tmp_path / "curve.json").write_text(json.dumps(curve))
    print("GRPO reward curve:", curve)
    rewards = [r for _, r in curve]
    assert len(rewards) >= 10
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert last - first >= 0.15, f"mean reward {first:.3f} -> {last:.3f} (curve {curve})"
