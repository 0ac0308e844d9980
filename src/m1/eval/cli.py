"""`m1 eval`, `m1 regrade` and `m1 scaling`: their arguments, checked before any model loads, and the calls into
the loop (`m1.eval.loop`, or `m1.eval.parallel` over several processes), the report and the
scaling curves (`m1.eval.report`, `m1.eval.scaling`)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from m1.errors import field_error, remove_if_left_empty, require_model_dir, require_path
from m1.eval.benchmarks import BENCHMARKS, DEFAULT_TEMPLATE, PromptConfig, load_benchmark

logger = logging.getLogger(__name__)

MAX_BATCH_SIZE = 256  # the engine's slots unless --max-batch-size says otherwise (each data-parallel worker's too)


def _common(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--benchmark", action="append", required=True,
                    help=f"benchmark name ({', '.join(BENCHMARKS)}) or a .jsonl path; repeat for several")
    # --num-samples: torchrun's parser takes a bare --n for an abbreviation of its own options
    ap.add_argument("--n", "--num-samples", dest="n", type=int, default=64, help="samples per problem")
    ap.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (0 = greedy)")
    ap.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold")
    ap.add_argument("--max-tokens", type=int, default=32768, help="generation limit per sample")
    ap.add_argument("--out", type=Path, required=True, help="output directory (samples.jsonl, summary.json, report.md)")
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="directory of local benchmark JSONL files (math500.jsonl, aime24.jsonl, ...) instead of the Hub")
    ap.add_argument("--limit", type=int, default=None, help="only the first N problems of each benchmark")
    ap.add_argument("--backend", choices=["hf", "engine"], default="engine",
                    help="generation backend: m1's Engine (engine, the default) or transformers generate (hf)")
    ap.add_argument("--seed", type=int, default=0, help="base seed; each (problem, chunk) derives its own")
    ap.add_argument("--chunk-size", type=int, default=16, help="samples of one problem generated as one batch")
    ap.add_argument("--prompt-template", default=DEFAULT_TEMPLATE, help="prompt with a {problem} placeholder")
    ap.add_argument("--no-chat-template", action="store_true", help="feed the prompt raw, without the chat template")
    ap.add_argument("--extraction", choices=["strict", "lenient"], default="strict",
                    help="strict: the last \\boxed{} (else #### or a closing 'the answer is ...'); lenient: also a number "
                         "that a closing statement states ('... is 9.', 'so x = 5') when the gold is a number, for "
                         "models that do not box")
    ap.add_argument("--max-batch-size", type=int, default=MAX_BATCH_SIZE,
                    help="engine backend: sequences decoded together (the engine's slots)")
    ap.add_argument("--requests-per-call", type=int, default=0,
                    help="chunks of samples handed to the generator at once; the engine batches them continuously and "
                         "their rows are written when the call ends. 0: one for hf, enough to fill the engine's slots "
                         "twice for engine (a chunk at a time leaves a GPU nearly idle)")
    ap.add_argument("--memory-budget-gb", type=float, default=None,
                    help="engine backend: GiB for its KV cache and state (default: 90%% of free GPU memory, 4 on a CPU)")
    ap.add_argument("--data-parallel", type=int, default=1,
                    help="worker processes, each with its own generator (one GPU each when there are enough, else CPU), sized "
                         "by the three options above; problems split by index mod N, results merged. Under torchrun, the world "
                         "size is used")


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def validate(args, models: list[str]) -> None:
    """Every argument, path and benchmark file checked before any model loads (one-line `UserError`s).

    The benchmarks are read here (local files parsed, hub datasets fetched), so a malformed
    line or an unreachable hub fails in a second, not after the model has loaded.
    """
    for name, value in (("--n", args.n), ("--max-tokens", args.max_tokens), ("--chunk-size", args.chunk_size),
                        ("--data-parallel", args.data_parallel), ("--max-batch-size", args.max_batch_size)):
        if value < 1:
            raise field_error(name, f"must be at least 1, got {value}")
    if args.requests_per_call < 0:
        raise field_error("--requests-per-call", f"must be 0 (automatic) or more, got {args.requests_per_call}")
    if args.memory_budget_gb is not None and args.memory_budget_gb <= 0:
        raise field_error("--memory-budget-gb", f"must be positive, got {args.memory_budget_gb}")
    if args.limit is not None and args.limit < 1:
        raise field_error("--limit", f"must be at least 1, got {args.limit}")
    if args.temperature < 0:
        raise field_error("--temperature", f"must be >= 0, got {args.temperature}")
    if not 0 < args.top_p <= 1:
        raise field_error("--top-p", f"must be in (0, 1], got {args.top_p}")
    if "{problem}" not in args.prompt_template:
        raise field_error("--prompt-template", "must contain {problem}")
    verifier = getattr(args, "verifier", None)
    if verifier:
        if verifier[:3] in ("rm:", "lm:"):
            require_model_dir(verifier[3:], f"--verifier {verifier[:3]}PATH", hub_ok=True)
        elif verifier != "self":
            raise field_error("--verifier", f"unknown verifier {verifier!r}; use lm:PATH, rm:PATH or self")
    for m in models:
        require_model_dir(m, "--model", hub_ok=True, gguf_ok=True)
    if args.data_dir is not None:
        require_path(args.data_dir, "directory", "--data-dir")
    for b in args.benchmark:
        load_benchmark(b, data_dir=args.data_dir, limit=args.limit)


def _config(args, model: str, out: Path):
    from m1.eval.loop import EvalConfig, eval_sampling

    return EvalConfig(model=model, benchmarks=args.benchmark, out=out, n=args.n,
                      sampling=eval_sampling(args.temperature, args.top_p, args.max_tokens),
                      data_dir=args.data_dir, limit=args.limit, seed=args.seed, chunk_size=args.chunk_size,
                      prompt=PromptConfig(template=args.prompt_template, chat_template=not args.no_chat_template),
                      verifier=getattr(args, "verifier", None), extraction=args.extraction)


def requests_per_call(args) -> int:
    """Chunks per generator call: as given, else 1 for hf and, for the engine, enough chunks to fill
    its slots twice (so a call's tail, the longest completions, overlaps other chunks' work)."""
    if args.requests_per_call:
        return args.requests_per_call
    if args.backend == "hf":
        return 1
    return max(1, -(-2 * args.max_batch_size // min(args.chunk_size, args.n)))


def generator_kwargs(args) -> dict:
    """`load_generator`'s sizes from the options: the same for one process and for each data-parallel worker."""
    return dict(max_batch_size=args.max_batch_size, requests_per_call=requests_per_call(args), memory_budget_gb=args.memory_budget_gb)


