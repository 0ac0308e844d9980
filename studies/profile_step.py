"""Where a decode step's time goes: kernel time by kind, for each model at its batch (issue 20's profile).

Why: issue 20 asks for the large-batch hybrid step closer to its roofline (m1-3b measured 0.67 of it,
llama 0.78, H100, 2026-12-06) and for the misses explained by a profile. This script builds each named
shape with random weights (as `m1 bench` does), places `batch` rows at `context` positions, and runs the
engine's decode step:
- timed as the engine runs it (CUDA-graph replay on a GPU), median of `--steps`;
- under torch.profiler without graphs, so each kernel shows.

It writes one JSON record per (model, batch, context):
- the step time and its roofline fraction (`m1.bench.fixed.step_bytes` over the copy bandwidth);
- kernel time per kind (GEMM, attention, Mamba, norm, sampling, elementwise, copy, other) per step;
- the ten slowest kernels;
- the gap between the eager profile's kernel time and its wall time (launch overhead the graph removes);
- the graph step with its rows split into 1, 2, ... nano-batches on their own streams (`--nano-batches`);
- the graph step with the sampler's untruncated draw on its PyTorch reference (`step_ms_draw_ref`), and the
  draw alone on (batch, vocab) logits, reference against the dispatched kernel (`draw_ms`).

    python3 studies/profile_step.py --out DIR                      # GPU: m1-3b b560 and llama-3.2-3b b128, context 2048
    python3 studies/profile_step.py --tiny --device cpu --out DIR  # CPU smoke run (operator time instead of kernels)
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from m1.bench.common import build_model, copy_bandwidth, environment, weight_bytes  # noqa: E402
from m1.bench.fixed import step_bytes  # noqa: E402

# first match wins; names are lower-cased kernel (or CPU operator) names
KINDS = [
    ("attention", r"flash|fmha|paged|attention|sdpa|_attn|decode_attn"),
    ("mamba", r"mamba|ssd|selective|ssm|conv1d|causal_conv|^_decode_kernel"),  # m1's fused decode step: _decode_kernel
    ("gemm", r"gemm|cutlass|xmma|nvjet|sm90|sm80|matmul|aten::mm|aten::addmm|aten::linear|aten::bmm|cublas"),
    ("norm", r"rms|norm|^_fwd_kernel$"),  # m1's gated RMSNorm forward: _fwd_kernel
    ("sampling", r"softmax|topk|sort|multinomial|argmax|exponential|gumbel|sampl|cumsum"),
    ("copy", r"memcpy|memset|copy|cat|index|gather|scatter"),
    ("elementwise", r"elementwise|vectorized|swiglu|silu|mul|add|exp|sigmoid|where|fill"),
]


def kind_of(name: str) -> str:
    low = name.lower()
    for kind, pat in KINDS:
        if re.search(pat, low):
            return kind
    return "other"


def profile(args, name: str, batch: int, env) -> dict:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from m1.bench.fixed import DecodeTimer
    from m1.engine import Engine

    cuda = args.device == "cuda"
    model = build_model(name, device=args.device, tiny=args.tiny, dtype=torch.bfloat16 if cuda else torch.float32)
    max_len = args.context + args.steps * 3 + 64
    engine = Engine(model, max_batch_size=batch, max_model_len=max_len, memory_budget_gb=args.memory_gb,
                    graph_buckets=[batch] if cuda else None)
    timer = DecodeTimer(engine)
    if not timer.fits(batch, args.context, 2 * args.steps + 8):
        raise SystemExit(f"{name}: batch {batch} at context {args.context} does not fit {args.memory_gb} GiB")
    rec: dict = {"model": name, "batch": batch, "context": args.context, "device": env.device, "method": "profile",
                 "engine": "cuda-graphs" if engine.graphs else "eager"}
    if cuda:
        by_nano = {}
        for k in args.nano_batches:  # the same rows and data, graphs recaptured with k nano-batches
            engine.graphs.nano_batches, engine.graphs.nano_min_rows = k, 1
            engine.graphs.clear()
            by_nano[k] = timer.time(batch, args.context, steps=args.steps)
        engine.graphs.nano_batches = 1
        step_s = by_nano.get(1, min(by_nano.values()))
        rec["step_ms_by_nano_batches"] = {str(k): round(v * 1e3, 4) for k, v in by_nano.items()}
        # the same step with the sampler's untruncated draw on its PyTorch reference instead of the kernel
        # the dispatch picks (m1.ops.sampling), and the draw alone on (batch, vocab) logits, both side by side
        import m1.engine.sampler as sampler_module
        from m1.ops import dispatch
        from m1.ops.sampling import draw_ref

        real = sampler_module.draw
        sampler_module.draw = draw_ref
        engine.graphs.clear()
        try:
            rec["step_ms_draw_ref"] = round(timer.time(batch, args.context, steps=args.steps) * 1e3, 4)
        finally:
            sampler_module.draw = real
            engine.graphs.clear()
        # in the LM head's dtype, as the engine hands them over (the draw upcasts as it reads)
        logits = torch.randn(batch, model.config.vocab_size, device="cuda").to(model.lm_head.weight.dtype)
        temp, u = torch.full((batch,), 0.7, device="cuda"), torch.rand(batch, device="cuda")
        rec["draw_impl"] = dispatch.chosen_name("draw", logits)
        rec["draw_logits_dtype"] = str(logits.dtype)
        from triton.testing import do_bench

        rec["draw_ms"] = {name: round(do_bench(lambda f=f: f(logits, temp, u), return_mode="median"), 4)
                          for name, f in (("ref", draw_ref), (rec["draw_impl"], dispatch.choose("draw", logits)))}
    else:  # no events on a CPU: wall time of the eager step
        slots = engine.place_rows(batch, args.context - 4, math.ceil((args.context + args.steps + 8) / engine.layout.block_size))
        engine.decode_step(slots)
        t = time.perf_counter()
        for _ in range(args.steps):
            engine.decode_step(slots)
        step_s = (time.perf_counter() - t) / args.steps
    nbytes = step_bytes(model, engine, batch, args.context)
    rec.update(step_ms=step_s * 1e3, tokens_per_s=batch / step_s, bytes_per_step=nbytes, weight_bytes=weight_bytes(model),
               roofline_fraction=nbytes / step_s / env.bandwidth if env.bandwidth else None)

    # the same step without graphs, under the profiler: every kernel (or CPU operator) by name
    graphs, engine.graphs = engine.graphs, None
    slots = engine.place_rows(batch, args.context - 4, math.ceil((args.context + args.steps + 8) / engine.layout.block_size))
    engine.decode_step(slots)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    n = args.profile_steps
    with torch_profile(activities=acts) as prof:
        t = time.perf_counter()
        for _ in range(n):
            engine.decode_step(slots)
        if cuda:
            torch.cuda.synchronize()
        eager_s = (time.perf_counter() - t) / n
    engine.graphs = graphs
    by_kind: dict[str, float] = {}
    kernels: list[tuple[str, float]] = []
    for ev in prof.key_averages():
        us = ev.device_time_total if cuda else ev.self_cpu_time_total
        if us <= 0 or (not cuda and not ev.key.startswith("aten::")):
            continue
        if cuda and ev.device_type != torch.autograd.DeviceType.CUDA:
            continue
        ms = us / 1e3 / n
        kernels.append((ev.key, ms))
        by_kind[kind_of(ev.key)] = by_kind.get(kind_of(ev.key), 0.0) + ms
    total = sum(by_kind.values())
    rec.update(eager_step_ms=eager_s * 1e3, kernel_ms_per_step=total,
               kernel_ms_by_kind={k: round(v, 4) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
               kernel_share_by_kind={k: round(v / total, 4) for k, v in by_kind.items()} if total else {},
               top_kernels=[{"name": k[:120], "ms_per_step": round(v, 4), "kind": kind_of(k)}
                            for k, v in sorted(kernels, key=lambda kv: -kv[1])[:10]],
               time_unit="CUDA kernel time" if cuda else "CPU self time of aten operators")
    del engine, model
    if cuda:
        torch.cuda.empty_cache()
    return rec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["m1-3b:560", "llama-3.2-3b:128"], help="NAME:BATCH")
    p.add_argument("--context", type=int, default=2048)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--profile-steps", type=int, default=5)
    p.add_argument("--memory-gb", type=float, default=60.0, help="the engine's cache budget")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--tiny", action="store_true", help="tiny shapes (smoke runs)")
    p.add_argument("--nano-batches", type=int, nargs="+", default=[1, 2],
                   help="time the graph step split into each of these many nano-batches (Engine's nano_batches)")
    p.add_argument("--commit", default=None)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    bandwidth = copy_bandwidth() if args.device == "cuda" else 0.0
    env = environment(bandwidth)
    args.out.mkdir(parents=True, exist_ok=True)
    records = []
    for spec in args.models:
        name, batch = spec.rsplit(":", 1)
        rec = profile(args, name, int(batch), env)
        rec.update(commit=args.commit, date=env.date, versions=env.versions)
        records.append(rec)
        (args.out / "profile_step.json").write_text(json.dumps(records, indent=1))
        print(json.dumps({k: rec.get(k) for k in ("model", "batch", "step_ms", "step_ms_by_nano_batches", "step_ms_draw_ref", "draw_ms", "roofline_fraction",
                                                   "eager_step_ms", "kernel_ms_per_step", "kernel_ms_by_kind")}))


if __name__ == "__main__":
    main()
