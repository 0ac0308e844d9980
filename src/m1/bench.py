"""`m1 bench`: decode throughput of the hybrid shapes against a same-size transformer.

Two workloads (`--workload`). `fixed` (the default), in one process on one GPU:
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

`reasoning`: real `Engine.generate` runs of a reasoning-like workload (see
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

import argparse
import datetime as _dt
import json
import logging
import math
import platform
import random
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

CONTEXTS = [256, 1024, 2048, 4096, 8192, 16384]
GENS = [4096, 8192, 16384]
MODELS = ["llama-3.2-3b", "m1-3b", "m1-3b-s128"]
PROMPT = 256


@dataclass
class Env:
    device: str
    versions: dict
    date: str
    bandwidth: float  # bytes/s


def _env(bandwidth: float) -> Env:
    import transformers

    versions = {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()}
    try:
        import triton

        versions["triton"] = triton.__version__
    except ImportError:  # a CPU run: recorded as absent, nothing chosen from it
        versions["triton"] = None
    try:
        versions["m1_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip() or None
    except OSError:
        versions["m1_commit"] = None
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    return Env(dev, versions, _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), bandwidth)


def copy_bandwidth(gib: float = 4.0) -> float:
    """Bytes/s of a large device-to-device copy, counting bytes read plus bytes written (median of 20)."""
    n = int(gib * 2**30) // 2
    a = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    b = torch.empty_like(a)
    times = []
    for i in range(25):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        b.copy_(a)
        e.record()
        e.synchronize()
        if i >= 5:
            times.append(s.elapsed_time(e) / 1e3)
    del a, b
    torch.cuda.empty_cache()
    return 2 * n * 2 / sorted(times)[len(times) // 2]


def tiny_overrides(name: str) -> dict:
    """A named shape shrunk for CPU smoke runs: 4 layers, width 64, the shape's kind of layer mix."""
    from m1.config import NAMED_SHAPES

    s = NAMED_SHAPES[name]
    all_attention = len(s.attention_layers) == s.num_hidden_layers
    return dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                num_key_value_heads=2, attention_layers=list(range(4)) if all_attention else [1, 3],
                mamba_heads=4, mamba_head_dim=16, mamba_groups=4, state_size=16, max_position_embeddings=65536)


def build_model(name: str, dtype=torch.bfloat16, device: str = "cuda", tiny: bool = False):
    from m1.config import HybridConfig
    from m1.modeling import HybridForCausalLM

    cfg = HybridConfig.from_name(name, **(tiny_overrides(name) if tiny else {}))
    torch.manual_seed(0)
    with torch.device(device):
        model = HybridForCausalLM(cfg)
    return model.to(dtype).eval()


def weight_bytes(model) -> int:
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total


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
        r = engine.runner
        g = torch.Generator(device="cuda").manual_seed(1)
        for t in list(engine.cache.k.values()) + list(engine.cache.v.values()):
            t.normal_(generator=g)  # random data, never zeros: zeros can time faster than real data
        for t in engine.cache.conv.values():
            t.normal_(generator=g)
        for t in engine.cache.ssm.values():
            t.normal_(std=0.1, generator=g)
        r.temperature.fill_(0.7)
        r.top_p.fill_(1.0)
        r.top_k.zero_()
        r.key.copy_(torch.randint(0, 2**31, r.key.shape, device="cuda", generator=g))
        r.tok.copy_(torch.randint(0, engine.model.config.vocab_size, r.tok.shape, device="cuda", generator=g))

    def fits(self, batch: int, context: int, steps: int) -> bool:
        lay = self.engine.layout
        if batch > lay.num_slots or context + steps > lay.max_model_len:
            return False
        return not self.engine.has_kv or batch * math.ceil((context + steps) / lay.block_size) <= lay.usable_blocks

    def time(self, batch: int, context: int, steps: int = 12, warmup: int = 3) -> float:
        """Median seconds per decode step (graph replay) at this batch and context."""
        eng, r = self.engine, self.engine.runner
        bs = eng.layout.block_size
        per_seq = math.ceil((context + steps + warmup) / bs)
        if eng.has_kv:
            blocks = torch.arange(1, 1 + batch * per_seq, dtype=torch.int32, device="cuda").view(batch, per_seq)
            r.block_table[:batch].zero_()
            r.block_table[:batch, :per_seq] = blocks  # distinct blocks per row: every read comes from HBM
        slot_ids = torch.arange(batch, device="cuda")
        r.pos[:batch] = context - 1 - warmup  # after warm-up, each row attends to `context` positions
        for _ in range(warmup):
            eng.graphs.run(slot_ids, False)
        times = []
        for _ in range(steps):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            eng.graphs.run(slot_ids, False)
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


