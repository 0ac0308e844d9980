"""The evaluation loop: generate, grade, stream to samples.jsonl, summarise per benchmark.

Samples are generated in fixed chunks per problem, each seeded from (seed, benchmark,
problem, chunk), and appended to `samples.jsonl` as soon as they are graded. A restarted
run reads that file, regenerates only chunks with missing samples and writes only the
missing ones, so interrupted + resumed gives the same samples as one uninterrupted run.
Summaries are computed from the file alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from m1.errors import UserError
from m1.eval.benchmarks import PromptConfig, build_prompt, load_benchmark
from m1.eval.generation import Generator, SamplingConfig
from m1.eval.grader import answers_equivalent, final_answer, warm_up
from m1.eval.metrics import equivalence_groups, k_values, maj_at_k, mean_interval, pass_at_k, verify_at_k

logger = logging.getLogger(__name__)

TIMING_KEYS = ("wall_time_s", "gen_time_s", "samples_per_s")


@dataclass
class EvalConfig:
    """One `m1 eval` run."""

    model: str
    benchmarks: list[str]
    out: Path
    n: int = 64
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    data_dir: Path | None = None
    limit: int | None = None
    seed: int = 0
    chunk_size: int = 16  # samples generated together (one batch) for a problem
    prompt: PromptConfig = field(default_factory=PromptConfig)
    verifier: str | None = None
    extraction: str = "strict"  # or "lenient": also a number stated in the closing lines, for a numeric gold


def chunk_seed(seed: int, benchmark: str, problem_id: str, chunk: int) -> int:
    h = hashlib.sha256(f"{seed}/{benchmark}/{problem_id}/{chunk}".encode()).digest()
    return int.from_bytes(h[:4], "little")


def read_samples(path: Path) -> list[dict]:
    """Rows of samples.jsonl; a torn last line (the run was killed mid-write) is dropped."""
    if not path.exists():
        return []
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                logger.warning("%s: dropping a torn line (interrupted write)", path)
    return rows


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


def run_eval(cfg: EvalConfig, generator: Generator, tokenizer, verifier=None,
             shard: tuple[int, int] | None = None) -> dict[str, dict]:
    """Generate and grade every missing sample, then write and return the summaries.

    ``shard=(rank, world)`` keeps only the problems whose index in their benchmark is
    ``rank`` mod ``world`` (data-parallel eval, see `m1.eval.parallel`); seeds depend on
    (benchmark, problem, chunk) only, so a shard's samples are those of a full run.
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
    with open(path, "a") as out:
        for bench in cfg.benchmarks:
            problems = load_benchmark(bench, data_dir=cfg.data_dir, limit=cfg.limit)
            if shard is not None:
                problems = [p for i, p in enumerate(problems) if i % shard[1] == shard[0]]
            for p in tqdm(problems, desc=f"{bench} ({generator.name})"):
                prompt = build_prompt(p.problem, tokenizer, cfg.prompt)
                for c0 in range(0, cfg.n, cfg.chunk_size):
                    idx = list(range(c0, min(cfg.n, c0 + cfg.chunk_size)))
                    missing = [i for i in idx if (bench, p.id, i) not in done]
                    if not missing:
                        continue
                    t0 = time.perf_counter()
                    samples = generator.generate(prompt, len(idx), cfg.sampling, chunk_seed(cfg.seed, bench, p.id, c0))
                    dt = (time.perf_counter() - t0) / len(idx)
                    for i in missing:
                        s = samples[i - c0]
                        ans = final_answer(s.text, p.gold, lenient=cfg.extraction == "lenient")
                        row = {"benchmark": bench, "problem_id": p.id, "sample": i, "gold": p.gold, "answer": ans,
                               "correct": answers_equivalent(p.gold, ans), "extraction": cfg.extraction,
                               "num_tokens": s.num_tokens,
                               "finish_reason": s.finish_reason, "gen_time_s": dt, "text": s.text}
                        if verifier is not None:
                            row["verifier_score"] = verifier.score(p.problem, s.text)
                        out.write(json.dumps(row) + "\n")
                    out.flush()
    logger.info("generation and grading took %.1fs", time.perf_counter() - t_start)
    rows = read_samples(path)
    summaries = {b: summarize([r for r in rows if r["benchmark"] == b], cfg.n) for b in cfg.benchmarks}
    (cfg.out / "summary.json").write_text(json.dumps({"config": _jsonable(cfg), "extraction": cfg.extraction,
                                                          "benchmarks": summaries}, indent=2))
    return summaries


