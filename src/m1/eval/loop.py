"""The evaluation loop: generate, grade, stream to samples.jsonl, summarise per benchmark.

Samples are generated in fixed chunks per problem, each seeded from (seed, benchmark,
problem, chunk), and appended to `samples.jsonl` as soon as they are graded. A benchmark
is seeded by its name, and one given as a file path by the file's name (`benchmark_key`),
so a run directory can move, or be a temporary one, without changing the samples.

A generator takes a list of chunks per call (`Generator.requests_per_call`): one, so each is
written as soon as it is done (transformers' generate, `m1 eval`'s Engine), or a whole
benchmark at once (the Engine batching every chunk continuously, for tiny models on a CPU).
Either way the rows are the same records from the same seeds, so a run started one way
resumes the other way: a restarted run reads the file, regenerates only chunks with
missing samples and writes only the missing ones. Summaries are computed from the file
alone (`m1.eval.samples`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from m1.engine.params import SamplingParams
from m1.errors import UserError
from m1.eval.benchmarks import PromptConfig, build_prompt, load_benchmark
from m1.eval.generation import EngineGenerator, Generator
from m1.eval.grader import answer_and_verdict, warm_up
from m1.eval.samples import read_samples, summarize_samples

logger = logging.getLogger(__name__)


def eval_sampling(temperature: float = 0.7, top_p: float = 1.0, max_tokens: int = 32768) -> SamplingParams:
    """Evaluation's sampling defaults (M1's: T 0.7, long completions). The loop sets `n` and `seed` per chunk."""
    return SamplingParams(temperature=temperature, top_p=top_p, max_tokens=max_tokens)


@dataclass
class EvalConfig:
    """One `m1 eval` run."""

    model: str
    benchmarks: list[str]
    out: Path
    n: int = 64
    sampling: SamplingParams = field(default_factory=eval_sampling)  # its n and seed are set per chunk
    data_dir: Path | None = None
    limit: int | None = None
    seed: int = 0
    chunk_size: int = 16  # samples generated together (one batch) for a problem
    prompt: PromptConfig = field(default_factory=PromptConfig)
    verifier: str | None = None
    extraction: str = "strict"  # or "lenient": also a number stated in the closing lines, for a numeric gold


def check_resume_extraction(rows: list[dict], cfg: EvalConfig) -> None:
    """A resumed run must grade its new samples as the samples on file were graded.

    Each row records its extraction mode; rows written before rows did (no "extraction"
    key) take the mode their run's summary.json recorded. Mixing modes in one
    samples.jsonl would make pass@k and maj@k, and summary.json's `extraction`, describe
    neither mode, so a different `--extraction` is a user error, not a silent mix.
    """
    stored = {r["extraction"] for r in rows if "extraction" in r}
    if any("extraction" not in r for r in rows) and (cfg.out / "summary.json").exists():
        legacy = json.loads((cfg.out / "summary.json").read_text()).get("extraction")
        stored |= {legacy} if legacy else set()
    other = sorted(stored - {cfg.extraction})
    if other:
        raise UserError(f"--extraction {cfg.extraction}: {cfg.out / 'samples.jsonl'} holds samples graded with "
                        f"--extraction {', '.join(other)}; resume with that mode or use a new --out")


def benchmark_key(benchmark: str) -> str:
    """What a benchmark is seeded by: its name, or for a `.jsonl`/`.json` path the file's name."""
    path = Path(benchmark)
    return path.name if path.suffix in (".jsonl", ".json") else benchmark


def chunk_seed(seed: int, benchmark: str, problem_id: str, chunk: int) -> int:
    """The seed of one chunk of samples; `benchmark` is its `benchmark_key`."""
    h = hashlib.sha256(f"{seed}/{benchmark}/{problem_id}/{chunk}".encode()).digest()
    return int.from_bytes(h[:4], "little")


