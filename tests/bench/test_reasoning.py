"""`m1 bench --workload reasoning` on CPU with tiny shapes: a smoke test (no timing assertions)."""

import json

from m1 import cli
from m1.bench.reasoning import ReasoningWorkload, percentile

FIELDS = {"run_id", "commit", "device", "date", "versions", "model", "method", "workload", "batch", "prompt_len",
          "gen_len", "tokens_per_s", "roofline_fraction"}


def test_lengths_are_lognormal_with_a_fixed_seed_and_a_cap():
    w = ReasoningWorkload(requests=4000)
    a, b = w.lengths(), w.lengths()
    assert a == b and max(a) <= 16384 and min(a) >= 1
    assert 3500 < sum(a) / len(a) < 4300  # mean about 4K (the cap trims the tail a little)
    assert ReasoningWorkload(requests=4000, seed=1).lengths() != a
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0 and percentile([], 50) is None


def test_reasoning_workload_runs_on_cpu_with_tiny_models(tmp_path):
    out = tmp_path / "res"
    argv = ["bench", "--workload", "reasoning", "--device", "cpu", "--tiny", "--models", "llama-3.2-3b", "m1-3b",
            "--reasoning-batch", "4", "--prompt-len", "16", "--gen-mean", "24", "--gen-cap", "64", "--max-tokens", "64",
            "--memory-gb", "0.002", "--workspace-gb", "0", "--block-size", "16", "--peak-tflops", "0.1",
            "--bandwidth-tbs", "0.01", "--run-id", "smoke", "--out", str(out)]
    assert cli.main(argv) == 0
    recs = [r for f in sorted(out.glob("reasoning_*_tiny.json")) for r in json.loads(f.read_text())]
    assert {(r["model"], r["kv_policy"]) for r in recs} == {(m, p) for m in ("llama-3.2-3b", "m1-3b") for p in ("on_demand", "reserve")}
    lengths = ReasoningWorkload(requests=16, prompt_len=16, gen_mean=24, gen_cap=64, max_tokens=64).lengths()
    for r in recs:
        assert FIELDS <= set(r)
        assert r["run_id"] == "smoke" and r["method"] == "e2e" and r["workload"] == "reasoning"
        assert r["requests"] == 16 and r["batch"] == 4 and r["prompt_len"] == 16
        assert r["generated_tokens"] == sum(lengths) and r["tokens_per_s"] > 0
        assert r["gen_len"]["distribution"] == "lognormal" and r["gen_len"]["cap"] == 64
        assert r["roofline_fraction"] is not None and r["roofline_fraction"] > 0
        assert r["ttft_p50_s"] <= r["ttft_p99_s"] and r["itl_p50_s"] is not None
        if r["kv_policy"] == "reserve":
            assert r["preemptions"] == 0