def _record(env: Env, model_name: str, model, **fields) -> dict:
    rec = dict(model=model_name, engine=fields.pop("engine", "m1"), param_count=sum(p.numel() for p in {p.data_ptr(): p for p in model.parameters()}.values()),
               device=env.device, versions=env.versions, date=env.date, copy_bandwidth_gbs=env.bandwidth / 1e9)
    rec.update(fields)
    return rec


def _write(out: Path, name: str, records: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(json.dumps(records, indent=1))


def prefill_seconds(engine, n: int = 64) -> float:
    """Seconds per 256-token prompt when n prompts are prefilled together (packed, as `Engine.generate`
    admits them), mean over 3 calls after one warm-up."""
    r = engine.runner
    n = min(n, engine.layout.num_slots)
    g = torch.Generator().manual_seed(3)
    nb = math.ceil(PROMPT / engine.layout.block_size)
    items = [(torch.randint(0, engine.model.config.vocab_size, (PROMPT,), generator=g).tolist(), i,
              list(range(1 + i * nb, 1 + (i + 1) * nb)) if engine.has_kv else []) for i in range(n)]
    r.prefill_many(items, engine.prefill_chunk, engine.prefill_tokens)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(3):
        r.prefill_many(items, engine.prefill_chunk, engine.prefill_tokens)
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
    engine = Engine(model, max_batch_size=max(batches), max_model_len=max_len, memory_budget_gb=budget / 2**30, graph_buckets=batches)
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
            rec = _record(env, name, model, batch=b, context=c, prompt_len=None, gen_len=None, tokens_per_s=b / t, step_ms=t * 1e3,
                          peak_memory_gb=torch.cuda.max_memory_allocated() / 1e9, bytes_per_step=nbytes,
                          roofline_fraction=nbytes / t / env.bandwidth, kind="decode_step")
            records.append(rec)
            _write(out, f"engine_steps_{name}.json", records)  # after every point: a cut-off run keeps what it measured
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
        integ.append(_record(env, name, model, batch=b, prompt_len=PROMPT, gen_len=gen, tokens_per_s=tps, step_ms=mean_step * 1e3,
                             peak_memory_gb=torch.cuda.max_memory_allocated() / 1e9, bytes_per_step=nbytes,
                             roofline_fraction=nbytes / mean_step / env.bandwidth, prefill_ms_per_prompt=prefill_s * 1e3,
                             kind="integrated", note="best batch; step times integrated over contexts [256, 256+gen]"))
        _write(out, f"engine_throughput_{name}.json", integ)
    e2e = []
    if args.e2e_gen and name in args.e2e_models:
        want = args.e2e_batch if name != "llama-3.2-3b" else max((b for b in steps if timer.fits(b, PROMPT + args.e2e_gen, 0)), default=0)
        want = want if name in args.e2e_models else 0
        if want and timer.fits(want, PROMPT + args.e2e_gen, 0) and want in steps:
            tps, dt = run_e2e(engine, want, args.e2e_gen)
            pred, mean_step = integrate(steps[want], want, args.e2e_gen, prefill_s)
            e2e.append(_record(env, name, model, batch=want, prompt_len=PROMPT, gen_len=args.e2e_gen, tokens_per_s=tps,
                               step_ms=dt / args.e2e_gen * 1e3, peak_memory_gb=torch.cuda.max_memory_allocated() / 1e9,
                               bytes_per_step=step_bytes(model, engine, want, PROMPT + args.e2e_gen // 2),
                               roofline_fraction=None, predicted_tokens_per_s=pred, agreement=tps / pred, kind="end_to_end", seconds=dt))
            log.info("%s e2e b=%d gen=%d: %.0f tok/s measured, %.0f predicted (%.3f)", name, want, args.e2e_gen, tps, pred, tps / pred)
            _write(out, f"engine_e2e_{name}.json", e2e)
    cb = args.compare_batch
    if cb and timer.fits(cb, PROMPT + 256, 0):  # batch 64, 256 + 256: the comparison point for transformers.generate
        run_e2e(engine, cb, 256)  # warm-up: graph capture and Triton compiles are not part of the comparison
        tps, dt = run_e2e(engine, cb, 256)
        e2e.append(_record(env, name, model, batch=cb, prompt_len=PROMPT, gen_len=256, tokens_per_s=tps, step_ms=dt / 256 * 1e3,
                           peak_memory_gb=torch.cuda.max_memory_allocated() / 1e9, bytes_per_step=None, roofline_fraction=None,
                           kind="end_to_end", seconds=dt, prefill_ms_per_prompt=prefill_s * 1e3))
        log.info("%s e2e b=%d 256+256: %.0f tok/s (%.2f s)", name, cb, tps, dt)
        _write(out, f"engine_e2e_{name}.json", e2e)
    summary = {"steps": steps, "integrated": integ, "e2e": e2e}
    del engine, timer, model
    torch.cuda.empty_cache()
    return summary


# ---------------------------------------------------------------------------------------- reasoning workload


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


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _capture_graphs(engine) -> None:
    """Capture every decode-graph bucket before the clock starts (on scratch rows: harmless)."""
    if engine.graphs is None:
        return
    engine._check_graphs()
    r = engine.runner
    for b in engine.graphs.buckets:
        engine.graphs.run(torch.full((b,), r.scratch_slot, dtype=torch.long, device=r.device), False)
    r.reset_scratch()


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
        _sync(engine.device)
        t0 = time.perf_counter()
        outs = engine.generate(prompts, params, use_tqdm=False)
        _sync(engine.device)
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


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or None
    except OSError:
        return None


def bench_reasoning(name: str, args, env: Env, out: Path, workload: ReasoningWorkload, lengths: list[int]) -> list[dict]:
    """Both KV policies (`args.kv_policies`) for one model, each in a fresh engine under the same budget."""
    from m1.engine import Engine

    dev = args.device
    model = build_model(name, device=dev, tiny=args.tiny, dtype=torch.bfloat16 if dev == "cuda" else torch.float32)
    wb = weight_bytes(model)
    budget = args.memory_gb * 2**30 - wb - args.workspace_gb * 2**30  # the same total for every model
    if budget <= 0:
        raise ValueError(f"--memory-gb {args.memory_gb} leaves nothing for the cache after weights and workspace")
    is_llama = len(model.config.attention_layers) == model.config.num_hidden_layers
    batch = (args.reasoning_llama_batch or args.reasoning_batch) if is_llama else args.reasoning_batch
    records = []
    for policy in args.kv_policies:
        engine = Engine(model, max_batch_size=batch, max_model_len=workload.prompt_len + workload.max_tokens,
                        memory_budget_gb=budget / 2**30, kv_policy=policy, prefill_chunk=args.prefill_chunk,
                        block_size=args.block_size)
        engine.generate(workload.prompts(model.config.vocab_size)[: min(4, workload.requests)],
                        _warm_params(), use_tqdm=False)  # compiles and allocator warm-up, off the clock
        _capture_graphs(engine)
        log.info("%s (%s): reasoning run of %d requests, batch %d, %d KV blocks", name, policy, workload.requests, batch,
                 engine.layout.usable_blocks)
        res = run_reasoning(engine, workload, lengths)
        ideal = roofline_seconds(model, engine, res["work"], args.peak_tflops * 1e12, env.bandwidth) if env.bandwidth else None
        rec = dict(run_id=args.run_id, commit=_commit(), device=env.device, date=env.date, versions=env.versions, model=name,
                   method="e2e", workload="reasoning", kv_policy=policy, batch=batch, requests=workload.requests,
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
        _write(out, f"reasoning_{name}{'_tiny' if args.tiny else ''}.json", records)
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
    env = _env(bw)
    args.run_id = args.run_id or f"{env.date[:10]}-{uuid.uuid4().hex[:8]}"
    models = args.models
    workload = ReasoningWorkload(requests=args.requests or 4 * args.reasoning_batch, prompt_len=args.prompt_len,
                                 gen_mean=args.gen_mean, gen_sigma=args.gen_sigma, gen_cap=args.gen_cap,
                                 max_tokens=args.max_tokens, seed=args.length_seed)
    lengths = workload.lengths()
    log.info("reasoning workload %s: %d requests, drawn mean %.0f tokens", args.run_id, workload.requests, sum(lengths) / len(lengths))
    records = []
    for name in models:
        records += bench_reasoning(name, args, env, args.out, workload, lengths)
    _print_reasoning(records)
    return 0


def _print_reasoning(records: list[dict]) -> None:
    print("\nmodel            policy     batch  tok/s      roofline  TTFT p50/p99 s   ITL p50/p99 ms   preempt")
    for r in records:
        roof = "n/a" if r["roofline_fraction"] is None else f"{r['roofline_fraction']:.2f}"
        itl = [1e3 * (x or 0.0) for x in (r["itl_p50_s"], r["itl_p99_s"])]
        print(f"{r['model']:<16} {r['kv_policy']:<10} {r['batch']:<6} {r['tokens_per_s']:<10.0f} {roof:<9} "
              f"{r['ttft_p50_s']:.3f}/{r['ttft_p99_s']:.3f}    {itl[0]:.2f}/{itl[1]:.2f}      {r['preemptions']}")
    by = {(r["model"], r["kv_policy"]): r for r in records}
    for (m, pol), r in by.items():
        if pol == "on_demand" and (m, "reserve") in by:
            print(f"{m}: on_demand / reserve = {r['tokens_per_s'] / by[(m, 'reserve')]['tokens_per_s']:.2f}x")
    for (m, pol), r in by.items():
        base = by.get(("llama-3.2-3b", pol))
        if m != "llama-3.2-3b" and base:
            fr = lambda x: "n/a" if x["roofline_fraction"] is None else f"{x['roofline_fraction']:.2f}"  # noqa: E731
            print(f"ratio {m}/llama-3.2-3b ({pol}): {r['tokens_per_s'] / base['tokens_per_s']:.2f}x "
                  f"(roofline {m} {fr(r)}, llama {fr(base)})")


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


def cli_main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="m1 bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=None,
                    help=f"named shapes (HybridConfig.from_name); default {' '.join(MODELS)} (fixed), llama-3.2-3b m1-3b (reasoning)")
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 16, 64, 128, 256, 512, 1024])
    ap.add_argument("--llama-batches", nargs="+", type=int, default=[1, 16, 32, 48, 64, 96, 128, 192],
                    help="batches for the all-attention shape, dense near its KV memory limits")
    ap.add_argument("--e2e-models", nargs="*", default=["llama-3.2-3b", "m1-3b"], help="shapes given the long validation run")
    ap.add_argument("--contexts", nargs="+", type=int, default=CONTEXTS)
    ap.add_argument("--gens", nargs="+", type=int, default=GENS)
    ap.add_argument("--memory-gb", type=float, default=128.0, help="total device memory each model may use (weights + cache + workspace)")
    ap.add_argument("--workspace-gb", type=float, default=12.0, help="held back for activations, logits and graphs")
    ap.add_argument("--s128-max-batch", type=int, default=512, help="slot cap for m1-3b-s128, whose state is 35 MB a slot")
    ap.add_argument("--e2e-gen", type=int, default=4096, help="generation length of the validation run (0 skips)")
    ap.add_argument("--e2e-batch", type=int, default=256, help="batch of the hybrids' validation run")
    ap.add_argument("--compare-batch", type=int, default=64, help="batch of the 256 + 256 run compared with transformers.generate (0 skips)")
    ap.add_argument("--baseline", nargs="*", default=["llama-3.2-3b", "m1-3b"], help="shapes run through transformers.generate")
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    ap.add_argument("--plot-only", action="store_true", help="only redraw engine_throughput.png from the JSON in --out")
    r = ap.add_argument_group("reasoning workload (--workload reasoning)")
    r.add_argument("--workload", choices=["fixed", "reasoning"], default="fixed",
                   help="fixed: step times, integration and fixed-length runs; reasoning: lognormal completion lengths")
    r.add_argument("--kv-policies", nargs="+", choices=["on_demand", "reserve"], default=["on_demand", "reserve"],
                   help="engine KV policies to run, each in a fresh engine under the same budget")
    r.add_argument("--reasoning-batch", type=int, default=1024, help="the hybrids' decode slots; requests default to 4x this")
    r.add_argument("--reasoning-llama-batch", type=int, default=None, help="the all-attention model's slots (default: the same)")
    r.add_argument("--requests", type=int, default=None, help="requests, all arriving at t = 0 (default 4 x --reasoning-batch)")
    r.add_argument("--prompt-len", type=int, default=PROMPT)
    r.add_argument("--gen-mean", type=float, default=4096.0, help="mean of the lognormal completion length (before the cap)")
    r.add_argument("--gen-sigma", type=float, default=1.0, help="sigma of the lognormal's log")
    r.add_argument("--gen-cap", type=int, default=16384, help="longest drawn completion")
    r.add_argument("--max-tokens", type=int, default=16384, help="max_tokens every request carries (the scheduler sees only this)")
    r.add_argument("--length-seed", type=int, default=0, help="seed of the drawn lengths and the prompts")
    r.add_argument("--run-id", default=None, help="shared by the records of one run across device calls (default: new)")
    r.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    r.add_argument("--tiny", action="store_true", help="tiny shapes of the named models (CPU smoke runs)")
    r.add_argument("--peak-tflops", type=float, default=797.0, help="GEMM peak of the roofline (H200 bf16 dense, measured)")
    r.add_argument("--bandwidth-tbs", type=float, default=None, help="memory bandwidth of the roofline (default: measured copy bandwidth)")
    r.add_argument("--block-size", type=int, default=None, help="KV block size (default: the engine's)")
    r.add_argument("--prefill-chunk", type=int, default=2048)
    args = ap.parse_args(argv)
    if args.plot_only:
        print(plot(args.out, args.out / "engine_throughput.png"))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.workload == "reasoning":
        args.models = args.models or ["llama-3.2-3b", "m1-3b"]
        return reasoning_main(args, ap)
    args.models = args.models or MODELS
    if not torch.cuda.is_available():
        ap.error("needs a CUDA device")
    bw = copy_bandwidth()
    env = _env(bw)
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
        _write(args.out, "engine_baseline.json", base)
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