def run_eval(cfg: EvalConfig, generator: Generator, tokenizer, verifier=None,
             shard: tuple[int, int] | None = None) -> dict[str, dict]:
    """Generate and grade every missing sample, then write and return the summaries.

    ``shard=(rank, world)`` keeps only the problems whose index in their benchmark is
    ``rank`` mod ``world`` (data-parallel eval, see `m1.eval.parallel`); seeds depend on
    (benchmark, problem, chunk) only, so a shard's samples are those of a full run.
    ``gen_time_s`` of a row is its call's generation time divided by the call's samples:
    one generator's throughput, however many chunks a call took.
    """
    cfg.out.mkdir(parents=True, exist_ok=True)
    path = cfg.out / "samples.jsonl"
    rows = read_samples(path)
    if rows:  # rewrite without torn lines so appends start on a clean line
        with open(path, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    check_resume_extraction(rows, cfg)
    done = {(r["benchmark"], r["problem_id"], r["sample"]) for r in rows}
    logger.info("%d samples already in %s", len(done), path)
    warm_up()
    t_start = time.perf_counter()
    lenient = cfg.extraction == "lenient"
    with open(path, "a") as out:
        for bench in cfg.benchmarks:
            problems = load_benchmark(bench, data_dir=cfg.data_dir, limit=cfg.limit)
            if shard is not None:
                problems = [p for i, p in enumerate(problems) if i % shard[1] == shard[0]]
            key = benchmark_key(bench)
            jobs = []  # (problem, first sample index, chunk size, missing indices)
            for p in problems:
                for c0 in range(0, cfg.n, cfg.chunk_size):
                    idx = list(range(c0, min(cfg.n, c0 + cfg.chunk_size)))
                    missing = [i for i in idx if (bench, p.id, i) not in done]
                    if missing:
                        jobs.append((p, c0, len(idx), missing))
            step = generator.requests_per_call or max(1, len(jobs))
            prompts: dict[str, str] = {}
            calls = [jobs[s : s + step] for s in range(0, len(jobs), step)]
            for call in tqdm(calls, desc=f"{bench} ({generator.name})", disable=len(calls) < 2):
                for p, *_ in call:
                    if p.id not in prompts:
                        prompts[p.id] = build_prompt(p.problem, tokenizer, cfg.prompt)
                params = [dataclasses.replace(cfg.sampling, n=size, seed=chunk_seed(cfg.seed, key, p.id, c0))
                          for p, c0, size, _ in call]
                t0 = time.perf_counter()
                outs = generator.generate([prompts[p.id] for p, *_ in call], params)
                dt = (time.perf_counter() - t0) / sum(size for _, _, size, _ in call)
                for (p, c0, _, missing), samples in zip(call, outs):
                    for i in missing:
                        s = samples[i - c0]
                        ans, ok = answer_and_verdict(s.text, p.gold, lenient)
                        row = {"benchmark": bench, "problem_id": p.id, "sample": i, "gold": p.gold, "answer": ans,
                               "correct": ok, "extraction": cfg.extraction,
                               "num_tokens": s.num_tokens,
                               "finish_reason": s.finish_reason, "gen_time_s": dt, "text": s.text}
                        if verifier is not None:
                            row["verifier_score"] = verifier.score(p.problem, s.text)
                        out.write(json.dumps(row) + "\n")
                out.flush()
    logger.info("generation and grading took %.1fs", time.perf_counter() - t_start)
    rows = read_samples(path)
    summaries = {b: summarize_samples([r for r in rows if r["benchmark"] == b], cfg.n) for b in cfg.benchmarks}
    write_summary(cfg, summaries)
    return summaries


def run_engine_eval(cfg: EvalConfig, model, tokenizer, verifier=None, max_batch_size: int = 256,
                    shard: tuple[int, int] | None = None) -> dict[str, dict]:
    """`run_eval` with m1's Engine taking a whole benchmark per call (continuous batching over
    `max_batch_size` slots), on an engine sized to each call's prompts and ``max_tokens``.

    A tiny model on a CPU is bound by per-call overhead, which this removes. The samples equal
    one-chunk-per-call's only up to batched arithmetic: other sequences in the batch change
    float rounding, which can flip a sampled token where the logits are nearly tied.
    """
    gen = EngineGenerator(model, tokenizer, max_batch_size=max_batch_size, requests_per_call=None, fit_context=True)
    return run_eval(cfg, gen, tokenizer, verifier, shard)


def config_record(cfg: EvalConfig) -> dict:
    """The run's config as summary.json records it."""
    d = dataclasses.asdict(cfg)
    d["out"] = str(cfg.out)
    d["data_dir"] = None if cfg.data_dir is None else str(cfg.data_dir)
    s = cfg.sampling
    d["sampling"] = {"temperature": s.temperature, "top_p": s.top_p, "top_k": s.top_k, "max_tokens": s.max_tokens}
    return d


def write_summary(cfg: EvalConfig, summaries: dict[str, dict], **extra) -> None:
    """summary.json: the config, the extraction mode, `extra` fields and each benchmark's summary."""
    (cfg.out / "summary.json").write_text(json.dumps({"config": config_record(cfg), "extraction": cfg.extraction, **extra,
                                                      "benchmarks": summaries}, indent=2))