def _generator(args, model: str):
    from m1.eval.generation import load_generator

    return load_generator(args.backend, model, **generator_kwargs(args))


def eval_main(argv: list[str] | None = None) -> int:
    """pass@k, maj@k and verify@k of one model on math benchmarks."""
    ap = _parser("m1 eval", "Evaluate a model on math benchmarks: pass@k, maj@k, verify@k.")
    ap.add_argument("--model", required=True, help="model directory (HF layout), hub id or .gguf file")
    ap.add_argument("--verifier", default=None,
                    help="verify@k scorer: lm:PATH (a causal LM's least likely completion token), rm:PATH (sequence-classification "
                         "reward model) or self (policy self-verification)")
    _common(ap)
    args = ap.parse_args(argv)
    validate(args, [args.model])
    with remove_if_left_empty(args.out):
        return _eval(args)


def _eval(args) -> int:
    from m1.eval.loop import run_eval
    from m1.eval.parallel import dist_env, run_parallel
    from m1.eval.report import write_report
    from m1.eval.verifiers import load_verifier

    if args.data_parallel > 1 or dist_env() is not None:
        summaries = run_parallel(_config(args, args.model, args.out), args.backend, args.data_parallel, generator_kwargs(args))
        if summaries is None:  # a torchrun rank other than 0: rank 0 merges and reports
            return 0
    else:
        gen, tok = _generator(args, args.model)
        cfg = _config(args, args.model, args.out)
        verifier = load_verifier(args.verifier, getattr(gen, "model", None), tok, cfg.prompt)
        summaries = run_eval(cfg, gen, tok, verifier)
    report = write_report(summaries, args.out, f"m1 eval: {args.model} ({args.backend} backend)")
    for b, s in summaries.items():
        if s.get("problems"):
            logger.info("%s: pass@1 %.3f (95%% CI %.3f-%.3f) over %d problems", b, s["pass@1"]["mean"], *s["pass@1"]["ci95"], s["problems"])
    logger.info("wrote %s", report)
    return 0


