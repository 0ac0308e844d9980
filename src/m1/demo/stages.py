"""The demo's stages. Each reads what earlier stages left on disk, writes its own directory
and returns the results its ``DONE.json`` marker records.

A stage is a few calls into the package: `m1.tasks` (data, tokenizer, teacher), `m1.convert`,
`m1.train` (distill, SFT, GRPO), `m1.eval` (every accuracy, through
`m1.eval.loop.run_engine_eval`, the batched-Engine form of the loop `m1 eval` runs, graded by
`m1.eval`'s grader). No stage samples, grades or trains by itself.

The teacher-trained baseline (M1's comparison: a transformer trained the same way) is the
teacher converted with every layer kept as attention (its own weights: the same logits),
put through the same SFT and GRPO recipes as the hybrid.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from m1.demo.config import BASELINE, HYBRID, MODELS, Context, DemoConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[Context, Path], dict]  # (context, the stage's directory) -> results
    title: str
    # Consecutive stages of one group are independent of each other (the hybrid's and the
    # teacher-trained baseline's SFT, say) and run side by side, one single-thread process
    # each, when the demo has at least two threads: these tiny models train and decode
    # about as fast on one thread as on two, so the pair costs the time of one.
    group: str | None = None


# ---------------------------------------------------------------- data, tokenizer, teacher, conversion


def stage_data(ctx: Context, out: Path) -> dict:
    """The ladder's splits: pretraining chains (the teacher's and distillation's text), train
    splits (messages format) and test splits (prompt format) of both difficulties, and each
    test split's constant-answer baseline (the most frequent gold answer's share)."""
    from m1.eval.metrics import constant_answer_baseline
    from m1.tasks import make_split, messages_record, prompt_record, write_jsonl

    d, task = ctx.cfg.data, ctx.cfg.task
    counts, baseline = {}, {}
    pretrain = make_split(task.pretrain, d.n_pretrain, seed=ctx.cfg.seed, split="train")
    counts["pretrain"] = write_jsonl(out / "pretrain.jsonl", map(messages_record, pretrain))
    for difficulty, level in (("easy", task.easy), ("hard", task.hard)):
        train = make_split(level, d.n_train, seed=ctx.cfg.seed, split="train")
        test = make_split(level, d.n_test_easy if difficulty == "easy" else d.n_test_hard, seed=ctx.cfg.seed, split="test")
        counts[f"train_{difficulty}"] = write_jsonl(out / f"train_{difficulty}.jsonl", map(messages_record, train))
        counts[f"test_{difficulty}"] = write_jsonl(out / f"test_{difficulty}.jsonl", map(prompt_record, test))
        answer, acc = constant_answer_baseline([p.answer for p in test])
        baseline[difficulty] = {"answer": answer, "accuracy": acc, "n": len(test)}
    levels = {name: {"min_steps": lv.min_steps, "max_steps": lv.max_steps}
              for name, lv in (("pretrain", task.pretrain), ("easy", task.easy), ("hard", task.hard))}
    return {"counts": counts, "constant_baseline": baseline, "levels": levels}


def stage_tokenizer(ctx: Context, out: Path) -> dict:
    """BPE on the training prompts and solutions (digits stay single tokens)."""
    from m1.tasks import read_problems
    from m1.tasks.tokenizer import train_tokenizer

    problems = {d: read_problems(ctx.path("data", f"train_{d}.jsonl")) for d in ("easy", "hard")}
    pre = read_problems(ctx.path("data", "pretrain.jsonl"))
    texts = [p.prompt for ps in [*problems.values(), pre] for p in ps] + [p.solution for ps in [*problems.values(), pre] for p in ps]
    tok = train_tokenizer(texts)
    tok.save_pretrained(str(out))
    lengths = {d: sum(len(tok(p.solution)["input_ids"]) for p in ps[:2000]) / len(ps[:2000]) for d, ps in problems.items()}
    return {"vocab_size": len(tok), "mean_solution_tokens": lengths, "hard_to_easy_token_ratio": lengths["hard"] / lengths["easy"]}


def stage_teacher(ctx: Context, out: Path) -> dict:
    """Pretrain the tiny GQA Llama teacher from scratch on short chains only: easy chains and the
    ladder's longer pretraining chains (`TaskLadder.pretrain_fraction` of the batches)."""
    from transformers import AutoTokenizer

    from m1.tasks import read_problems
    from m1.tasks.teacher import build_teacher, train_teacher

    tok = AutoTokenizer.from_pretrained(str(ctx.path("tokenizer")))
    train = {"easy": read_problems(ctx.path("data", "train_easy.jsonl")), "hard": read_problems(ctx.path("data", "pretrain.jsonl"))}
    cfg = dataclasses.replace(ctx.cfg.teacher, hard_fraction=ctx.cfg.task.pretrain_fraction)
    model = build_teacher(cfg, tok)
    train_log = train_teacher(model, tok, train, cfg)
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    (out / "train_log.json").write_text(json.dumps(asdict(train_log)))
    return {"params": train_log.num_params, "train_seconds": round(train_log.seconds, 1),
            "train_cpu_seconds": round(train_log.cpu_seconds, 1), "first_loss": train_log.losses[0][1],
            "final_loss": train_log.losses[-1][1], "config": asdict(cfg)}


