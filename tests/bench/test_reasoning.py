"""`m1 bench --workload reasoning` on CPU with tiny shapes: a smoke test (no timing assertions)."""

import json

from m1 import cli
from m1.bench.reasoning import ReasoningWorkload, best_by_model, draw_slot_sweep, percentile

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


def test_slot_sweep_runs_each_slot_count_on_the_same_requests_and_plots_the_curve(tmp_path):
    out = tmp_path / "res"
    argv = ["bench", "--workload", "reasoning", "--device", "cpu", "--tiny", "--models", "llama-3.2-3b", "m1-3b",
            "--reasoning-batch", "2", "6", "--reasoning-llama-batch", "3", "--kv-policies", "on_demand",
            "--prompt-len", "16", "--gen-mean", "16", "--gen-cap", "32", "--max-tokens", "32",
            "--memory-gb", "0.002", "--workspace-gb", "0", "--block-size", "16", "--peak-tflops", "0.1",
            "--bandwidth-tbs", "0.01", "--run-id", "sweep", "--out", str(out)]
    assert cli.main(argv) == 0
    recs = [r for f in sorted(out.glob("reasoning_*_tiny.json")) for r in json.loads(f.read_text())]
    assert sorted((r["model"], r["batch"]) for r in recs) == [("llama-3.2-3b", 3), ("m1-3b", 2), ("m1-3b", 6)]
    lengths = ReasoningWorkload(requests=24, prompt_len=16, gen_mean=16, gen_cap=32, max_tokens=32).lengths()
    assert all(r["requests"] == 24 and r["generated_tokens"] == sum(lengths) for r in recs)  # 4 x the largest slot count
    assert (out / "reasoning_slots_sweep_tiny.png").stat().st_size > 0
    best = best_by_model(recs)
    hybrid = [r for r in recs if r["model"] == "m1-3b"]
    assert best[("m1-3b", "on_demand")]["tokens_per_s"] == max(r["tokens_per_s"] for r in hybrid)
    assert best_by_model([{"model": "a", "kv_policy": "p", "tokens_per_s": t, "batch": b} for b, t in ((1, 5.0), (2, 9.0), (4, 7.0))])[
        ("a", "p")]["batch"] == 2


def test_slot_sweep_plot_leaves_room_above_its_best_point():
    """Every line and star lies inside the axes: the y axis starts at 0 and ends above the highest throughput (a
    lone best point was drawn on the frame, half cut off)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [{"model": m, "kv_policy": p, "batch": b, "tokens_per_s": t, "requests": 8, "device": "cpu",
             "gen_len": {"drawn_mean": 100.0}}
            for m, p, b, t in (("m1-3b", "on_demand", 256, 12206.0), ("m1-3b", "reserve", 256, 9258.0),
                               ("llama-3.2-3b", "on_demand", 128, 4049.0))]
    fig, ax = plt.subplots()
    draw_slot_sweep(ax, recs)
    lo, hi = ax.get_ylim()
    assert lo == 0 and hi > 12206.0 * 1.05
    assert len(ax.get_lines()) == 6  # a line and a star per (model, policy)
    assert ax.get_legend() is not None and len(ax.get_legend().get_texts()) == 3
    plt.close(fig)