def _jsonable(cfg: EvalConfig) -> dict:
    d = asdict(cfg)
    d["out"] = str(cfg.out)
    d["data_dir"] = None if cfg.data_dir is None else str(cfg.data_dir)
    return d


def group_by_problem(rows: list[dict]) -> dict[str, list[dict]]:
    by: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by[r["problem_id"]].append(r)
    return {pid: sorted(rs, key=lambda r: r["sample"]) for pid, rs in by.items()}


def summarize(rows: list[dict], n: int) -> dict:
    """pass@1 with its 95% interval, pass@k, maj@k and verify@k over k = 1, 2, 4 ... n, tokens, timing."""
    by = group_by_problem(rows)
    if not by:
        return {"problems": 0}
    complete = {pid: rs for pid, rs in by.items() if len(rs) >= n}
    if len(complete) < len(by):
        logger.warning("%d problems have fewer than n=%d samples; summarising complete ones only", len(by) - len(complete), n)
    ks = k_values(n)
    pass1 = [sum(r["correct"] for r in rs[:n]) / n for rs in complete.values()]
    mean, lo, hi = mean_interval(pass1)
    pass_k = {k: 0.0 for k in ks}
    maj_k = {k: 0.0 for k in ks}
    ver_k = {k: 0.0 for k in ks}
    has_ver = all("verifier_score" in r for rs in complete.values() for r in rs)
    for rs in complete.values():
        rs = rs[:n]
        c = sum(r["correct"] for r in rs)
        answers = [r["answer"] for r in rs]
        correct = [r["correct"] for r in rs]
        groups = equivalence_groups(answers)
        for k in ks:
            pass_k[k] += pass_at_k(n, c, k)
            maj_k[k] += maj_at_k(answers, correct, k, groups=groups)
            if has_ver:
                ver_k[k] += verify_at_k([r["verifier_score"] for r in rs], correct, k)
    P = len(complete)
    all_rows = [r for rs in complete.values() for r in rs[:n]]
    gen_time = sum(r["gen_time_s"] for r in all_rows)
    out = {
        "problems": P,
        "n": n,
        "pass@1": {"mean": mean, "ci95": [lo, hi]},
        "pass@k": {str(k): v / P for k, v in pass_k.items()},
        "maj@k": {str(k): v / P for k, v in maj_k.items()},
        "mean_tokens": sum(r["num_tokens"] for r in all_rows) / len(all_rows),
        "truncated_frac": sum(r["finish_reason"] == "length" for r in all_rows) / len(all_rows),
        "no_answer_frac": sum(r["answer"] is None for r in all_rows) / len(all_rows),
        "wall_time_s": gen_time,
        "gen_time_s": gen_time,
        "samples_per_s": len(all_rows) / gen_time if gen_time > 0 else float("inf"),
    }
    if has_ver:
        out["verify@k"] = {str(k): v / P for k, v in ver_k.items()}
    return out


# ---------------------------------------------------------------- batched Engine evaluation


