"""`m1 demo`: every stage end to end on the synthetic task, on a CPU, in minutes.

The demo is a list of stages. Each stage reads what earlier stages left on disk, writes its
own directory under ``--out`` and, last of all, a ``DONE.json`` marker holding its results.
A rerun skips every stage whose marker exists (unless ``--force``), so a killed run resumes
at the stage it was in, and the summary is rebuilt from the markers. Later issues add
stages (distill, SFT, GRPO, evaluation, speed) by appending to ``STAGES``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MARKER = "DONE.json"


@dataclass
class DemoConfig:
    """Sizes of everything the demo builds; ``quick`` shrinks them for CI."""

    out: Path
    quick: bool = False
    seed: int = 0
    force: bool = False
    threads: int = 2
    n_train: int = 20_000  # per difficulty
    n_test_easy: int = 1_000
    n_test_hard: int = 1_000
    n_eval_easy: int = 1_000  # easy test problems scored greedily per model
    n_eval_hard: int = 1_000  # hard test problems scored greedily for the teacher
    eval_batch_size: int = 128
    attention_fraction: float = 0.25  # share of layers kept as attention in the hybrid
    teacher: Any = None  # m1.tasks.teacher.TeacherConfig, built lazily to keep --help fast
    n_kl_texts: int = 32  # held-out sequences for KL(teacher || hybrid) at init
    # Later stages' sizes (full mode); `make(quick=True)` shrinks them.
    distill: dict = field(default_factory=lambda: dict(steps=100, batch=16, lr=1e-3, warmup=10, n_easy=2000, n_hard=500))
    sft: dict = field(default_factory=lambda: dict(steps=100, batch=4, max_length=1024, lr=1e-3, warmup=10, n_easy=500, n_hard=4000))
    grpo: dict = field(default_factory=lambda: dict(steps=20, generations=8, generation_batch=64, mini_batch=32, lr=2e-5,
                                                    temperature=1.0, max_tokens=256, n_prompts=2000))
    verifier: dict = field(default_factory=lambda: dict(n_prompts=200, samples=4, temperature=1.0, steps=60, batch=32, lr=3e-4))
    eval: dict = field(default_factory=lambda: dict(
        n_easy=200, n_easy_samples=4, n_hard=1000, n_hard_samples=dict(teacher=1, hybrid_init=1, distill=1, sft=2, grpo=2),
        scaling_problems=100, scaling_n=8, temperature=0.7, max_tokens_easy=64, max_tokens_hard=256))
    speed: dict = field(default_factory=lambda: dict(batch=32, lengths=[32, 64, 128, 256, 384]))

    @classmethod
    def make(cls, out: Path, quick: bool, seed: int, force: bool, threads: int) -> "DemoConfig":
        from m1.tasks.teacher import TeacherConfig

        if quick:
            return cls(
                out=out, quick=True, seed=seed, force=force, threads=threads,
                n_train=2_000, n_test_easy=200, n_test_hard=1_000, n_eval_easy=64, n_eval_hard=0,
                teacher=TeacherConfig(steps=40, batch_size=16, seed=seed), n_kl_texts=8,
                distill=dict(steps=3, batch=4, lr=1e-3, warmup=0, n_easy=32, n_hard=8),
                sft=dict(steps=3, batch=2, max_length=512, lr=1e-3, warmup=0, n_easy=8, n_hard=32),
                grpo=dict(steps=2, generations=4, generation_batch=8, mini_batch=8, lr=1e-5, temperature=1.0, max_tokens=48, n_prompts=16),
                verifier=dict(n_prompts=8, samples=2, temperature=1.0, steps=3, batch=8, lr=3e-4),
                eval=dict(n_easy=32, n_easy_samples=2, n_hard=64, n_hard_samples=dict(teacher=1, hybrid_init=1, distill=1, sft=1, grpo=1),
                          scaling_problems=16, scaling_n=4, temperature=0.7, max_tokens_easy=48, max_tokens_hard=64),
                speed=dict(batch=4, lengths=[16, 32, 64]),
            )
        return cls(out=out, seed=seed, force=force, threads=threads, teacher=TeacherConfig(seed=seed))


@dataclass
class Context:
    """What stages share: the config and the results of the stages run or skipped so far."""

    cfg: DemoConfig
    results: dict[str, dict] = field(default_factory=dict)

    def path(self, *parts: str) -> Path:
        return self.cfg.out.joinpath(*parts)


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[Context, Path], dict]  # (context, the stage's directory) -> results
    title: str


# ---------------------------------------------------------------- stages


def stage_data(ctx: Context, out: Path) -> dict:
    """Train splits (messages format) and test splits (prompt format) for both difficulties."""
    from m1.tasks import make_split, messages_record, prompt_record, write_jsonl

    cfg = ctx.cfg
    counts = {}
    for difficulty in ("easy", "hard"):
        train = make_split(difficulty, cfg.n_train, seed=cfg.seed, split="train")
        n_test = cfg.n_test_easy if difficulty == "easy" else cfg.n_test_hard
        test = make_split(difficulty, n_test, seed=cfg.seed, split="test")
        counts[f"train_{difficulty}"] = write_jsonl(out / f"train_{difficulty}.jsonl", map(messages_record, train))
        counts[f"test_{difficulty}"] = write_jsonl(out / f"test_{difficulty}.jsonl", map(prompt_record, test))
    return {"counts": counts}


def stage_tokenizer(ctx: Context, out: Path) -> dict:
    """BPE on the training prompts and solutions (digits stay single tokens)."""
    from m1.tasks import read_problems
    from m1.tasks.tokenizer import train_tokenizer

    problems = [p for d in ("easy", "hard") for p in read_problems(ctx.path("data", f"train_{d}.jsonl"))]
    tok = train_tokenizer([p.prompt for p in problems] + [p.solution for p in problems])
    tok.save_pretrained(str(out))
    lengths = {
        d: sum(len(tok(p.solution)["input_ids"]) for p in ps) / len(ps)
        for d in ("easy", "hard")
        if (ps := read_problems(ctx.path("data", f"train_{d}.jsonl"))[:2000])
    }
    return {
        "vocab_size": len(tok),
        "mean_solution_tokens": lengths,
        "hard_to_easy_token_ratio": lengths["hard"] / lengths["easy"],
    }


def stage_teacher(ctx: Context, out: Path) -> dict:
    """Pretrain the tiny GQA Llama teacher from scratch on both difficulties."""
    from transformers import AutoTokenizer

    from m1.tasks import read_problems
    from m1.tasks.teacher import build_teacher, train_teacher

    tok = AutoTokenizer.from_pretrained(str(ctx.path("tokenizer")))
    train = {d: read_problems(ctx.path("data", f"train_{d}.jsonl")) for d in ("easy", "hard")}
    model = build_teacher(ctx.cfg.teacher, tok)
    train_log = train_teacher(model, tok, train, ctx.cfg.teacher)
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    (out / "train_log.json").write_text(json.dumps(asdict(train_log)))
    return {
        "params": train_log.num_params,
        "train_seconds": round(train_log.seconds, 1),
        "train_cpu_seconds": round(train_log.cpu_seconds, 1),
        "final_loss": train_log.losses[-1][1],
        "config": asdict(ctx.cfg.teacher),
    }


def attention_layer_indices(num_layers: int, fraction: float) -> list[int]:
    """Evenly spaced attention layers ending at the last one, like M1's 3, 8, ..., 27 of 28."""
    k = max(1, round(num_layers * fraction))
    return sorted({(i + 1) * num_layers // k - 1 for i in range(k)})


def stage_convert(ctx: Context, out: Path) -> dict:
    """Attention-initialised hybrid: one Mamba-2 head per attention head, state = head dim."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    from m1.convert import convert_from_transformer

    teacher = LlamaForCausalLM.from_pretrained(str(ctx.path("teacher")))
    c = teacher.config
    head_dim = c.hidden_size // c.num_attention_heads
    layers = attention_layer_indices(c.num_hidden_layers, ctx.cfg.attention_fraction)
    hybrid = convert_from_transformer(
        teacher,
        attention_layers=layers,
        mamba_heads=c.num_attention_heads,
        mamba_head_dim=head_dim,
        mamba_groups=c.num_attention_heads,
        state_size=head_dim,
    )
    hybrid.save_pretrained(str(out), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(ctx.path("teacher"))).save_pretrained(str(out))
    return {
        "attention_layers": layers,
        "num_layers": c.num_hidden_layers,
        "params": sum(p.numel() for p in hybrid.parameters()),
        "mamba_shape": {"heads": c.num_attention_heads, "head_dim": head_dim, "groups": c.num_attention_heads, "state_size": head_dim},
    }


def stage_eval_init(ctx: Context, out: Path) -> dict:
    """Greedy accuracy of the teacher and of the hybrid at conversion."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    from m1.eval import extract_answer
    from m1.modeling import HybridForCausalLM
    from m1.tasks import read_problems
    from m1.tasks.greedy import greedy_accuracy

    def grade(completion: str, answer: str) -> bool:
        # Answers are integers, so the extracted answer either matches or not. (m1.eval.grade
        # gives the same verdicts but sends unparseable garbage, common from untrained
        # models, to math-verify under a time limit, which is slow on a busy CPU.)
        return extract_answer(completion) == answer

    cfg = ctx.cfg
    tok = AutoTokenizer.from_pretrained(str(ctx.path("teacher")))
    easy = read_problems(ctx.path("data", "test_easy.jsonl"))[: cfg.n_eval_easy]
    hard = read_problems(ctx.path("data", "test_hard.jsonl"))[: cfg.n_eval_hard]
    models = {
        "teacher": (lambda: LlamaForCausalLM.from_pretrained(str(ctx.path("teacher"))), {"easy": easy, "hard": hard}),
        "hybrid_init": (lambda: HybridForCausalLM.from_pretrained(str(ctx.path("convert"))), {"easy": easy}),
    }
    results: dict[str, dict] = {}
    for name, (load, sets) in models.items():
        model = load()
        for difficulty, problems in sets.items():
            if not problems:
                continue
            max_new = 48 if difficulty == "easy" else 192
            t0 = time.perf_counter()
            r = greedy_accuracy(model, tok, problems, grade, batch_size=cfg.eval_batch_size, max_new_tokens=max_new, desc=f"{name}/{difficulty}")
            seconds = time.perf_counter() - t0
            results.setdefault(name, {})[difficulty] = {"accuracy": r.accuracy, "correct": r.correct, "n": r.total, "seconds": round(seconds, 1)}
            samples = [{"prompt": p.prompt, "completion": c, "answer": p.answer} for p, c in zip(problems[:20], r.completions)]
            (out / f"{name}_{difficulty}_samples.json").write_text(json.dumps(samples, indent=1))
            log.info("%s %s greedy accuracy %.3f (%d/%d) in %.1fs", name, difficulty, r.accuracy, r.correct, r.total, seconds)
    return results


from m1 import demo_stages as _ds  # noqa: E402

STAGES: list[Stage] = [
    Stage("data", stage_data, "task data"),
    Stage("tokenizer", stage_tokenizer, "tokenizer"),
    Stage("teacher", stage_teacher, "teacher pretraining"),
    Stage("convert", stage_convert, "conversion to hybrid"),
    Stage("eval_init", stage_eval_init, "greedy accuracy at conversion"),
    Stage("init_kl", _ds.stage_init_kl, "KL(teacher||hybrid) at init: attention vs random init, 3 seeds"),
    Stage("distill", _ds.stage_distill, "m1 distill (reverse KL) on task text"),
    Stage("sft", _ds.stage_sft, "m1 sft on the hard split's solutions"),
    Stage("grpo", _ds.stage_grpo, "m1 grpo on hard prompts (Engine rollouts, grader reward)"),
    Stage("verifier", _ds.stage_verifier, "reward-model verifier on the SFT hybrid's own graded samples"),
    Stage("eval", _ds.stage_eval, "sampled evaluation of every stage (Engine)"),
    Stage("speed", _ds.stage_speed, "Engine throughput, teacher vs hybrid, by generation length"),
]


# ---------------------------------------------------------------- running


def run_stage(ctx: Context, stage: Stage, force: bool) -> bool:
    """Run one stage unless its marker says it finished with the same settings; returns
    whether it ran. The marker is written last, so a killed stage has none and reruns."""
    out = ctx.path(stage.name)
    marker = out / MARKER
    settings = {"quick": ctx.cfg.quick, "seed": ctx.cfg.seed}
    if marker.exists() and not force:
        done = json.loads(marker.read_text())
        if done.get("settings") == settings:
            ctx.results[stage.name] = done
            print(f"[{stage.name}] done earlier, skipped ({marker})", flush=True)
            return False
        log.info("%s was built with %s, now %s: rebuilding", stage.name, done.get("settings"), settings)
    if out.exists():
        shutil.rmtree(out)  # a partial stage from a killed run, or stale settings
    out.mkdir(parents=True)
    print(f"[{stage.name}] {stage.title} ...", flush=True)
    t0 = time.perf_counter()
    result = stage.run(ctx, out)
    result["stage_seconds"] = round(time.perf_counter() - t0, 1)
    result["settings"] = settings
    marker.write_text(json.dumps(result, indent=1))
    ctx.results[stage.name] = result
    print(f"[{stage.name}] done in {result['stage_seconds']:.1f}s", flush=True)
    return True


def summarize(ctx: Context) -> dict:
    r = ctx.results
    summary: dict[str, Any] = {
        "mode": "quick" if ctx.cfg.quick else "full",
        "seed": ctx.cfg.seed,
        "threads": ctx.cfg.threads,
        "stages": {name: res for name, res in r.items()},
        "stage_seconds": {name: res.get("stage_seconds") for name, res in r.items()},
    }
    ev = r.get("eval_init", {})
    summary["accuracy"] = {
        f"{model}/{difficulty}": v["accuracy"] for model, by_d in ev.items() if isinstance(by_d, dict) for difficulty, v in by_d.items() if isinstance(v, dict)
    }
    if "teacher" in ev:
        acc = ev["teacher"]["easy"]["accuracy"]
        summary["targets"] = {"teacher_easy_greedy_ge_0.90": {"value": acc, "met": acc >= 0.90, "applies": not ctx.cfg.quick}}
    _ds.extend_summary(ctx, summary)
    return summary


def write_report(summary: dict, path: Path) -> None:
    lines = [f"# m1 demo ({summary['mode']} mode, seed {summary['seed']}, {summary['threads']} threads)", ""]
    tok = summary["stages"].get("tokenizer", {})
    if tok:
        ratio = tok["hard_to_easy_token_ratio"]
        lines += [f"Task: chained small-number arithmetic. Tokenizer vocab {tok['vocab_size']}; hard solutions are {ratio:.1f}x as long as easy ones.", ""]
    teacher = summary["stages"].get("teacher", {})
    if teacher:
        lines += [f"Teacher: Llama, {teacher['params']:,} parameters, trained {teacher['config']['steps']} steps in {teacher['train_seconds']}s wall, {teacher.get('train_cpu_seconds', '?')}s CPU (last logged loss {teacher['final_loss']:.3f}).", ""]
    conv = summary["stages"].get("convert", {})
    if conv:
        lines += [f"Hybrid: attention kept at layers {conv['attention_layers']} of {conv['num_layers']}, Mamba-2 {conv['mamba_shape']}.", ""]
    lines += ["## Greedy accuracy", "", "| model | set | accuracy | correct / n |", "| --- | --- | --- | --- |"]
    for model, by_d in summary["stages"].get("eval_init", {}).items():
        if not isinstance(by_d, dict):
            continue
        for difficulty, v in by_d.items():
            if isinstance(v, dict):
                lines.append(f"| {model} | {difficulty} test | {v['accuracy']:.1%} | {v['correct']} / {v['n']} |")
    lines += [""] + _ds.report_lines(summary)
    lines += ["## Targets", "", "| target | value | met |", "| --- | --- | --- |"]
    for name, t in summary.get("targets", {}).items():
        met = ("met" if t["met"] else "**MISSED**") if t["applies"] else f"n/a in {summary['mode']} mode ({'met' if t['met'] else 'not met'})"
        lines.append(f"| {name} | {t['value']:.3f} | {met} |")
    lines += ["", "## Stage times", "", "| stage | seconds |", "| --- | --- |"]
    lines += [f"| {name} | {sec} |" for name, sec in summary["stage_seconds"].items()]
    path.write_text("\n".join(lines) + "\n")


def run_demo(cfg: DemoConfig) -> dict:
    import torch

    torch.set_num_threads(cfg.threads)
    cfg.out.mkdir(parents=True, exist_ok=True)
    ctx = Context(cfg)
    t0 = time.perf_counter()
    ran = False
    for stage in STAGES:
        # Once a stage has run, everything after it is stale and runs too.
        ran = run_stage(ctx, stage, force=cfg.force or ran) or ran
    summary = summarize(ctx)
    summary["total_seconds"] = round(time.perf_counter() - t0, 1)
    (cfg.out / "summary.json").write_text(json.dumps(summary, indent=1))
    write_report(summary, cfg.out / "report.md")
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="m1 demo",
        description="Run every m1 stage end to end on a tiny synthetic reasoning task, on CPU: task data, "
        "tokenizer, teacher pretraining, conversion to a hybrid, greedy accuracy. Finished stages are skipped on rerun.",
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output directory (default: runs/demo)")
    p.add_argument("--quick", action="store_true", help="tiny sizes for CI: a minute or so, no accuracy targets")
    p.add_argument("--seed", type=int, default=0, help="seed for data and training (default: 0)")
    p.add_argument("--force", action="store_true", help="rerun stages even if they finished earlier")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch CPU threads (default: all cores)")
    return p


def cli_main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    cfg = DemoConfig.make(out=args.out, quick=args.quick, seed=args.seed, force=args.force, threads=args.threads)
    summary = run_demo(cfg)
    print(f"demo finished in {summary['total_seconds']:.0f}s", flush=True)
    print(f"summary: {cfg.out / 'summary.json'}", flush=True)
    print(f"report:  {cfg.out / 'report.md'}", flush=True)
    return 0