def attention_layer_indices(num_layers: int, fraction: float) -> list[int]:
    """Evenly spaced attention layers ending at the last one, like M1's 3, 8, ..., 27 of 28."""
    k = max(1, round(num_layers * fraction))
    return sorted({(i + 1) * num_layers // k - 1 for i in range(k)})


def m1_attention_layers(ctx: Context) -> list[int]:
    """M1's placement: evenly spaced by `DemoConfig.attention_fraction`, ending at the last layer."""
    from transformers import AutoConfig

    n = AutoConfig.from_pretrained(str(ctx.path("teacher"))).num_hidden_layers
    return attention_layer_indices(n, ctx.cfg.attention_fraction)


def _shape(c) -> dict:
    """One Mamba-2 head per attention head, state = head dim (the head-sized shape)."""
    head_dim = c.hidden_size // c.num_attention_heads
    return {"heads": c.num_attention_heads, "head_dim": head_dim, "groups": c.num_attention_heads, "state_size": head_dim}


def _calibration_ids(ctx: Context, tok):
    """Token rows of pretraining text (prompt + solution), packed, for the calibrated init."""
    from m1.convert.calibration_data import pack_rows
    from m1.tasks import read_problems
    from m1.tasks.encode import encode_example

    c = ctx.cfg.convert
    problems = read_problems(ctx.path("data", "pretrain.jsonl"))[-4 * c.calibration_sequences * c.calibration_seq_len // 64:]
    return pack_rows([encode_example(tok, p).input_ids for p in problems], c.calibration_seq_len, c.calibration_sequences)


def _calibration_config(ctx: Context):
    from m1.convert.calibrate import CalibrationConfig

    cc = ctx.cfg.convert
    # step-bounded fit: a generous time limit that the step cap always reaches first
    return CalibrationConfig(num_sequences=cc.calibration_sequences, seq_len=cc.calibration_seq_len, fit_max_steps=cc.fit_steps,
                             fit_seconds=1e9, fit_batch=cc.fit_batch, fit_lr=cc.fit_lr, seed=ctx.cfg.seed)


def _convert(ctx: Context, out: Path, layers: list[int] | None, init: str = "attention") -> dict:
    """`m1 convert`'s conversion (`m1.convert`) of the teacher; ``init`` as its ``--init``.
    ``layers=None`` keeps every layer as attention (the teacher in m1's layout)."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    from m1.convert.calibrate import convert_with_report

    teacher = LlamaForCausalLM.from_pretrained(str(ctx.path("teacher")))
    tok = AutoTokenizer.from_pretrained(str(ctx.path("teacher")))
    c = teacher.config
    layers = list(range(c.num_hidden_layers)) if layers is None else layers
    shape = _shape(c)
    kw = dict(calibration_ids=_calibration_ids(ctx, tok), calibration=_calibration_config(ctx)) if init == "calibrated" else {}
    hybrid, report = convert_with_report(teacher, layers, init=init, seed=ctx.cfg.seed, mamba_heads=shape["heads"],
                                         mamba_head_dim=shape["head_dim"], mamba_groups=shape["groups"],
                                         state_size=shape["state_size"], **kw)
    hybrid.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    r = {"attention_layers": layers, "num_layers": c.num_hidden_layers, "init": init,
         "params": sum(p.numel() for p in hybrid.parameters()), "mamba_shape": shape}
    if report is not None:
        r["calibration"] = {"tokens": report.tokens, "seconds": report.seconds,
                            "rel_mse": {lr.layer: {"copy": lr.rel_mse_copy, "closed_form": lr.rel_mse_closed_form, "fit": lr.rel_mse_fit}
                                        for lr in report.layers}}
    return r


def stage_convert(ctx: Context, out: Path) -> dict:
    """`m1 convert --attention-layers auto:K --init calibrated`: which layers stay attention is
    measured (`m1.convert.placement`: each layer restored alone as attention in an all-Mamba,
    calibrated student, ranked by KL to the teacher), then the hybrid is calibrated on
    pretraining text. `DemoConfig.attention_layers` fixes the layers instead."""
    placement = None
    layers = list(ctx.cfg.attention_layers) if ctx.cfg.attention_layers is not None else None
    if layers is None:
        from transformers import AutoTokenizer, LlamaForCausalLM

        from m1.convert.placement import plot_ranking, rank_attention_layers

        teacher = LlamaForCausalLM.from_pretrained(str(ctx.path("teacher"))).eval()
        tok = AutoTokenizer.from_pretrained(str(ctx.path("teacher")))
        k = len(m1_attention_layers(ctx))
        shape = _shape(teacher.config)
        placement = rank_attention_layers(teacher, _calibration_ids(ctx, tok), k, _calibration_config(ctx),
                                          min_fit_tokens=0,  # the calibration's own fit steps: the ranking is clear after them
                                          mamba_heads=shape["heads"], mamba_head_dim=shape["head_dim"],
                                          mamba_groups=shape["groups"], state_size=shape["state_size"])
        plot_ranking(placement, out / "placement.png")
        layers = placement["chosen"]
        print(f"  placement: attention kept at layers {layers} (KL with each layer restored alone: "
              + ", ".join(f"{r['layer']}: {r['kl']:.2f}" for r in sorted(placement["ranking"], key=lambda r: r["layer"])) + ")", flush=True)
    r = _convert(ctx, out, sorted(layers), init=ctx.cfg.convert.init)
    if placement is not None:
        r["placement"] = placement
    r["m1_attention_layers"] = m1_attention_layers(ctx)
    return r


def stage_convert_teacher(ctx: Context, out: Path) -> dict:
    """The teacher in m1's checkpoint layout, every layer attention: its own weights, the class the
    Engine serves and the recipes train (the teacher-trained baseline starts here)."""
    import torch
    from transformers import LlamaForCausalLM

    from m1.modeling import HybridForCausalLM

    r = _convert(ctx, out, None)
    llama = LlamaForCausalLM.from_pretrained(str(ctx.path("teacher"))).eval()
    same = HybridForCausalLM.from_pretrained(str(out)).eval()
    ids = torch.arange(3, 40).unsqueeze(0) % llama.config.vocab_size
    with torch.no_grad():
        diff = (llama(ids).logits - same(ids).logits).abs().max().item()
    if diff > 1e-3:
        raise RuntimeError(f"the all-attention hybrid differs from the Llama teacher by {diff:.2e} in logits")
    r["max_logit_difference"] = diff
    return r


# ---------------------------------------------------------------- evaluation through m1.eval


def evaluate(ctx: Context, model_dir: Path, data: Path, out: Path, *, n: int, limit: int, temperature: float,
             max_tokens: int, verifier: str | None = None) -> dict:
    """`m1 eval`'s loop (batched Engine form) on one JSONL of problems: samples.jsonl + summary."""
    import torch

    from m1.eval.loop import EvalConfig, eval_sampling, run_engine_eval
    from m1.eval.verifiers import load_verifier
    from m1.modeling import HybridForCausalLM
    from transformers import AutoTokenizer

    bench = str(data)
    what = "greedy" if temperature == 0 else f"{n} sample{'s' * (n > 1)} each at T={temperature}"
    shown = model_dir.relative_to(ctx.cfg.out) if model_dir.is_relative_to(ctx.cfg.out) else model_dir
    print(f"  eval {out.parent.name}/{out.name}: {shown} on the first {limit} problems of "
          f"{data.name}, {what}", flush=True)
    cfg = EvalConfig(model=str(model_dir), benchmarks=[bench], out=out, n=n, limit=limit, seed=ctx.cfg.seed,
                     chunk_size=n, sampling=eval_sampling(temperature=temperature, max_tokens=max_tokens),
                     verifier=verifier)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = HybridForCausalLM.from_pretrained(str(model_dir)).eval()
    ver = load_verifier(verifier, prompt=cfg.prompt)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread decodes these tiny models faster than two on this CPU (measured)
    try:
        s = run_engine_eval(cfg, model, tok, verifier=ver, max_batch_size=ctx.cfg.eval.batch)[bench]
    finally:
        torch.set_num_threads(threads)
    print(f"  eval {out.parent.name}/{out.name}: "
          f"pass@1 {s['pass@1']['mean']:.3f} n={n} x {s['problems']} problems", flush=True)
    return s


def _test(ctx: Context, split: str) -> Path:
    return ctx.path("data", f"test_{split}.jsonl")


def stage_eval_init(ctx: Context, out: Path) -> dict:
    """Greedy accuracy (temperature 0) of the teacher and of the hybrid at conversion."""
    e = ctx.cfg.init_eval
    jobs = [("teacher", "hard", e.n_hard, 1, e.max_tokens_hard, "hard", 0.0),
            ("teacher", "easy", e.n_easy, 1, e.max_tokens_easy, "easy", 0.0),
            ("hybrid_init", "easy", e.n_easy, 1, e.max_tokens_easy, "easy", 0.0)]
    results, _ = run_eval_jobs(ctx, "eval_init", [j for j in jobs if j[2]])
    return {name: {split: _greedy_record(s) for split, s in sets.items()} for name, sets in results.items()}


def stage_init_kl(ctx: Context, out: Path) -> dict:
    """KL(teacher || hybrid) at conversion on held-out test text: the calibrated hybrid (what
    `convert` built), the plain attention copy (M1's init; deterministic, so one value) at the
    same layers and at M1's placement (where M1's recipe starts), and Mamba-2's random init
    over 3 seeds."""
    import statistics

    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from m1.convert import MambaInit
    from m1.convert.fidelity import conversion_kl, token_kl
    from m1.modeling import HybridForCausalLM
    from m1.tasks import read_problems
    from m1.tasks.encode import collate, encode_example

    tok = AutoTokenizer.from_pretrained(str(ctx.path("teacher")))
    teacher = LlamaForCausalLM.from_pretrained(str(ctx.path("teacher"))).eval()
    n = ctx.cfg.init_eval.n_kl_texts
    probs = read_problems(ctx.path("data", "test_easy.jsonl"))[: n // 2] + read_problems(ctx.path("data", "test_hard.jsonl"))[: n - n // 2]
    batch = collate([encode_example(tok, p) for p in probs], tok.pad_token_id)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    conv = ctx.results["convert"]
    shape = conv["mamba_shape"]
    kw = dict(mamba_heads=shape["heads"], mamba_head_dim=shape["head_dim"], mamba_groups=shape["groups"], state_size=shape["state_size"])
    with torch.no_grad():
        converted = token_kl(teacher, HybridForCausalLM.from_pretrained(str(ctx.path("convert"))).eval(), ids, mask)
        attention = conversion_kl(teacher, ids, mask, conv["attention_layers"], MambaInit(mode="attention"), 0, **kw)
        m1_start = conversion_kl(teacher, ids, mask, conv["m1_attention_layers"], MambaInit(mode="attention"), 0, **kw)
        random_kl = [conversion_kl(teacher, ids, mask, conv["attention_layers"], MambaInit(mode="random"), s, **kw) for s in (0, 1, 2)]
    return {"texts": len(probs), "tokens": int(mask.sum()), "converted_init": conv.get("init"), "kl_converted": converted,
            "kl_attention": attention, "kl_m1_start": m1_start, "m1_attention_layers": conv["m1_attention_layers"],
            "kl_random": random_kl, "kl_random_mean": statistics.mean(random_kl),
            "ratio_attention_to_random": attention / statistics.mean(random_kl),
            "ratio_converted_to_random": converted / statistics.mean(random_kl)}


# ---------------------------------------------------------------- training: m1.train's recipes with typed configs


def _mixed_conversations(ctx: Context, path: Path, n_easy: int, n_hard: int, hard_file: str = "train_hard.jsonl") -> int:
    """Interleave easy training conversations and those of ``hard_file`` (messages format) into one JSONL."""
    easy = ctx.path("data", "train_easy.jsonl").read_text().splitlines()[:n_easy]
    hard = ctx.path("data", hard_file).read_text().splitlines()[:n_hard]
    lines, i, j = [], 0, 0
    while i < len(easy) or j < len(hard):
        if j < len(hard) and (i >= len(easy) or j * len(easy) <= i * len(hard)):  # hard records spread among easy ones
            lines.append(hard[j])
            j += 1
        else:
            lines.append(easy[i])
            i += 1
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


def _run_fields(ctx: Context, out: Path) -> dict:
    return dict(out=str(out), seed=ctx.cfg.seed, num_threads=ctx.cfg.threads, report_to=[], save_total_limit=1,
                logging_steps=1 if ctx.cfg.quick else 5, bf16=False, gradient_checkpointing=False, gradient_accumulation_steps=1)


def _trained(out: Path, *keys: str) -> dict:
    """The run's logged curves (``<key>_curve``: (step, value) pairs from metrics.jsonl) and its final model."""
    from m1.train.runs import read_metrics

    metrics = read_metrics(out)
    return {**{f"{k}_curve": [(m["step"], m[k]) for m in metrics if k in m] for k in ("loss", *keys)}, "model": str(out / "final")}


def distill_config(ctx: Context, data: Path, out: Path, student: Path, m1_recipe: bool = False):
    """The demo's distillation as a typed `m1 distill` config: the staged recipe (align, then
    forward KL), or with ``m1_recipe`` M1's one stage of reverse KL, same steps and data."""
    from m1.train.config import DistillConfig

    c = ctx.cfg.distill
    staged = {} if m1_recipe else dict(stages=c.stages, align_fraction=c.align_fraction, align_learning_rate=c.align_lr)
    return DistillConfig(teacher=str(ctx.path("teacher")), student=str(student), data=str(data),
                         data_format="m1-messages", loss="reverse_kl" if m1_recipe else c.loss, max_steps=c.steps,
                         per_device_batch_size=c.batch, learning_rate=c.lr, warmup_steps=c.warmup, lr_scheduler="cosine",
                         max_length=c.max_length, save_steps=c.steps, **staged, **_run_fields(ctx, out))


def _distill(ctx: Context, out: Path, student: Path, m1_recipe: bool) -> dict:
    from m1.train import distill

    data = out / "data.jsonl"
    n, f = ctx.cfg.distill.n_texts, ctx.cfg.task.pretrain_fraction  # the teacher's own pretraining mix
    records = _mixed_conversations(ctx, data, n - round(n * f), round(n * f), hard_file="pretrain.jsonl")
    cfg = distill_config(ctx, data, out / "run", student, m1_recipe)
    t0 = time.perf_counter()
    distill.run(cfg)
    r = {"config": asdict(cfg), "records": records, "train_seconds": round(time.perf_counter() - t0, 1), **_trained(out / "run")}
    align = out / "run" / "align"
    if align.exists():
        r["align"] = _trained(align)
    return r


def stage_distill(ctx: Context, out: Path) -> dict:
    """`m1 distill --stages align,kl --loss forward_kl` (`m1.train.distill.run`) on pretraining text."""
    return _distill(ctx, out, ctx.path("convert"), m1_recipe=False)


def stage_distill_m1(ctx: Context, out: Path) -> dict:
    """M1's own recipe for comparison: M1's placement (evenly spaced, ending at the last layer),
    `m1 convert --init attention` (the plain Q/K/V/O copy), then `m1 distill` with one stage of
    reverse KL, same steps and text as the staged recipe.
    Skipped (and not reported) when `DistillSizes.m1_baseline` is off."""
    if not ctx.cfg.distill.m1_baseline:
        return {"skipped": True}
    conv = _convert(ctx, out / "init", m1_attention_layers(ctx), init="attention")
    return {**_distill(ctx, out, out / "init", m1_recipe=True), "convert": conv}


def sft_config(ctx: Context, model: Path, data: Path, out: Path):
    from m1.train.config import SFTConfig

    c = ctx.cfg.sft
    return SFTConfig(model=str(model), data=str(data), data_format="m1-messages", packing=True, max_steps=c.steps,
                     per_device_batch_size=c.batch, learning_rate=c.lr, warmup_steps=c.warmup, lr_scheduler="cosine",
                     max_length=c.max_length, save_steps=c.steps, **_run_fields(ctx, out))


def _sft(ctx: Context, out: Path, model: Path) -> dict:
    from m1.train import sft

    data = out / "data.jsonl"
    n = _mixed_conversations(ctx, data, ctx.cfg.sft.n_easy, ctx.cfg.sft.n_hard)
    cfg = sft_config(ctx, model, data, out / "run")
    t0 = time.perf_counter()
    sft.run(cfg)
    return {"config": asdict(cfg), "records": n, "train_seconds": round(time.perf_counter() - t0, 1), **_trained(out / "run")}


def stage_sft(ctx: Context, out: Path) -> dict:
    """`m1 sft` on the distilled hybrid: hard-split solutions (with some easy), packed, completion-only."""
    return _sft(ctx, out, ctx.path(*MODELS["distill"]))


def stage_teacher_sft(ctx: Context, out: Path) -> dict:
    """The same `m1 sft` on the teacher (all-attention layout): the teacher-trained baseline."""
    return _sft(ctx, out, ctx.path(*MODELS["teacher"]))


def grpo_config(model: str, prompts: str, out: str, c, seed: int, threads: int):
    """The demo's `m1 grpo` config: M1's recipe preset with the demo's sizes (also used by the slow GRPO test)."""
    from m1.train.config import GRPOConfig, from_dict
    from m1.train.grpo import RECIPES

    values = dict(model=model, prompts=prompts, data_format="m1-prompts", rollout_backend="engine", max_steps=c.steps,
                  num_generations=c.generations, generation_batch_size=c.generation_batch, mini_batch_size=c.mini_batch,
                  per_device_batch_size=c.mini_batch, learning_rate=c.lr, temperature=c.temperature,
                  max_completion_length=c.max_tokens, max_prompt_length=256, bf16=False, gradient_checkpointing=False,
                  save_steps=c.steps, out=out, seed=seed, num_threads=threads, report_to=[], save_total_limit=1,
                  logging_steps=1, recipe="m1", entropy_coef=c.entropy_coef, num_iterations=c.iterations)
    return from_dict(GRPOConfig, {**RECIPES["m1"], **values}, source="m1 demo")


def write_grpo_prompts(ctx: Context, path: Path, n: int) -> int:
    from m1.tasks import prompt_record, read_problems, write_jsonl

    return write_jsonl(path, map(prompt_record, read_problems(ctx.path("data", "train_hard.jsonl"))[-n:]))


def _grpo(ctx: Context, out: Path, model: Path) -> dict:
    from m1.train import grpo

    prompts = out / "prompts.jsonl"
    write_grpo_prompts(ctx, prompts, ctx.cfg.grpo.n_prompts)
    # one thread: the Engine rollouts dominate and decode faster single-threaded on this CPU
    cfg = grpo_config(str(model), str(prompts), str(out / "run"), ctx.cfg.grpo, ctx.cfg.seed, 1)
    t0 = time.perf_counter()
    grpo.run(cfg)
    r = _trained(out / "run", "reward")
    curve = r["reward_curve"]
    fifth = max(1, len(curve) // 5)
    return {"config": asdict(cfg), "train_seconds": round(time.perf_counter() - t0, 1), **r,
            "reward_first": _mean([x for _, x in curve[:fifth]]), "reward_last": _mean([x for _, x in curve[-fifth:]])}


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def stage_grpo(ctx: Context, out: Path) -> dict:
    """`m1 grpo` on the SFT hybrid: hard training prompts, Engine rollouts, reward = m1's grader."""
    return _grpo(ctx, out, ctx.path(*MODELS["sft"]))


def stage_teacher_grpo(ctx: Context, out: Path) -> dict:
    """The same `m1 grpo` on the SFT teacher: the teacher-trained baseline's final model."""
    return _grpo(ctx, out, ctx.path(*MODELS["teacher_sft"]))


def stage_verifier(ctx: Context, out: Path) -> dict:
    """The verifier: `m1.eval.verifiers.LikelihoodVerifier` on the SFT teacher-trained model, which
    scores a sample by the probability of its least likely token; it needs no training.

    Checked here before it is used: on held-out hard training problems (used by neither SFT nor
    GRPO), each reference solution beside a copy with one step's slip carried through
    (`m1.tasks.arithmetic.corrupt_solution`), how often the reference scores higher (chance 0.5).

    Measured before choosing it (100 hard problems x 16 samples of one final hybrid, k=8,
    verifier-weighted vote - maj@8): a reward model (`m1.train.reward_model`, the teacher with
    a one-logit head) on ~800 of the SFT hybrid's graded samples -0.010, with 1,600 reference /
    one-slip pairs added -0.003 [-0.015, 0.009]; this verifier +0.030 [0.002, 0.062]. The reward
    model learned which problems are hard, not which step is wrong.
    """
    from m1.eval.benchmarks import PromptConfig
    from m1.eval.verifiers import LikelihoodVerifier
    from m1.tasks import read_problems
    from m1.tasks.arithmetic import corrupt_solution
    import random

    v = ctx.cfg.verifier
    path = ctx.path(*MODELS[v.model])
    ver = LikelihoodVerifier.from_pretrained(str(path), PromptConfig())
    train = read_problems(ctx.path("data", "train_hard.jsonl"))
    pairs = train[len(train) // 4: len(train) // 4 + v.n_pairs]
    rng = random.Random(ctx.cfg.seed)
    t0 = time.perf_counter()
    good = [ver.score(p.question, p.solution) for p in pairs]
    bad = [ver.score(p.question, corrupt_solution(p, rng).solution) for p in pairs]
    wins = sum((g > b) + 0.5 * (g == b) for g, b in zip(good, bad))
    return {"kind": "likelihood (least likely token)", "model": str(path), "verifier_of": v.model, "pairs": len(pairs),
            "pairwise_accuracy": wins / max(1, len(pairs)), "mean_score_reference": _mean(good), "mean_score_slip": _mean(bad),
            "score_seconds": round(time.perf_counter() - t0, 1)}


def _eval_job(cfg: DemoConfig, stage: str, name: str, key: str, limit: int, n: int, max_tokens: int, split: str,
              temperature: float) -> tuple[str, str, dict]:
    """One (model, set) evaluation into STAGE/name/key; top level so a worker process can run it."""
    ctx = Context(cfg)
    out = ctx.path(stage, name, key)
    s = evaluate(ctx, ctx.path(*MODELS[name]), _test(ctx, split), out, n=n, limit=limit, temperature=temperature,
                 max_tokens=max_tokens, verifier=f"lm:{ctx.path(*MODELS[cfg.verifier.model])}" if (name, key) == (HYBRID, "hard_k") else None)
    return name, key, s


def run_eval_jobs(ctx: Context, stage: str, jobs: list[tuple]) -> tuple[dict[str, dict], int]:
    """Run (model, set, problems, samples, max tokens, split, temperature) jobs in ``threads``
    single-thread worker processes (one per core); returns {model: {set: summary}} in job order.
    Each job is seeded by itself, so results do not depend on which worker ran it or when."""
    import concurrent.futures
    import multiprocessing

    workers = max(1, min(ctx.cfg.threads, len(jobs)))
    done: dict[tuple[str, str], dict] = {}
    if workers == 1:
        for j in jobs:
            name, key, s = _eval_job(ctx.cfg, stage, *j)
            done[name, key] = s
    else:
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for name, key, s in pool.map(_eval_job, [ctx.cfg] * len(jobs), [stage] * len(jobs), *zip(*jobs)):
                done[name, key] = s
    results: dict[str, dict] = {}
    for name, key, *_ in jobs:
        results.setdefault(name, {})[key] = done[name, key]
    return results, workers


def _greedy_record(s: dict) -> dict:
    return {"accuracy": s["pass@1"]["mean"], "ci95": s["pass@1"]["ci95"], "correct": round(s["pass@1"]["mean"] * s["problems"]),
            "n": s["problems"]}


def eval_plan(ctx: Context) -> list[tuple[str, str, int, int, int, str, float]]:
    """The eval stage's jobs, (model, set, problems, samples, max tokens, split, temperature),
    longest first so the two workers finish together (see `EvalSizes`)."""
    e = ctx.cfg.eval
    t = e.temperature
    jobs = [(HYBRID, "hard_k", e.scaling_problems, e.scaling_n_hybrid, e.max_tokens_hard, "hard", t),
            (BASELINE, "hard_k", e.scaling_problems, e.scaling_n, e.max_tokens_hard, "hard", t)]
    jobs += [(name, "hard", e.n_hard, e.n_hard_samples if name in ("sft", "grpo") else 1, e.max_tokens_hard, "hard", t)
             for name in ("sft", "teacher_sft", "grpo", "teacher_grpo")]
    return jobs


def stage_eval_distill(ctx: Context, out: Path) -> dict:
    """Greedy easy accuracy of the distilled hybrids (both recipes), on the problems and token
    budget of the teacher's in ``eval_init``: distillation's target, known before SFT starts."""
    e = ctx.cfg.init_eval
    names = ["distill"] + (["distill_m1"] if ctx.cfg.distill.m1_baseline else [])
    results, _ = run_eval_jobs(ctx, "eval_distill", [(name, "easy", e.n_easy, 1, e.max_tokens_easy, "easy", 0.0) for name in names])
    return {name: {split: _greedy_record(s) for split, s in sets.items()} for name, sets in results.items()}


def stage_eval(ctx: Context, out: Path) -> dict:
    """The trained models through `m1.eval` (see `EvalSizes` for what each is asked).

    ``hard``: sampled pass@1 with its interval; ``hard_k``: many samples of the first hard
    problems, the final hybrid's scored by the verifier (pass@k, maj@k, verify@k, and the
    wall-clock budget curves). Jobs run in ``threads`` single-thread worker processes.
    """
    jobs = eval_plan(ctx)
    plan: dict[str, dict[str, int]] = {}
    for name, key, limit, n, *_ in jobs:
        plan.setdefault(name, {})[key] = n
    results, workers = run_eval_jobs(ctx, "eval", jobs)
    return {"models": results, "temperature": ctx.cfg.eval.temperature, "n": plan, "workers": workers}


def stage_speed(ctx: Context, out: Path) -> dict:
    """Engine decode throughput (generated tokens/s) of the teacher and the final hybrid at growing lengths."""
    import torch
    from transformers import AutoTokenizer

    from m1.engine import Engine, SamplingParams
    from m1.modeling import HybridForCausalLM
    from m1.tasks import read_problems
    from m1.tasks.encode import prompt_ids

    sp = ctx.cfg.speed
    tok = AutoTokenizer.from_pretrained(str(ctx.path("teacher")))
    prompts = [prompt_ids(tok, p) for p in read_problems(ctx.path("data", "test_hard.jsonl"))[: sp.batch]]
    rows: dict[str, list[dict]] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in evaluation
    for name, parts in (("teacher", MODELS[BASELINE]), ("hybrid", MODELS[HYBRID])):
        model = HybridForCausalLM.from_pretrained(str(ctx.path(*parts))).eval()
        rows[name] = []
        for length in sp.lengths:
            engine = Engine(model, tok, max_batch_size=len(prompts), max_model_len=max(map(len, prompts)) + length + 1)
            engine.generate(prompts[:2], SamplingParams(n=1, max_tokens=4, ignore_eos=True, seed=0), use_tqdm=False)  # warm up
            t0 = time.perf_counter()
            with torch.no_grad():
                outs = engine.generate(prompts, SamplingParams(n=1, temperature=1.0, max_tokens=length, ignore_eos=True, seed=0),
                                       use_tqdm=False)
            dt = time.perf_counter() - t0
            toks = sum(len(c.token_ids) for o in outs for c in o.outputs)
            rows[name].append({"length": length, "tokens": toks, "seconds": round(dt, 3), "tokens_per_s": toks / dt})
            print(f"  speed {name} len={length}: {toks / dt:.0f} tok/s", flush=True)
    torch.set_num_threads(threads)
    ratio = [h["tokens_per_s"] / t["tokens_per_s"] for t, h in zip(rows["teacher"], rows["hybrid"])]
    lengths = list(sp.lengths)
    overtakes = next((lengths[i] for i in range(len(ratio)) if all(r > 1 for r in ratio[i:])), None)
    return {"batch": len(prompts), "lengths": lengths, "throughput": rows, "hybrid_over_teacher": ratio, "hybrid_overtakes_at": overtakes}


STAGES: list[Stage] = [
    Stage("data", stage_data, "task data: train and test splits of both levels, constant-answer baselines"),
    Stage("tokenizer", stage_tokenizer, "BPE tokenizer on the training text"),
    Stage("teacher", stage_teacher, "pretrain the tiny Llama teacher (m1.tasks.teacher)"),
    Stage("convert", stage_convert, "m1 convert --attention-layers auto:K --init calibrated: measured placement, calibrated hybrid"),
    Stage("convert_teacher", stage_convert_teacher, "the teacher in m1's layout, every layer attention (same logits)"),
    Stage("eval_init", stage_eval_init, "greedy accuracy of the teacher and the converted hybrid (m1.eval)"),
    Stage("init_kl", stage_init_kl, "KL(teacher||hybrid) at conversion: calibrated, attention copy, random (3 seeds)"),
    Stage("distill", stage_distill, "m1 distill, staged: align the Mamba mixers, then forward KL, on pretraining text", group="distill"),
    Stage("distill_m1", stage_distill_m1, "M1's recipe for comparison: attention copy + reverse KL, same steps and text", group="distill"),
    Stage("eval_distill", stage_eval_distill, "greedy easy accuracy of the distilled hybrids, staged and M1's recipe (m1.eval)"),
    Stage("sft", stage_sft, "m1 sft of the hybrid on the hard split's solutions", group="sft"),
    Stage("teacher_sft", stage_teacher_sft, "the same m1 sft of the teacher (teacher-trained baseline)", group="sft"),
    Stage("grpo", stage_grpo, "m1 grpo of the hybrid on hard prompts (Engine rollouts, grader reward)", group="grpo"),
    Stage("teacher_grpo", stage_teacher_grpo, "the same m1 grpo of the SFT teacher (teacher-trained baseline)", group="grpo"),
    Stage("verifier", stage_verifier, "the SFT teacher as a likelihood verifier (m1.eval.verifiers), checked on reference vs one-slip solutions"),
    Stage("eval", stage_eval, "sampled evaluation of every model through m1.eval (pass@k, maj@k, verify@k)"),
    Stage("speed", stage_speed, "Engine throughput, teacher-trained vs final hybrid, by generation length"),
]
