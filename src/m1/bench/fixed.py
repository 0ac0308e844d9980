"""`m1 bench --workload fixed` (the default), in one process on one GPU:
1. copy bandwidth (device-to-device copy, bytes read + written): the roofline's ceiling;
2. steady-state decode steps of our engine at each (batch, context) that fits the memory
   budget: the captured decode graph replayed over sequences whose KV blocks and states
   hold random data (context c means every row attends to c positions);
3. the integration of those step times into throughput for prompt 256 + generation G
   under continuous batching (rows' contexts spread evenly over [256, 256 + G]), at each
   model's best batch;
4. one real end-to-end `Engine.generate` run per model to validate the integration;
5. `transformers.generate` at batch 64, 256 + 256, as the baseline.

Every point is one JSON record (model, engine, batch, prompt_len, gen_len or context,
tokens_per_s, step_ms, peak_memory_gb, bytes_per_step, roofline_fraction, param_count,
device, versions, date). roofline_fraction = the bytes a decode step must move (weights,
KV read, Mamba state read + write, logits written and read once) / step time / copy
bandwidth.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import torch

from m1.bench.common import PROMPT, Env, build_model, copy_bandwidth, environment, record, weight_bytes, write_records

log = logging.getLogger(__name__)

CONTEXTS = [256, 1024, 2048, 4096, 8192, 16384]
GENS = [4096, 8192, 16384]
MODELS = ["llama-3.2-3b", "m1-3b", "m1-3b-s128"]


def step_bytes(model, engine, batch: int, context: int) -> int:
    """The minimum a decode step moves: weights once, KV of `context` positions per row,
    Mamba state read + written per row, logits written and read once (bf16)."""
    lay = engine.layout
    logits = batch * model.config.vocab_size * 2 * 2
    return weight_bytes(model) + batch * context * lay.kv_bytes_per_token + 2 * batch * lay.state_bytes_per_slot + logits


class DecodeTimer:
    """Times captured decode steps of `engine` for rows whose context is `context`."""

    def __init__(self, engine):
        self.engine = engine
        engine.fill_random(seed=1, temperature=0.7)  # random data, never zeros: zeros can time faster than real data

    def fits(self, batch: int, context: int, steps: int) -> bool:
        lay = self.engine.layout
        if batch > lay.num_slots or context + steps > lay.max_model_len:
            return False
        return not self.engine.has_kv or batch * math.ceil((context + steps) / lay.block_size) <= lay.usable_blocks

    def time(self, batch: int, context: int, steps: int = 12, warmup: int = 3) -> float:
        """Median seconds per decode step (graph replay) at this batch and context."""
        eng = self.engine
        per_seq = math.ceil((context + steps + warmup) / eng.layout.block_size)
        # after warm-up, each row attends to `context` positions, in blocks of its own: every read comes from HBM
        slot_ids = eng.place_rows(batch, context - 1 - warmup, per_seq)
        for _ in range(warmup):
            eng.decode_step(slot_ids)
        times = []
        for _ in range(steps):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            eng.decode_step(slot_ids)
            e.record()
            e.synchronize()
            times.append(s.elapsed_time(e) / 1e3)
        return sorted(times)[len(times) // 2]


def interp_step(points: dict[int, float], c: float) -> float:
    """Step time at context c, linear between measured contexts (extrapolated from the last two)."""
    cs = sorted(points)
    if len(cs) == 1:
        return points[cs[0]]
    for a, b in zip(cs[:-1], cs[1:]):
        if c <= b or b == cs[-1]:
            return points[a] + (points[b] - points[a]) * (c - a) / (b - a)
    raise AssertionError


def integrate(points: dict[int, float], batch: int, gen: int, prefill_s: float, n: int = 64) -> tuple[float, float]:
    """(tokens/s, mean step s) for `batch` rows generating `gen` tokens after a 256 prompt, contexts spread
    over [256, 256 + gen] as under continuous batching; prefill of each prompt is paid once."""
    cs = [PROMPT + gen * (i + 0.5) / n for i in range(n)]
    mean_step = sum(interp_step(points, c) for c in cs) / n
    return batch * gen / (gen * mean_step + batch * prefill_s), mean_step


def prefill_seconds(engine, n: int = 64) -> float:
    """Seconds per 256-token prompt when n prompts are prefilled together (packed, as `Engine.generate`
    admits them), mean over 3 calls after one warm-up."""
    n = min(n, engine.layout.num_slots)
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(0, engine.model.config.vocab_size, (PROMPT,), generator=g).tolist() for _ in range(n)]
    engine.prefill(prompts)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(3):
        engine.prefill(prompts)
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / 3 / n


def run_e2e(engine, batch: int, gen: int) -> tuple[float, float]:
    """Real `Engine.generate`: batch random 256-token prompts, `gen` tokens each. Returns (tokens/s, seconds)."""
    from m1.engine import SamplingParams

    g = torch.Generator().manual_seed(2)
    prompts = torch.randint(0, engine.model.config.vocab_size, (batch, PROMPT), generator=g).tolist()
    params = SamplingParams(temperature=0.7, max_tokens=gen, ignore_eos=True, seed=0)
    torch.cuda.synchronize()
    t = time.perf_counter()
    outs = engine.generate(prompts, params, use_tqdm=False)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t
    n = sum(len(o.outputs[0].token_ids) for o in outs)
    assert n == batch * gen, f"end-to-end run produced {n} tokens, expected {batch * gen}"
    return n / dt, dt


def hf_baseline(name: str, batch: int = 64, gen: int = 256) -> tuple[float, float]:
    """transformers.generate, greedy, 256 + 256, on the model class transformers itself serves:
    LlamaForCausalLM for the teacher shape, our HybridForCausalLM (GenerationMixin) for hybrids."""
    if name == "llama-3.2-3b":
        from transformers import LlamaConfig, LlamaForCausalLM

        from m1.config import NAMED_SHAPES

        s = NAMED_SHAPES[name]
        cfg = LlamaConfig(vocab_size=s.vocab_size, hidden_size=s.hidden_size, intermediate_size=s.intermediate_size,
                          num_hidden_layers=s.num_hidden_layers, num_attention_heads=s.num_attention_heads,
                          num_key_value_heads=s.num_key_value_heads, rope_parameters=dict(s.rope_parameters),
                          tie_word_embeddings=True, max_position_embeddings=s.max_position_embeddings)
        with torch.device("cuda"):
            model = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    else:
        model = build_model(name)
    ids = torch.randint(0, model.config.vocab_size, (batch, PROMPT), device="cuda")
    kw = dict(max_new_tokens=gen, min_new_tokens=gen, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        model.generate(ids[:, :16], max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=0)
        torch.cuda.synchronize()
        t = time.perf_counter()
        out = model.generate(ids, **kw)
        torch.cuda.synchronize()
    dt = time.perf_counter() - t
    n = (out.shape[1] - PROMPT) * batch
    del model
    torch.cuda.empty_cache()
    return n / dt, dt


def bench_model(name: str, args, env: Env, out: Path) -> dict:
    from m1.engine import Engine

    torch.cuda.reset_peak_memory_stats()
    model = build_model(name)
    wb = weight_bytes(model)
    total = torch.cuda.get_device_properties(0).total_memory
    budget = args.memory_gb * 2**30 - wb - args.workspace_gb * 2**30  # the same total for every model
    batches = args.llama_batches if name == "llama-3.2-3b" else args.batches
    if name == "m1-3b-s128":
        batches = [b for b in batches if b <= args.s128_max_batch]
    max_len = PROMPT + max(args.gens) + 64
    engine = Engine(model, max_batch_size=max(batches), max_model_len=max_len, memory_budget_gb=budget / 2**30, graph_buckets=batches,
                    nano_batches=args.nano_batches)
    log.info("%s: %.2f GB weights, cache budget %.1f GiB of %.1f GiB device", name, wb / 1e9, budget / 2**30, total / 2**30)
    timer = DecodeTimer(engine)
    steps: dict[int, dict[int, float]] = {}
    records = []
    for b in sorted(batches):
        for c in args.contexts:
            if not timer.fits(b, c, 16):
                continue
            t = timer.time(b, c)
            steps.setdefault(b, {})[c] = t
            nbytes = step_bytes(model, engine, b, c)
            rec = record(env, name, model, nano_batches=args.nano_batches, batch=b, context=c, prompt_len=None, gen_len=None, tokens_per_s=b / t, step_ms=t * 1e3,
                          peak_memory_gb=torch.cuda.max_memory_allocated() / 1e9, bytes_per_step=nbytes,
                          roofline_fraction=nbytes / t / env.bandwidth, kind="decode_step")
            records.append(rec)
            write_records(out, f"engine_steps_{name}.json", records)  # after every point: a cut-off run keeps what it measured
            log.info("%s b=%d c=%d: %.2f ms/step, %.0f tok/s, roofline %.2f", name, b, c, t * 1e3, b / t, rec["roofline_fraction"])
    prefill_s = prefill_seconds(engine)
    integ = []
    for gen in args.gens:
        best = None
        for b, pts in steps.items():
            if not timer.fits(b, PROMPT + gen, 0) or len(pts) < 2:
                continue
            tps, mean_step = integrate(pts, b, gen, prefill_s)
            if best is None or tps > best[1]:
                best = (b, tps, mean_step)
        if best is None:
            continue
        b, tps, mean_step = best
        c_mid = PROMPT + gen / 2
        nbytes = step_bytes(model, engine, b, int(c_mid))
        integ.append(record(env, name, model, nano_batches=args.nano_batches, batch=b, prompt_len=PROMPT, gen_len=gen, tokens_per_s=tps, step_ms=mean_step * 1e3,
                             peak_memory_gb=torch.cuda.max_memory_allocated() / 1e9, bytes_per_step=nbytes,
                             roofline_fraction=nbytes / mean_step / env.bandwidth, prefill_ms_per_prompt=prefill_s * 1e3,
                             kind="integrated", note="best batch; step times integrated over contexts [256, 256+gen]"))
        write_records(out, f"engine_throughput_{name}.json", integ)
    e2e = []
    if args.e2e_gen and name in args.e2e_models:
        want = args.e2e_batch if name != "llama-3.2-3b" else max((b for b in steps if timer.fits(b, PROMPT + args.e2e_gen, 0)), default=0)
        want = want if name in args.e2e_models else 0
        if want and timer.fits(want, PROMPT + args.e2e_gen, 0) and want in steps:
            tps, dt = run_e2e(engine, want, args.e2e_gen)
            pred, mean_step = integrate(steps[want], want, args.e2e_gen, prefill_s)
            e2e.append(record(env, name, model, nano_batches=args.nano_batches, batch=want, prompt_len=PROMPT, gen_len=args.e2e_gen, tokens_per_s=tps,
                               step_ms=dt / args.e2e_gen * 1e3, peak_memory_gb=torch.cuda.max_memory_allocated() / 1e9,
                               bytes_per_step=step_bytes(model, engine, want, PROMPT + args.e2e_gen // 2),
                               roofline_fraction=None, predicted_tokens_per_s=pred, agreement=tps / pred, kind="end_to_end", seconds=dt))
            log.info("%s e2e b=%d gen=%d: %.0f tok/s measured, %.0f predicted (%.3f)", name, want, args.e2e_gen, tps, pred, tps / pred)
            write_records(out, f"engine_e2e_{name}.json", e2e)
    cb = args.compare_batch
    if cb and timer.fits(cb, PROMPT + 256, 0):  # batch 64, 256 + 256: the comparison point for transformers.generate
        run_e2e(engine, cb, 256)  # warm-up: graph capture and Triton compiles are not part of the comparison
        tps, dt = run_e2e(engine, cb, 256)
        e2e.append(record(env, name, model, nano_batches=args.nano_batches, batch=cb, prompt_len=PROMPT, gen_len=256, tokens_per_s=tps, step_ms=dt / 256 * 1e3,
                           peak_memory_gb=torch.cuda.max_memory_allocated() / 1e9, bytes_per_step=None, roofline_fraction=None,
                           kind="end_to_end", seconds=dt, prefill_ms_per_prompt=prefill_s * 1e3))
        log.info("%s e2e b=%d 256+256: %.0f tok/s (%.2f s)", name, cb, tps, dt)
        write_records(out, f"engine_e2e_{name}.json", e2e)
    summary = {"steps": steps, "integrated": integ, "e2e": e2e}
    del engine, timer, model
    torch.cuda.empty_cache()
    return summary


def plot(results: Path, out: Path) -> Path:
    """Decode throughput against batch, one panel per shape, a line per context, with the
    bandwidth ceiling (batch / (bytes a step must move / copy bandwidth)) dashed beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = sorted(results.glob("engine_steps_*.json"))
    fig, axes = plt.subplots(1, len(files), figsize=(6 * len(files), 4.5), squeeze=False)
    for ax, f in zip(axes[0], files):
        recs = json.loads(f.read_text())
        for i, c in enumerate(sorted({r["context"] for r in recs})):
            pts = sorted((r["batch"], r["tokens_per_s"], r["batch"] / (r["bytes_per_step"] / (r["copy_bandwidth_gbs"] * 1e9)))
                         for r in recs if r["context"] == c)
            color = f"C{i}"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=color, label=f"context {c}")
            ax.plot([p[0] for p in pts], [p[2] for p in pts], "--", color=color, alpha=0.5)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch (sequences decoded at once)")
        ax.set_ylabel("decode tokens/s")
        ax.set_title(f"{recs[0]['model']} ({recs[0]['device']}, bf16)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, title="solid: measured, dashed: bandwidth ceiling", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


def fixed_main(args, ap) -> int:
    """The fixed workload for every shape in `args.models`, then transformers.generate's baseline and the plot."""
    if not torch.cuda.is_available():
        ap.error("needs a CUDA device")
    bw = copy_bandwidth()
    env = environment(bw)
    log.info("device %s, copy bandwidth %.2f TB/s", env.device, bw / 1e12)
    summaries = {}
    for name in args.models:
        try:
            summaries[name] = bench_model(name, args, env, args.out)
        except Exception:  # report and go on to the next shape; the failure is in the log and the summary
            log.exception("bench of %s failed", name)
            summaries[name] = {"steps": {}, "integrated": [], "e2e": [], "failed": True}
        torch.cuda.empty_cache()
    base = []
    for name in args.baseline:
        try:
            tps, dt = hf_baseline(name, batch=args.compare_batch or 64)
        except Exception:
            log.exception("transformers.generate baseline of %s failed", name)
            continue
        ours = next((r["tokens_per_s"] for r in summaries.get(name, {}).get("e2e", []) if r["batch"] == args.compare_batch and r["gen_len"] == 256), None)
        base.append(dict(model=name, engine="transformers.generate", batch=args.compare_batch or 64, prompt_len=PROMPT, gen_len=256, tokens_per_s=tps,
                         seconds=dt, m1_engine_tokens_per_s=ours, speedup=None if ours is None else ours / tps,
                         device=env.device, versions=env.versions, date=env.date))
        log.info("transformers.generate %s: %.0f tok/s (m1 engine %s)", name, tps, ours)
        write_records(args.out, "engine_baseline.json", base)
    _print_summary(summaries, base)
    plot(args.out, args.out / "engine_throughput.png")
    return 0


def _print_summary(summaries: dict, base: list[dict]) -> None:
    print("\nmodel            gen    best_b   tok/s     roofline")
    for name, s in summaries.items():
        for r in s["integrated"]:
            print(f"{name:<16} {r['gen_len']:<6} {r['batch']:<8} {r['tokens_per_s']:<9.0f} {r['roofline_fraction']:.2f}")
    ref = {r["gen_len"]: r["tokens_per_s"] for r in summaries.get("llama-3.2-3b", {}).get("integrated", [])}
    for name, s in summaries.items():
        if name != "llama-3.2-3b":
            for r in s["integrated"]:
                if r["gen_len"] in ref:
                    print(f"ratio {name}/llama at gen {r['gen_len']}: {r['tokens_per_s'] / ref[r['gen_len']]:.2f}x")
    for name, s in summaries.items():
        for r in s["e2e"]:
            print(f"e2e {name} b={r['batch']} gen={r['gen_len']}: {r['tokens_per_s']:.0f} tok/s"
                  + (f" (predicted {r['predicted_tokens_per_s']:.0f}, ratio {r['agreement']:.3f})" if "agreement" in r else ""))
    for r in base:
        print(f"transformers.generate {r['model']}: {r['tokens_per_s']:.0f} tok/s; m1 engine {r['m1_engine_tokens_per_s']}; speedup {r['speedup']}")
