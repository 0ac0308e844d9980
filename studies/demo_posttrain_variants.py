"""Post-training variants on a finished demo directory, each scored the demo's way.

Two modes, both run on a demo `--out` directory (e.g. one of `studies/demo_sweep.py`):

  grpo      GRPO variants of its SFT hybrid (`m1.demo.stages.grpo_config` with fields
            replaced), two at a time in single-thread processes, each then evaluated on the
            first 1,000 hard test problems x 2 samples at the variant's rollout temperature.
            python studies/demo_posttrain_variants.py grpo DEMO_DIR '[["t10", {"temperature": 1.0}]]'
  verifier  verifier scores of the final hybrid's scaling samples (eval/grpo/hard_k): each given
            checkpoint read as a likelihood verifier, aggregated four ways (min / mean / sum of
            token log-probs), verifier-weighted vote and best-of-k against maj@8, paired intervals.
            python studies/demo_posttrain_variants.py verifier DEMO_DIR teacher_sft sft

Results of the runs behind the demo's settings: studies/results/demo_posttrain_2026-12-06.json.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import multiprocessing
import sys
import time
from pathlib import Path


def grpo_variant(base: str, name: str, sets: dict, out_root: str) -> dict:
    import torch

    torch.set_num_threads(1)
    from m1.demo.config import MODELS, Context, DemoConfig
    from m1.demo.stages import _test, evaluate, grpo_config, write_grpo_prompts
    from m1.train import grpo

    cfg = DemoConfig.make(out=Path(base), threads=1)
    c = dataclasses.replace(cfg.grpo, **sets)
    ctx = Context(cfg)
    out = Path(out_root) / f"grpo_{name}"
    out.mkdir(parents=True, exist_ok=True)
    write_grpo_prompts(ctx, out / "prompts.jsonl", c.n_prompts)
    gc = grpo_config(str(ctx.path(*MODELS["sft"])), str(out / "prompts.jsonl"), str(out / "run"), c, 0, 1)
    t0 = time.time()
    if not (out / "run" / "final").exists():
        grpo.run(gc)
    seconds = time.time() - t0
    rows = [json.loads(line) for line in open(out / "run" / "metrics.jsonl")]
    s = evaluate(ctx, out / "run" / "final", _test(ctx, "hard"), out / "eval", n=2, limit=1000,
                 temperature=c.temperature, max_tokens=c.max_tokens)
    return {"name": name, "settings": sets, "seconds": round(seconds), "reward_by_round": [round(r["reward"], 3) for r in rows if "reward" in r],
            "eval_temperature": c.temperature, "hard_pass@1": s["pass@1"]["mean"]}


def verifier_scores(base: Path, names: list[str]) -> list[dict]:
    import torch

    from m1.demo.config import MODELS
    from m1.eval.benchmarks import PromptConfig, load_benchmark
    from m1.eval.metrics import paired_difference_interval
    from m1.eval.samples import per_problem, read_samples
    from m1.eval.verifiers import LikelihoodVerifier, min_prob_logit

    torch.set_num_threads(2)
    rows0 = read_samples(base / "eval" / "grpo" / "hard_k" / "samples.jsonl")
    n = max(r["sample"] for r in rows0) + 1
    problems = {p.id: p.problem for p in load_benchmark(str(base / "data" / "test_hard.jsonl"))}
    aggregations = {"min": lambda lp: min_prob_logit(min(lp)), "mean": lambda lp: min_prob_logit(sum(lp) / len(lp)),
                    "sum": lambda lp: min_prob_logit(sum(lp))}
    results = []
    for name in names:
        ver = LikelihoodVerifier.from_pretrained(str(base.joinpath(*MODELS[name])), PromptConfig())
        lps = [ver.token_logprobs(problems[r["problem_id"]], r["text"]) or [-30.0] for r in rows0]
        for agg, f in aggregations.items():
            rows = [dict(r, verifier_score=f(lp)) for r, lp in zip(rows0, lps)]
            k = 8
            maj, wv, best = (per_problem(rows, n, m, k) for m in ("maj@k", "weighted_vote@k", "verify@k"))
            ids = sorted(maj)
            mean = lambda d: sum(d.values()) / len(d)  # noqa: E731
            r = {"verifier": name, "aggregation": agg, "k": k, "problems": len(ids), "maj": mean(maj), "weighted_vote": mean(wv),
                 "best_of": mean(best), "weighted_vote_minus_maj": paired_difference_interval([wv[i] for i in ids], [maj[i] for i in ids]),
                 "best_of_minus_maj": paired_difference_interval([best[i] for i in ids], [maj[i] for i in ids])}
            print(json.dumps(r), flush=True)
            results.append(r)
    return results


def main(argv: list[str]) -> None:
    mode, base = argv[0], argv[1]
    if mode == "grpo":
        variants = json.loads(argv[2])
        out_root = argv[3] if len(argv) > 3 else "/tmp/demo_grpo_variants"
        with concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
            for r in pool.map(grpo_variant, [base] * len(variants), [v[0] for v in variants], [v[1] for v in variants],
                              [out_root] * len(variants)):
                print(json.dumps(r), flush=True)
    elif mode == "verifier":
        verifier_scores(Path(base), argv[2:])
    else:
        raise SystemExit(f"unknown mode {mode!r}: grpo or verifier")


if __name__ == "__main__":
    main(sys.argv[1:])