def regrade_main(argv: list[str] | None = None) -> int:
    """Grade finished `m1 eval` runs again with this version's grader (`m1.eval.regrade`)."""
    ap = _parser("m1 regrade", "Grade the samples of finished m1 eval runs again, without generating: answers, verdicts, "
                               "summary.json and report.md are rebuilt in place.")
    ap.add_argument("runs", nargs="+", type=Path, help="--out directories of m1 eval runs")
    ap.add_argument("--extraction", choices=["strict", "lenient"], default=None,
                    help="read the answers with this extraction mode (default: each run's own); a mode other than the "
                         "run's needs --out, so the first reading stays")
    ap.add_argument("--out", type=Path, default=None, help="write to this directory instead of in place (one run only)")
    args = ap.parse_args(argv)
    if args.out is not None and len(args.runs) > 1:
        raise field_error("--out", "takes one run; regrade several runs in place, or one at a time with --out")
    from m1.eval.regrade import regrade_run

    for run in args.runs:
        for b, s in regrade_run(run, args.out, args.extraction).items():
            if s.get("problems"):
                logger.info("%s %s: pass@1 %.3f (95%% CI %.3f-%.3f) over %d problems", args.out or run, b, s["pass@1"]["mean"],
                            *s["pass@1"]["ci95"], s["problems"])
    return 0


def scaling_main(argv: list[str] | None = None) -> int:
    """Compare models on the same problems: accuracy vs samples and vs wall-clock budget."""
    ap = _parser("m1 scaling", "Accuracy against samples and against wall-clock budget, per model.")
    ap.add_argument("--model", action="append", required=True, help="model directory; repeat to compare models")
    _common(ap)
    args = ap.parse_args(argv)
    validate(args, args.model)
    with remove_if_left_empty(args.out):
        return _scaling(args)


def _scaling(args) -> int:
    from m1.eval.loop import run_eval
    from m1.eval.parallel import dist_env, run_parallel
    from m1.eval.report import write_report
    from m1.eval.samples import read_samples
    from m1.eval.scaling import accuracy_by_k, budget_curve, plot_scaling, time_grid

    args.out.mkdir(parents=True, exist_ok=True)
    parallel = args.data_parallel > 1 or dist_env() is not None
    results: dict[str, dict] = {}
    for i, model in enumerate(args.model):
        name = f"{i}_{Path(model).name}"
        if parallel:
            summaries = run_parallel(_config(args, model, args.out / name), args.backend, args.data_parallel, generator_kwargs(args))
            if summaries is None:  # a torchrun rank other than 0: it only generates
                continue
        else:
            gen, tok = _generator(args, model)
            summaries = run_eval(_config(args, model, args.out / name), gen, tok)
        write_report(summaries, args.out / name, f"m1 eval: {model}")
        results[name] = {"summaries": summaries, "rows": read_samples(args.out / name / "samples.jsonl")}
    if parallel and not results:
        return 0
    lines = ["# m1 scaling", ""]
    scaling_json = {}
    for bench in args.benchmark:
        sps = {name: r["summaries"][bench]["samples_per_s"] for name, r in results.items()}
        grid = time_grid([(s, args.n) for s in sps.values()])
        curves = {}
        for name, r in results.items():
            rows = [x for x in r["rows"] if x["benchmark"] == bench]
            curves[name] = {"by_k": accuracy_by_k(rows, args.n),
                            "by_time": budget_curve(rows, args.n, sps[name], grid)}
        stem = Path(bench).stem
        plot_scaling(curves, args.out / f"scaling_{stem}.png", bench)
        scaling_json[bench] = {name: {"samples_per_s": sps[name], **c} for name, c in curves.items()}
        lines += [f"## {bench}", "", f"![scaling](scaling_{stem}.png)", "", "| model | samples/s | pass@1 | maj@n |", "|---|---|---|---|"]
        for name, c in curves.items():
            lines.append(f"| {name} | {sps[name]:.2f} | {c['by_k'][0][1]:.3f} | {c['by_k'][-1][2]:.3f} |")
        lines.append("")
    (args.out / "scaling.json").write_text(json.dumps(scaling_json, indent=2))
    (args.out / "report.md").write_text("\n".join(lines))
    logger.info("wrote %s", args.out / "report.md")
    return 0
