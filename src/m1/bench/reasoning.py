"""`m1 bench --workload reasoning`: real `Engine.generate` runs of a reasoning-like workload (see
`bench_reasoning`): 256-token prompts, completion lengths drawn with a fixed seed from a
lognormal (mean about 4K, capped at 16K), every request with max_tokens 16384 and its
drawn length enforced by a stop hook the scheduler cannot see (an EOS stand-in), 4x the
hybrid's batch of requests all arriving at t = 0. Each model runs under the same memory
budget, the same engine and each KV policy (`--kv-policies`). Throughput is generated
tokens / total wall time, tail included; TTFT and inter-token latency p50/p99 and the
preemption count come with it. Its records carry run_id, commit, device, date, versions,
model, method ("e2e"), workload ("reasoning"), batch, prompt_len, gen_len (the length
distribution), tokens_per_s and roofline_fraction (compute + bytes roofline of the work
the run did / its wall time). `--device cpu --tiny` runs it on tiny shapes (a smoke test).
"""

from __future__ import annotations

import logging
import math
import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

from m1.bench.common import Env, build_model, copy_bandwidth, environment, m1_commit, sync, weight_bytes, write_records

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReasoningWorkload:
    """What `--workload reasoning` runs; every model of one run gets the same requests."""

    requests: int
    prompt_len: int = 256
    gen_mean: float = 4096.0
    gen_sigma: float = 1.0
    gen_cap: int = 16384
    max_tokens: int = 16384
    seed: int = 0

    def lengths(self) -> list[int]:
        """Completion lengths: lognormal with mean `gen_mean` (before the cap), capped at `gen_cap`, fixed seed."""
        rng = random.Random(self.seed)
        mu = math.log(self.gen_mean) - self.gen_sigma**2 / 2
        return [max(1, min(self.gen_cap, round(rng.lognormvariate(mu, self.gen_sigma)))) for _ in range(self.requests)]

    def prompts(self, vocab: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed + 1)
        return torch.randint(0, vocab, (self.requests, self.prompt_len), generator=g).tolist()

    def describe(self, lengths: list[int]) -> dict:
        srt = sorted(lengths)
        return dict(distribution="lognormal", mean=self.gen_mean, sigma=self.gen_sigma, cap=self.gen_cap, seed=self.seed,
                    max_tokens=self.max_tokens, drawn_mean=sum(lengths) / len(lengths), drawn_p50=srt[len(srt) // 2],
                    drawn_max=srt[-1])


def percentile(xs: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in [0, 100]); None for no data."""
    if not xs:
        return None
    srt = sorted(xs)
    return srt[min(len(srt) - 1, max(0, math.ceil(q / 100 * len(srt)) - 1))]


def linear_params(model) -> int:
    """Weights that take part in a GEMM for every token (every nn.Linear, the LM head included)."""
    seen, total = set(), 0
    for m in model.modules():
        if isinstance(m, torch.nn.Linear) and m.weight.data_ptr() not in seen:
            seen.add(m.weight.data_ptr())
            total += m.weight.numel()
    return total


def roofline_seconds(model, engine, work: dict, peak_flops: float, bandwidth: float) -> float:
    """The compute + bytes roofline of the work a run did, compute and bytes one after the other:
    GEMM FLOPs (2 x linear weights per prefilled or decoded token, 4 x heads x head_dim per attended
    position per attention layer) at `peak_flops`, plus per decode step the weights once, the KV of
    every attended position, each row's Mamba state read and written and its logits written and
    read (bf16), at `bandwidth`. `work` holds the differences of `Engine.stats` over the run."""
    cfg, lay = model.config, engine.layout
    attn_dim = cfg.num_attention_heads * cfg.head_dim * len(cfg.attention_layers)
    flops = 2 * linear_params(model) * (work["decode_rows"] + work["prefill_tokens"]) + 4 * attn_dim * work["decode_context"]
    nbytes = (work["decode_steps"] * weight_bytes(model) + lay.kv_bytes_per_token * work["decode_context"]
              + work["decode_rows"] * (2 * lay.state_bytes_per_slot + cfg.vocab_size * 2 * 2))
    return flops / peak_flops + nbytes / bandwidth


def run_reasoning(engine, workload: ReasoningWorkload, lengths: list[int]) -> dict:
    """One timed `Engine.generate` of the workload. The stop hook ends request i at lengths[i]
    tokens, unseen by the scheduler; the token hook stamps every poll. TTFT is first token minus
    t = 0 (all requests arrive then); a poll that brings k tokens after a gap dt counts k
    inter-token latencies of dt / k (a preempted sample's wait shows up here)."""
    from m1.engine import SamplingParams

    n = workload.requests
    prompts = workload.prompts(engine.model.config.vocab_size)
    params = SamplingParams(temperature=0.7, max_tokens=workload.max_tokens, ignore_eos=True, seed=workload.seed)
    ttft: list[float | None] = [None] * n
    last = [0.0] * n
    itl: list[float] = []
    t0 = 0.0

    def token_hook(rid: int, j: int, k: int) -> None:
        now = time.perf_counter()
        if ttft[rid] is None:
            ttft[rid] = now - t0
            k -= 1
            if k <= 0:
                last[rid] = now
                return
        gap = (now - last[rid]) / k
        itl.extend([gap] * k)
        last[rid] = now

    before = dict(vars(engine.stats))
    engine.stop_hook = lambda rid, j, count: count >= lengths[rid]
    engine.token_hook = token_hook
    try:
        sync(engine.device)
        t0 = time.perf_counter()
        outs = engine.generate(prompts, params, use_tqdm=False)
        sync(engine.device)
        seconds = time.perf_counter() - t0
    finally:
        engine.stop_hook = engine.token_hook = None
    work = {k: v - before[k] for k, v in vars(engine.stats).items() if k != "last_preemptions"}
    got = [len(o.outputs[0].token_ids) for o in outs]
    lost = [i for i, (g, want) in enumerate(zip(got, lengths)) if g != want]
    if lost:
        raise RuntimeError(f"reasoning run: {len(lost)} requests did not produce their drawn length (first: {lost[0]})")
    tokens = sum(got)
    return dict(seconds=seconds, generated_tokens=tokens, tokens_per_s=tokens / seconds,
                ttft_p50_s=percentile([t for t in ttft if t is not None], 50), ttft_p99_s=percentile([t for t in ttft if t is not None], 99),
                itl_p50_s=percentile(itl, 50), itl_p99_s=percentile(itl, 99), preemptions=work["preemptions"],
                recomputed_tokens=work["recomputed_tokens"], work=work)


def bench_reasoning(name: str, args, env: Env, out: Path, workload: ReasoningWorkload, lengths: list[int]) -> list[dict]:
    """Each KV policy (`args.kv_policies`) at each slot count of the sweep for one model, each in a fresh engine
    under the same memory budget: the slot count is the knob that trades rows a step against preemptions, so each
    model is compared at its own best (`best_by_model`)."""
    from m1.engine import Engine

    dev = args.device
    model = build_model(name, device=dev, tiny=args.tiny, dtype=torch.bfloat16 if dev == "cuda" else torch.float32)
    wb = weight_bytes(model)
    budget = args.memory_gb * 2**30 - wb - args.workspace_gb * 2**30  # the same total for every model
    if budget <= 0:
        raise ValueError(f"--memory-gb {args.memory_gb} leaves nothing for the cache after weights and workspace")
    is_llama = len(model.config.attention_layers) == model.config.num_hidden_layers
    batches = (args.reasoning_llama_batch or args.reasoning_batch) if is_llama else args.reasoning_batch
    records = []
    for policy, batch in [(p, b) for p in args.kv_policies for b in sorted(batches)]:
        engine = Engine(model, max_batch_size=batch, max_model_len=workload.prompt_len + workload.max_tokens,
                        memory_budget_gb=budget / 2**30, kv_policy=policy, prefill_chunk=args.prefill_chunk,
                        block_size=args.block_size, nano_batches=args.nano_batches)
        engine.generate(workload.prompts(model.config.vocab_size)[: min(4, workload.requests)],
                        _warm_params(), use_tqdm=False)  # compiles and allocator warm-up, off the clock
        engine.capture_graphs()  # every decode-graph bucket before the clock starts
        log.info("%s (%s): reasoning run of %d requests, batch %d, %d KV blocks", name, policy, workload.requests, batch,
                 engine.layout.usable_blocks)
        res = run_reasoning(engine, workload, lengths)
        ideal = roofline_seconds(model, engine, res["work"], args.peak_tflops * 1e12, env.bandwidth) if env.bandwidth else None
        rec = dict(run_id=args.run_id, commit=m1_commit(), device=env.device, date=env.date, versions=env.versions, model=name,
                   method="e2e", workload="reasoning", kv_policy=policy, batch=batch, nano_batches=args.nano_batches, requests=workload.requests,
                   prompt_len=workload.prompt_len, gen_len=workload.describe(lengths), tokens_per_s=res["tokens_per_s"],
                   roofline_fraction=None if ideal is None else ideal / res["seconds"], roofline_seconds=ideal,
                   seconds=res["seconds"], generated_tokens=res["generated_tokens"], ttft_p50_s=res["ttft_p50_s"],
                   ttft_p99_s=res["ttft_p99_s"], itl_p50_s=res["itl_p50_s"], itl_p99_s=res["itl_p99_s"],
                   preemptions=res["preemptions"], recomputed_tokens=res["recomputed_tokens"], work=res["work"],
                   memory_gb=args.memory_gb, cache_budget_gb=budget / 2**30, kv_blocks=engine.layout.usable_blocks,
                   block_size=engine.layout.block_size, peak_tflops=args.peak_tflops,
                   bandwidth_tbs=env.bandwidth / 1e12 if env.bandwidth else None, tiny=args.tiny,
                   param_count=sum(p.numel() for p in {p.data_ptr(): p for p in model.parameters()}.values()))
        records.append(rec)
        write_records(out, f"reasoning_{name}{'_tiny' if args.tiny else ''}.json", records)
        log.info("%s (%s): %.0f tok/s over %.1f s, TTFT p50 %.3f s, ITL p50 %.4f s, %d preemptions, roofline %s",
                 name, policy, rec["tokens_per_s"], rec["seconds"], rec["ttft_p50_s"], rec["itl_p50_s"] or 0.0, rec["preemptions"],
                 "n/a" if rec["roofline_fraction"] is None else f"{rec['roofline_fraction']:.2f}")
        del engine
        if dev == "cuda":
            torch.cuda.empty_cache()
    del model
    return records


def _warm_params():
    from m1.engine import SamplingParams

    return SamplingParams(temperature=0.7, max_tokens=8, ignore_eos=True, seed=0)


def reasoning_main(args, ap) -> int:
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("needs a CUDA device (or --device cpu --tiny for a smoke run)")
    bw = args.bandwidth_tbs * 1e12 if args.bandwidth_tbs else (copy_bandwidth() if args.device == "cuda" else 0.0)
    env = environment(bw)
    args.run_id = args.run_id or f"{env.date[:10]}-{uuid.uuid4().hex[:8]}"
    models = args.models
    workload = ReasoningWorkload(requests=args.requests or 4 * max(args.reasoning_batch), prompt_len=args.prompt_len,
                                 gen_mean=args.gen_mean, gen_sigma=args.gen_sigma, gen_cap=args.gen_cap,
                                 max_tokens=args.max_tokens, seed=args.length_seed)
    lengths = workload.lengths()
    log.info("reasoning workload %s: %d requests, drawn mean %.0f tokens", args.run_id, workload.requests, sum(lengths) / len(lengths))
    records = []
    for name in models:
        records += bench_reasoning(name, args, env, args.out, workload, lengths)
    print_reasoning(records)
    if len(args.reasoning_batch) > 1 or len(args.reasoning_llama_batch or []) > 1:
        path = plot_slot_sweep(records, args.out / f"reasoning_slots_{args.run_id}{'_tiny' if args.tiny else ''}.png")
        print(f"slot sweep plot: {path}")
    return 0


def best_by_model(records: list[dict]) -> dict[tuple[str, str], dict]:
    """The record of highest throughput for each (model, KV policy) over the slot counts swept."""
    best: dict[tuple[str, str], dict] = {}
    for r in records:
        key = (r["model"], r["kv_policy"])
        if key not in best or r["tokens_per_s"] > best[key]["tokens_per_s"]:
            best[key] = r
    return best


def draw_slot_sweep(ax, records: list[dict]) -> None:
    """Throughput against decode slots on `ax`, a line per (model, KV policy), the best point of each starred.

    The y axis runs from 0 to a tenth above the highest point, so no star sits on the frame."""
    best = best_by_model(records)
    models = sorted({m for m, _ in best})  # one colour a model, its policies told apart by line style
    for key, top in sorted(best.items()):
        i = models.index(key[0])
        pts = sorted((r["batch"], r["tokens_per_s"]) for r in records if (r["model"], r["kv_policy"]) == key)
        style = "-" if key[1] == "on_demand" else "--"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o" + style, color=f"C{i}", label=f"{key[0]} ({key[1]})")
        ax.plot([top["batch"]], [top["tokens_per_s"]], "*", color=f"C{i}", markersize=12)
    ax.set_xscale("log", base=2)
    slots = sorted({r["batch"] for r in records})
    ax.set_xticks(slots, [str(b) for b in slots])
    ax.minorticks_off()
    ax.set_xlabel("decode slots (max_batch_size); star: each line's best")
    ax.set_ylabel("generated tokens/s, tail included")
    r0 = records[0]
    ax.set_title(f"Reasoning workload: {r0['requests']} requests, mean {r0['gen_len']['drawn_mean']:.0f} tokens "
                 f"({r0['device']})", fontsize=10)
    ax.set_ylim(0, 1.1 * max(r["tokens_per_s"] for r in records))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot_slot_sweep(records: list[dict], path: Path) -> Path:
    """`draw_slot_sweep` in a figure of its own, saved to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    draw_slot_sweep(ax, records)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def print_reasoning(records: list[dict]) -> None:
    """The table of every record, then on_demand / reserve per model and each model against llama-3.2-3b, each at its
    best slot count (`best_by_model`)."""
    print("\nmodel            policy     batch  tok/s      roofline  TTFT p50/p99 s   ITL p50/p99 ms   preempt")
    for r in records:
        roof = "n/a" if r["roofline_fraction"] is None else f"{r['roofline_fraction']:.2f}"
        itl = [1e3 * (x or 0.0) for x in (r["itl_p50_s"], r["itl_p99_s"])]
        print(f"{r['model']:<16} {r['kv_policy']:<10} {r['batch']:<6} {r['tokens_per_s']:<10.0f} {roof:<9} "
              f"{r['ttft_p50_s']:.3f}/{r['ttft_p99_s']:.3f}    {itl[0]:.2f}/{itl[1]:.2f}      {r['preemptions']}")
    by = best_by_model(records)  # each (model, policy) at its best slot count
    swept = {}  # how many slot counts each (model, policy) ran: "best" of one count is no sweep, and says so
    for r in records:
        swept.setdefault((r["model"], r["kv_policy"]), set()).add(r["batch"])
    for (m, pol), r in by.items():
        if pol == "on_demand" and (m, "reserve") in by:
            print(f"{m}: on_demand / reserve = {r['tokens_per_s'] / by[(m, 'reserve')]['tokens_per_s']:.2f}x "
                  f"(best slots {r['batch']} / {by[(m, 'reserve')]['batch']})")
    for (m, pol), r in by.items():
        base = by.get(("llama-3.2-3b", pol))
        if m != "llama-3.2-3b" and base:
            fr = lambda x: "n/a" if x["roofline_fraction"] is None else f"{x['roofline_fraction']:.2f}"  # noqa: E731
            n_m, n_b = len(swept[(m, pol)]), len(swept[("llama-3.2-3b", pol)])
            print(f"ratio {m}/llama-3.2-3b ({pol}, each at the best of the slot counts run "
                  f"({n_m} / {n_b}): {r['batch']} / {base['batch']}): "
                  f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}x "
                  f"(roofline {m} {fr(r)}, llama {fr(base)})")