def run_engine_eval(cfg: EvalConfig, model, tokenizer, verifier=None, max_batch_size: int = 256,
                    shard: tuple[int, int] | None = None) -> dict[str, dict]:
    """`run_eval` for m1's Engine with every missing sample of a benchmark in one batch.

    The loop above asks a `Generator` for one problem's chunk at a time; a tiny model on a
    CPU is then bound by per-call overhead. Here all missing chunks of a benchmark go to one
    ``Engine.generate`` call (continuous batching over ``max_batch_size`` slots), with the
    same per-chunk seeds (`chunk_seed`), prompts (`build_prompt`), grading
    (`final_answer` + `answers_equivalent`) and samples.jsonl rows, so it resumes from,
    and is resumed by, `run_eval`. The samples match the serial loop's only up to batched
    arithmetic: other sequences in the batch change float rounding, which can flip a sampled
    token where the logits are nearly tied. ``gen_time_s`` is the batch's generation time divided
    by its samples: one generator's throughput, as in the serial loop. ``temperature`` 0
    is greedy decoding. One difference: a benchmark given as a file path is seeded by the
    file's name, not its full path, so a run directory can move (or be a temporary one)
    without changing the samples.
    """
    import torch

    from m1.engine import Engine, SamplingParams

    cfg.out.mkdir(parents=True, exist_ok=True)
    path = cfg.out / "samples.jsonl"
    rows = read_samples(path)
    if rows:
        with open(path, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    check_resume_extraction(rows, cfg)
    done = {(r["benchmark"], r["problem_id"], r["sample"]) for r in rows}
    warm_up()
    with open(path, "a") as out:
        for bench in cfg.benchmarks:
            problems = load_benchmark(bench, data_dir=cfg.data_dir, limit=cfg.limit)
            if shard is not None:
                problems = [p for i, p in enumerate(problems) if i % shard[1] == shard[0]]
            jobs = []  # (problem, first sample index, chunk size, missing indices)
            for p in problems:
                for c0 in range(0, cfg.n, cfg.chunk_size):
                    idx = list(range(c0, min(cfg.n, c0 + cfg.chunk_size)))
                    missing = [i for i in idx if (bench, p.id, i) not in done]
                    if missing:
                        jobs.append((p, c0, len(idx), missing))
            if not jobs:
                continue
            key = Path(bench).name if Path(bench).is_file() else bench
            prompt_text = {p.id: build_prompt(p.problem, tokenizer, cfg.prompt) for p, *_ in jobs}
            prompts = [tokenizer(prompt_text[p.id], add_special_tokens=False)["input_ids"] for p, *_ in jobs]
            params = [SamplingParams(n=size, temperature=cfg.sampling.temperature, top_p=cfg.sampling.top_p,
                                     max_tokens=cfg.sampling.max_tokens, seed=chunk_seed(cfg.seed, key, p.id, c0))
                      for p, c0, size, _ in jobs]
            engine = Engine(model, tokenizer, max_batch_size=max_batch_size,
                            max_model_len=max(map(len, prompts)) + cfg.sampling.max_tokens + 1)
            t0 = time.perf_counter()
            with torch.no_grad():
                outs = engine.generate(prompts, params, use_tqdm=True)  # the Engine's progress bar
            seconds = time.perf_counter() - t0
            dt = seconds / sum(size for _, _, size, _ in jobs)
            logger.info("%s: %d samples in %.1fs (%s)", bench, sum(size for *_, size, _ in jobs), seconds, "engine, batched")
            for (p, c0, _, missing), o in zip(jobs, outs):
                for i in missing:
                    s = o.outputs[i - c0]
                    ans = final_answer(s.text, p.gold, lenient=cfg.extraction == "lenient")
                    row = {"benchmark": bench, "problem_id": p.id, "sample": i, "gold": p.gold, "answer": ans,
                           "correct": answers_equivalent(p.gold, ans), "extraction": cfg.extraction,
                           "num_tokens": len(s.token_ids),
                           "finish_reason": s.finish_reason, "gen_time_s": dt, "text": s.text}
                    if verifier is not None:
                        row["verifier_score"] = verifier.score(p.problem, s.text)
                    out.write(json.dumps(row) + "\n")
            out.flush()
    rows = read_samples(path)
    summaries = {b: summarize([r for r in rows if r["benchmark"] == b], cfg.n) for b in cfg.benchmarks}
    (cfg.out / "summary.json").write_text(json.dumps({"config": _jsonable(cfg), "extraction": cfg.extraction,
                                                      "benchmarks": summaries}, indent=2))
    return summaries
