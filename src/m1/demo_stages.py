"""The demo's later stages: init KL, distill, SFT, GRPO, verifier, evaluation, speed, report.

Each stage function takes ``(ctx, out)`` like the first slice's in `m1.demo` and returns the
results its ``DONE.json`` marker records. Training stages run through the real commands'
``cli_main`` with the shipped field mappings for m1.tasks' JSONL exports (``m1-messages``
for conversations, ``m1-prompts`` for GRPO prompts); evaluation samples through m1's
Engine and scores with `m1.eval`'s metrics (`m1.eval.runner.summarize`, pass@k, maj@k,
verify@k with a reward-model verifier loaded by `m1.eval.verifiers`).
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from m1.demo import Context

log = logging.getLogger(__name__)

_INT = re.compile(r"^-?\d+$")


def _common_train_args(ctx: "Context", out: Path) -> list[str]:
    return ["--out", str(out), "--seed", str(ctx.cfg.seed), "--num-threads", str(ctx.cfg.threads),
            "--report-to", "--save-total-limit", "1", "--logging-steps", "1" if ctx.cfg.quick else "5"]


def _metrics(out: Path) -> list[dict]:
    from m1.train.runs import read_metrics

    return read_metrics(out)


def _loss_curve(out: Path, key: str = "loss") -> list[tuple[int, float]]:
    return [(m["step"], m[key]) for m in _metrics(out) if key in m]


# ---------------------------------------------------------------- init KL


def stage_init_kl(ctx: "Context", out: Path) -> dict:
    """KL(teacher || hybrid) at conversion, attention init against random init, 3 seeds."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from m1.init_study import compare_inits
    from m1.tasks import read_problems
    from m1.tasks.encode import encode_example

    cfg = ctx.cfg
    tok = AutoTokenizer.from_pretrained(str(ctx.path("teacher")))
    teacher = LlamaForCausalLM.from_pretrained(str(ctx.path("teacher"))).eval()
    # Held-out text: test problems with their solutions, half easy and half hard.
    n = cfg.n_kl_texts
    probs = read_problems(ctx.path("data", "test_easy.jsonl"))[: n // 2] + read_problems(ctx.path("data", "test_hard.jsonl"))[: n - n // 2]
    seqs = [encode_example(tok, p).input_ids for p in probs]
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    conv = ctx.results["convert"]
    shape = conv["mamba_shape"]
    r = compare_inits(teacher, ids, mask, conv["attention_layers"], seeds=(0, 1, 2),
                      mamba_heads=shape["heads"], mamba_head_dim=shape["head_dim"], mamba_groups=shape["groups"],
                      state_size=shape["state_size"])
    r["texts"] = len(seqs)
    r["target_ratio_le_0.5"] = r["ratio"] <= 0.5
    return r


# ---------------------------------------------------------------- distill, SFT, GRPO


def _mixed_conversations(ctx: "Context", path: Path, n_easy: int, n_hard: int) -> int:
    """Interleave easy and hard training conversations (messages format) into one JSONL."""
    easy = ctx.path("data", "train_easy.jsonl").read_text().splitlines()[:n_easy]
    hard = ctx.path("data", "train_hard.jsonl").read_text().splitlines()[:n_hard]
    lines, i, j = [], 0, 0
    while i < len(easy) or j < len(hard):
        # spread hard records evenly among easy ones
        if j < len(hard) and (i >= len(easy) or j * len(easy) <= i * len(hard)):
            lines.append(hard[j])
            j += 1
        else:
            lines.append(easy[i])
            i += 1
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


def stage_distill(ctx: "Context", out: Path) -> dict:
    """`m1 distill`: reverse KL from the teacher on task text (easy + hard conversations)."""
    from m1.train import distill

    c = ctx.cfg.distill
    data = out / "data.jsonl"
    n = _mixed_conversations(ctx, data, c["n_easy"], c["n_hard"])
    argv = ["--config", str(_config_file("distill.yaml")), "--teacher", str(ctx.path("teacher")), "--student", str(ctx.path("convert")),
            "--data", str(data), "--data-format", "m1-messages", "--max-steps", str(c["steps"]),
            "--per-device-batch-size", str(c["batch"]), "--gradient-accumulation-steps", "1",
            "--learning-rate", str(c["lr"]), "--warmup-steps", str(c["warmup"]), "--max-length", "512",
            "--bf16", "false", "--gradient-checkpointing", "false", "--save-steps", str(c["steps"]),
            *_common_train_args(ctx, out / "run")]
    t0 = time.perf_counter()
    distill.cli_main(argv)
    return {"argv": argv, "records": n, "train_seconds": round(time.perf_counter() - t0, 1),
            "loss_curve": _loss_curve(out / "run"), "model": str(out / "run" / "final")}


def stage_sft(ctx: "Context", out: Path) -> dict:
    """`m1 sft` on the hard split's solutions, packed, completion-only."""
    from m1.train import sft

    c = ctx.cfg.sft
    data = out / "data.jsonl"
    n = _mixed_conversations(ctx, data, c["n_easy"], c["n_hard"])
    argv = ["--config", str(_config_file("sft.yaml")), "--model", str(ctx.path("distill", "run", "final")),
            "--data", str(data), "--data-format", "m1-messages", "--max-steps", str(c["steps"]),
            "--per-device-batch-size", str(c["batch"]), "--gradient-accumulation-steps", "1",
            "--learning-rate", str(c["lr"]), "--warmup-steps", str(c["warmup"]), "--max-length", str(c["max_length"]),
            "--bf16", "false", "--gradient-checkpointing", "false", "--save-steps", str(c["steps"]),
            *_common_train_args(ctx, out / "run")]
    t0 = time.perf_counter()
    sft.cli_main(argv)
    return {"argv": argv, "records": n, "train_seconds": round(time.perf_counter() - t0, 1),
            "loss_curve": _loss_curve(out / "run"), "model": str(out / "run" / "final")}


def grpo_argv(model: str, prompts: str, out: str, c: dict, seed: int, threads: int) -> list[str]:
    """`m1 grpo` arguments of the demo's GRPO stage (also used by the slow GRPO test)."""
    return ["--config", str(_config_file("grpo.yaml")), "--model", model, "--prompts", prompts, "--data-format", "m1-prompts",
            "--rollout-backend", "engine", "--max-steps", str(c["steps"]), "--num-generations", str(c["generations"]),
            "--generation-batch-size", str(c["generation_batch"]), "--mini-batch-size", str(c["mini_batch"]),
            "--per-device-batch-size", str(c["mini_batch"]), "--learning-rate", str(c["lr"]),
            "--temperature", str(c["temperature"]), "--max-completion-length", str(c["max_tokens"]),
            "--max-prompt-length", "256", "--bf16", "false", "--gradient-checkpointing", "false",
            "--save-steps", str(c["steps"]), "--out", out, "--seed", str(seed), "--num-threads", str(threads),
            "--report-to", "--save-total-limit", "1", "--logging-steps", "1"]


def write_grpo_prompts(ctx: "Context", path: Path, n: int) -> int:
    from m1.tasks import prompt_record, read_problems, write_jsonl

    return write_jsonl(path, map(prompt_record, read_problems(ctx.path("data", "train_hard.jsonl"))[-n:]))


def stage_grpo(ctx: "Context", out: Path) -> dict:
    """`m1 grpo` on hard training prompts, Engine rollouts, reward = m1's grader."""
    from m1.train import grpo

    c = ctx.cfg.grpo
    prompts = out / "prompts.jsonl"
    write_grpo_prompts(ctx, prompts, c["n_prompts"])
    # one thread: the Engine rollouts dominate and decode faster single-threaded on this CPU
    argv = grpo_argv(str(ctx.path("sft", "run", "final")), str(prompts), str(out / "run"), c, ctx.cfg.seed, 1)
    t0 = time.perf_counter()
    grpo.cli_main(argv)
    curve = reward_curve(out / "run")
    return {"argv": argv, "train_seconds": round(time.perf_counter() - t0, 1), "reward_curve": curve,
            "reward_first": _mean_of([r for _, r in curve[: max(1, len(curve) // 5)]]),
            "reward_last": _mean_of([r for _, r in curve[-max(1, len(curve) // 5):]]),
            "model": str(out / "run" / "final")}


def reward_curve(run: Path) -> list[tuple[int, float]]:
    return [(m["step"], m["reward"]) for m in _metrics(run) if "reward" in m]


def _mean_of(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _config_file(name: str) -> Path:
    """The shipped recipe config (repo checkout), so the demo runs M1's files with demo sizes on top."""
    for base in (Path(__file__).resolve().parents[2] / "configs", Path.cwd() / "configs"):
        if (base / name).exists():
            return base / name
    raise FileNotFoundError(f"configs/{name} not found next to the package or in the working directory")


# ---------------------------------------------------------------- sampling through the Engine


def load_model(path: Path):
    """A checkpoint as m1's `HybridForCausalLM`, the class the Engine serves. The Llama
    teacher becomes a hybrid whose every layer is attention: its own weights, unchanged
    (the same logits; `m1.demo_stages.check_same_logits` is run on it)."""
    from transformers import LlamaForCausalLM

    from m1.modeling import HybridForCausalLM
    from m1.train.model import is_hybrid_checkpoint

    if is_hybrid_checkpoint(path):
        return HybridForCausalLM.from_pretrained(str(path)).eval()
    from m1.convert import convert_from_transformer

    llama = LlamaForCausalLM.from_pretrained(str(path)).eval()
    c = llama.config
    hd = c.hidden_size // c.num_attention_heads
    model = convert_from_transformer(llama, attention_layers=list(range(c.num_hidden_layers)), mamba_heads=c.num_attention_heads,
                                     mamba_head_dim=hd, mamba_groups=c.num_attention_heads, state_size=hd).eval()
    check_same_logits(llama, model)
    return model


def check_same_logits(a, b, tol: float = 1e-3) -> None:
    import torch

    ids = torch.arange(3, 40).unsqueeze(0) % a.config.vocab_size
    with torch.no_grad():
        diff = (a(ids).logits - b(ids).logits).abs().max().item()
    if diff > tol:
        raise RuntimeError(f"the all-attention hybrid differs from the Llama teacher by {diff:.2e} in logits")


def sample(model, tok, problems, n: int, temperature: float, max_tokens: int, seed: int, batch: int = 256):
    """Engine samples for every problem: (rows in m1.eval.runner's schema, seconds)."""
    import torch

    from m1.engine import Engine, SamplingParams
    from m1.eval import extract_answer
    from m1.tasks.encode import prompt_ids

    prompts = [prompt_ids(tok, p) for p in problems]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread decodes tiny models much faster than two on this CPU (measured)
    engine = Engine(model, tok, max_batch_size=batch, max_model_len=max(map(len, prompts)) + max_tokens + 1)
    params = [SamplingParams(n=n, temperature=temperature, max_tokens=max_tokens, seed=seed * 1_000_003 + i) for i in range(len(problems))]
    t0 = time.perf_counter()
    with torch.no_grad():
        outs = engine.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - t0
    torch.set_num_threads(threads)
    per = seconds / (n * len(problems))
    rows = []
    for i, (p, o) in enumerate(zip(problems, outs)):
        for j, c in enumerate(o.outputs):
            ans = extract_answer(c.text)
            # Gold answers are integers: a non-integer answer is wrong and does not vote
            # (it would only send math-verify garbage to compare).
            ans = ans if ans is not None and _INT.match(ans.strip()) else None
            rows.append({"benchmark": p.difficulty, "problem_id": str(i), "sample": j, "gold": p.answer, "answer": ans,
                         "correct": ans == p.answer, "num_tokens": len(c.token_ids), "finish_reason": c.finish_reason,
                         "gen_time_s": per, "text": c.text, "question": p.question})
    return rows, seconds


# ---------------------------------------------------------------- verifier


def stage_verifier(ctx: "Context", out: Path) -> dict:
    """A reward model: the teacher with a one-logit classification head, trained on the SFT
    hybrid's own samples of hard training problems labelled by the grader, saved as a HF
    sequence-classification checkpoint for `m1.eval.verifiers.RewardModelVerifier`."""
    import random

    import torch
    from transformers import AutoTokenizer, LlamaForSequenceClassification

    from m1.eval.verifiers import MAX_SOLUTION_CHARS
    from m1.tasks import read_problems

    c = ctx.cfg.verifier
    tok = AutoTokenizer.from_pretrained(str(ctx.path("teacher")))
    policy = load_model(ctx.path("sft", "run", "final"))
    train = read_problems(ctx.path("data", "train_hard.jsonl"))
    problems = train[len(train) // 2: len(train) // 2 + c["n_prompts"]]
    t0 = time.perf_counter()
    rows, _ = sample(policy, tok, problems, c["samples"], c["temperature"], ctx.cfg.eval["max_tokens_hard"], seed=ctx.cfg.seed + 17)
    sample_seconds = time.perf_counter() - t0
    del policy
    data = [(r["question"] + "\n" + _prompt_suffix(), r["text"], float(r["correct"])) for r in rows]
    pos = sum(d[2] for d in data)
    model = LlamaForSequenceClassification.from_pretrained(str(ctx.path("teacher")), num_labels=1)
    model.config.pad_token_id = tok.pad_token_id
    torch.manual_seed(ctx.cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=c["lr"], weight_decay=0.01)
    # Balance the classes through the loss weight so a rare label is still learned.
    pos_weight = torch.tensor((len(data) - pos) / max(pos, 1.0)).clamp(0.2, 5.0)
    rng = random.Random(ctx.cfg.seed)
    losses = []
    model.train()
    t1 = time.perf_counter()
    tok.padding_side = "right"
    for step in range(c["steps"]):
        batch = rng.sample(data, min(c["batch"], len(data)))
        enc = tok([b[0] for b in batch], [b[1][-MAX_SOLUTION_CHARS:] for b in batch], return_tensors="pt", padding=True,
                  truncation=True, max_length=1024)
        enc.pop("token_type_ids", None)
        logits = model(**enc).logits[:, 0]
        y = torch.tensor([b[2] for b in batch])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, pos_weight=pos_weight)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 10 == 0 or step == c["steps"] - 1:
            losses.append((step, round(loss.item(), 4)))
    model.eval()
    model.save_pretrained(str(out / "model"), safe_serialization=True)
    tok.save_pretrained(str(out / "model"))
    return {"samples": len(data), "positive_fraction": pos / max(1, len(data)), "sample_seconds": round(sample_seconds, 1),
            "train_seconds": round(time.perf_counter() - t1, 1), "loss_curve": losses, "model": str(out / "model")}


def _prompt_suffix() -> str:
    from m1.tasks import PROMPT_SUFFIX

    return PROMPT_SUFFIX


# ---------------------------------------------------------------- evaluation


MODELS = {  # stage name in the report -> checkpoint directory under the demo's out
    "teacher": ("teacher",),
    "hybrid_init": ("convert",),
    "distill": ("distill", "run", "final"),
    "sft": ("sft", "run", "final"),
    "grpo": ("grpo", "run", "final"),
}


def score_verifier(verifier, rows: list[dict], batch: int = 64) -> None:
    """Add ``verifier_score`` to rows with the verifier's own model and tokenizer, batched
    (the same encoding as `RewardModelVerifier.score`, one forward per batch)."""
    import torch

    from m1.eval.verifiers import MAX_SOLUTION_CHARS

    tok = verifier.tokenizer
    tok.padding_side = "right"
    for s in range(0, len(rows), batch):
        chunk = rows[s: s + batch]
        enc = tok([r["question"] + "\n" + _prompt_suffix() for r in chunk], [r["text"][-MAX_SOLUTION_CHARS:] for r in chunk],
                  return_tensors="pt", padding=True, truncation=True, max_length=verifier.max_length)
        enc.pop("token_type_ids", None)
        with torch.no_grad():
            logits = verifier.model(**enc).logits[:, 0].float()
        for r, v in zip(chunk, logits.tolist()):
            r["verifier_score"] = v


def stage_eval(ctx: "Context", out: Path) -> dict:
    """Every stage's model on the hard and easy test sets through the Engine.

    Sets: ``easy`` and ``hard`` (all hard test problems) with few samples per problem for
    pass@1 and its interval; ``hard_k`` (the first ``scaling_problems`` hard problems) with
    ``scaling_n`` samples for the teacher, SFT and final hybrids, scored by the verifier:
    pass@k, maj@k, verify@k and the wall-clock budget curves.
    """
    from transformers import AutoTokenizer

    from m1.eval.runner import summarize
    from m1.eval.verifiers import RewardModelVerifier
    from m1.tasks import read_problems

    e = ctx.cfg.eval
    tok = AutoTokenizer.from_pretrained(str(ctx.path("teacher")))
    hard = read_problems(ctx.path("data", "test_hard.jsonl"))
    sets = {"easy": (read_problems(ctx.path("data", "test_easy.jsonl"))[: e["n_easy"]], e["max_tokens_easy"]),
            "hard": (hard[: e["n_hard"]], e["max_tokens_hard"]),
            "hard_k": (hard[: e["scaling_problems"]], e["max_tokens_hard"])}
    verifier = RewardModelVerifier(str(ctx.path("verifier", "model")), max_length=1024)
    results: dict[str, dict] = {}
    plan: dict[str, dict[str, int]] = {}
    for name, parts in MODELS.items():
        model = load_model(ctx.path(*parts))
        for difficulty, (problems, max_tokens) in sets.items():
            n = e["n_easy_samples"] if difficulty == "easy" else e["n_hard_samples"][name] if difficulty == "hard" else e["scaling_n"]
            if difficulty == "hard_k" and name not in SCALED:
                continue
            plan.setdefault(name, {})[difficulty] = n
            rows, seconds = sample(model, tok, problems, n, e["temperature"], max_tokens, seed=ctx.cfg.seed + 101)
            t0 = time.perf_counter()
            if difficulty == "hard_k":
                score_verifier(verifier, rows)
            verify_seconds = time.perf_counter() - t0
            s = summarize(rows, n)
            s["gen_seconds"] = round(seconds, 1)
            s["verify_seconds"] = round(verify_seconds, 1)
            results.setdefault(name, {})[difficulty] = s
            with open(out / f"{name}_{difficulty}.jsonl", "w") as f:
                for r in rows:
                    f.write(json.dumps({k: v for k, v in r.items() if k != "question"}) + "\n")
            log.info("%s %s: pass@1 %.3f (n=%d, %d problems) in %.1fs", name, difficulty, s["pass@1"]["mean"], n, len(problems), seconds)
            print(f"  eval {name}/{difficulty}: pass@1 {s['pass@1']['mean']:.3f} n={n} x {len(problems)} problems ({seconds:.0f}s)", flush=True)
    return {"models": results, "temperature": e["temperature"], "n": plan}


SCALED = ("teacher", "sft", "grpo")  # models given many samples on the hard_k subset


# ---------------------------------------------------------------- speed


def stage_speed(ctx: "Context", out: Path) -> dict:
    """Engine decode throughput (generated tokens/s) of teacher and hybrid at growing lengths."""
    import torch
    from transformers import AutoTokenizer

    from m1.engine import Engine, SamplingParams
    from m1.tasks import read_problems
    from m1.tasks.encode import prompt_ids

    sp = ctx.cfg.speed
    tok = AutoTokenizer.from_pretrained(str(ctx.path("teacher")))
    probs = read_problems(ctx.path("data", "test_hard.jsonl"))[: sp["batch"]]
    prompts = [prompt_ids(tok, p) for p in probs]
    rows = {}
    torch.set_num_threads(1)  # as in evaluation
    for name, parts in (("teacher", MODELS["teacher"]), ("hybrid", MODELS["grpo"])):
        model = load_model(ctx.path(*parts))
        rows[name] = []
        for length in sp["lengths"]:
            engine = Engine(model, tok, max_batch_size=len(prompts), max_model_len=max(map(len, prompts)) + length + 1)
            params = SamplingParams(n=1, temperature=1.0, max_tokens=length, ignore_eos=True, seed=0)
            engine.generate(prompts[:2], SamplingParams(n=1, max_tokens=4, ignore_eos=True, seed=0), use_tqdm=False)  # warm up
            t0 = time.perf_counter()
            with torch.no_grad():
                outs = engine.generate(prompts, params, use_tqdm=False)
            dt = time.perf_counter() - t0
            toks = sum(len(c.token_ids) for o in outs for c in o.outputs)
            rows[name].append({"length": length, "tokens": toks, "seconds": round(dt, 3), "tokens_per_s": toks / dt})
            print(f"  speed {name} len={length}: {toks / dt:.0f} tok/s", flush=True)
    ratio = [h["tokens_per_s"] / t["tokens_per_s"] for t, h in zip(rows["teacher"], rows["hybrid"])]
    overtakes = next((sp["lengths"][i] for i in range(len(ratio)) if all(r > 1 for r in ratio[i:])), None)
    return {"batch": len(prompts), "lengths": sp["lengths"], "throughput": rows, "hybrid_over_teacher": ratio,
            "hybrid_overtakes_at": overtakes}


# ---------------------------------------------------------------- report (plots + targets)


def budget_curves(ctx: "Context", evald: dict, difficulty: str = "hard_k") -> dict:
    """Accuracy against samples and against wall-clock budget, teacher vs final hybrid."""
    from m1.eval.metrics import k_values
    from m1.eval.runner import read_samples
    from m1.eval.scaling import accuracy_at, budget_curve

    curves = {}
    for name in ("teacher", "grpo"):
        rows = read_samples(ctx.path("eval", f"{name}_{difficulty}.jsonl"))
        s = evald["models"][name][difficulty]
        n = s["n"]
        sps = s["samples_per_s"]
        by_k = [(k, *accuracy_at(rows, n, k)) for k in k_values(n)]
        curves[name] = {"samples_per_s": sps, "by_k": by_k, "by_time": None, "_rows": rows, "n": n}
    lo = min(1 / c["samples_per_s"] for c in curves.values())
    hi = max(c["n"] / c["samples_per_s"] for c in curves.values())
    budgets = [lo * (hi / lo) ** (i / 11) for i in range(12)]
    for name, c in curves.items():
        c["by_time"] = budget_curve(c.pop("_rows"), c["n"], c["samples_per_s"], budgets)
    return curves


def _p1(s: dict) -> tuple[float, float, float]:
    return s["pass@1"]["mean"], s["pass@1"]["ci95"][0], s["pass@1"]["ci95"][1]


def extend_summary(ctx: "Context", summary: dict) -> None:
    """Accuracy table, targets (met / not met) and plots from the later stages' markers."""
    r = ctx.results
    ev = r.get("eval", {}).get("models", {})
    table = []
    for name, by_d in ev.items():
        for d, s in by_d.items():
            m, lo, hi = _p1(s)
            n = s["n"]
            row = {"model": name, "set": d, "problems": s["problems"], "n": n, "pass@1": m, "ci95": [lo, hi],
                   f"pass@{n}": s["pass@k"][str(n)], f"maj@{n}": s["maj@k"][str(n)], "samples_per_s": s["samples_per_s"]}
            if "verify@k" in s:
                row[f"verify@{n}"] = s["verify@k"][str(n)]
            table.append(row)
    summary["table"] = table
    applies = not ctx.cfg.quick
    t = summary.setdefault("targets", {})
    if "teacher" in ev and "sft" in ev:
        te, se = ev["teacher"]["easy"]["pass@1"]["mean"], ev["sft"]["easy"]["pass@1"]["mean"]
        ratio = se / te if te else 0.0
        t["sft_easy_ge_0.9x_teacher"] = {"value": ratio, "hybrid_sft": se, "teacher": te, "met": ratio >= 0.9, "applies": applies,
                                         "note": f"sampled pass@1 at T={r['eval']['temperature']}, same sampling for both"}
    if "grpo" in ev and "sft" in ev:
        gm, glo, ghi = _p1(ev["grpo"]["hard"])
        sm, slo, shi = _p1(ev["sft"]["hard"])
        t["grpo_hard_pass1_ge_sft_plus_0.05_disjoint_ci"] = {"value": gm - sm, "grpo": [gm, glo, ghi], "sft": [sm, slo, shi],
                                                             "met": gm - sm >= 0.05 and glo > shi, "applies": applies}
    if "grpo" in ev:
        for d in ("hard_k",):
            s = ev["grpo"][d]
            n = str(s["n"])
            p1 = s["pass@1"]["mean"]
            for key in ("maj@k", "verify@k"):
                if key in s:
                    v = s[key][n]
                    t[f"final_{key.replace('@k', '@' + n)}_gt_pass@1_{d}"] = {"value": v, "pass@1": p1, "met": v > p1, "applies": applies}
    init = r.get("init_kl")
    if init:
        t["init_kl_attention_le_0.5x_random"] = {"value": init["ratio"], "attention": init["mean_kl_attention_init"],
                                                 "random": init["mean_kl_random_init"], "met": init["ratio"] <= 0.5, "applies": True}
    g = r.get("grpo")
    if g:
        summary["grpo_reward_curve"] = g["reward_curve"]
    sp = r.get("speed")
    if sp:
        summary["speed"] = {"lengths": sp["lengths"], "hybrid_over_teacher": sp["hybrid_over_teacher"],
                            "hybrid_overtakes_at": sp["hybrid_overtakes_at"]}
    if "eval" in r and "teacher" in ev and "grpo" in ev:
        curves = budget_curves(ctx, r["eval"])
        summary["accuracy_vs_budget"] = {m: {"samples_per_s": c["samples_per_s"], "by_k": c["by_k"], "by_time": c["by_time"]}
                                         for m, c in curves.items()}
        summary["plots"] = make_plots(ctx, summary, curves)


def make_plots(ctx: "Context", summary: dict, curves: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from m1.eval.scaling import plot_scaling

    out = ctx.cfg.out
    paths = []
    # accuracy by stage
    ev = ctx.results["eval"]["models"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = list(ev)
    for j, d in enumerate(("easy", "hard")):
        ms = [ev[m][d]["pass@1"]["mean"] for m in names]
        err = [[m - ev[x][d]["pass@1"]["ci95"][0] for m, x in zip(ms, names)], [ev[x][d]["pass@1"]["ci95"][1] - m for m, x in zip(ms, names)]]
        ax.bar([i + 0.4 * j for i in range(len(names))], ms, width=0.4, yerr=err, capsize=3, label=f"{d} test pass@1")
    ax.set_xticks([i + 0.2 for i in range(len(names))], names)
    ax.set_ylim(0, 1)
    ax.set_ylabel("pass@1 (95% CI)")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(out / "accuracy_by_stage.png", dpi=110)
    plt.close(fig)
    paths.append("accuracy_by_stage.png")
    # accuracy vs samples and vs time: m1.eval's two-panel plot, and the time panel alone
    named = {{"teacher": "teacher", "grpo": "hybrid (final)"}[m]: c for m, c in curves.items()}
    plot_scaling(named, out / "accuracy_vs_samples.png", "hard test")
    paths.append("accuracy_vs_samples.png")
    fig, ax = plt.subplots(figsize=(6, 4))
    for m, c in named.items():
        ts = [t for t, *_ in c["by_time"]]
        ax.plot(ts, [x[3] for x in c["by_time"]], marker="o", label=f"{m} maj@k(T)")
        ax.plot(ts, [x[2] for x in c["by_time"]], linestyle="--", label=f"{m} pass@k(T)")
    ax.set_xscale("log")
    ax.set_xlabel("wall-clock budget per problem T (s); k(T) = floor(T x samples/s)")
    ax.set_ylabel("hard test accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_time.png", dpi=110)
    plt.close(fig)
    paths.append("accuracy_vs_time.png")
    sp = ctx.results.get("speed")
    if sp:
        fig, ax = plt.subplots(figsize=(6, 4))
        for m, rows in sp["throughput"].items():
            ax.plot([x["length"] for x in rows], [x["tokens_per_s"] for x in rows], marker="o", label=m)
        ax.set_xlabel("generated tokens per sequence")
        ax.set_ylabel(f"tokens/s (batch {sp['batch']}, {ctx.cfg.threads} threads)")
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "throughput_vs_length.png", dpi=110)
        plt.close(fig)
        paths.append("throughput_vs_length.png")
    return paths


def report_lines(summary: dict) -> list[str]:
    st = summary["stages"]
    lines: list[str] = []
    init = st.get("init_kl")
    if init:
        lines += ["## KL(teacher || hybrid) at conversion", "",
                  f"On {init['texts']} held-out test sequences, seeds 0-2: attention init {init['mean_kl_attention_init']:.3f} nats/token, "
                  f"random init {init['mean_kl_random_init']:.3f}; ratio {init['ratio']:.2f} (target <= 0.5: "
                  f"{'met' if init['ratio'] <= 0.5 else 'MISSED'}).", ""]
    tr = [(k, st[k]) for k in ("distill", "sft", "grpo") if k in st]
    if tr:
        lines += ["## Training stages (run through `m1 distill`, `m1 sft`, `m1 grpo`)", "", "| stage | steps | seconds | first -> last logged |", "| --- | --- | --- | --- |"]
        for k, v in tr:
            curve = v.get("loss_curve") or v.get("reward_curve") or []
            what = "reward" if k == "grpo" else "loss"
            span = f"{what} {curve[0][1]:.3f} -> {curve[-1][1]:.3f}" if curve else "-"
            lines.append(f"| {k} | {curve[-1][0] if curve else '?'} | {v['train_seconds']} | {span} |")
        lines.append("")
    if "grpo_reward_curve" in summary:
        lines += ["GRPO mean reward per step: " + ", ".join(f"{s}:{r:.2f}" for s, r in summary["grpo_reward_curve"]), ""]
    v = st.get("verifier")
    if v:
        lines += [f"Verifier: teacher + classification head trained {v['loss_curve'][-1][0] + 1} steps on {v['samples']} of the SFT hybrid's "
                  f"own hard-train samples ({v['positive_fraction']:.0%} graded correct); loss {v['loss_curve'][0][1]:.3f} -> {v['loss_curve'][-1][1]:.3f}.", ""]
    if summary.get("table"):
        e = st["eval"]
        lines += ["## Accuracy of every stage (Engine, sampled)", "",
                  f"Temperature {e['temperature']}; samples per problem: " + ", ".join(f"{m} n={n}" for m, n in e["n"].items())
                  + " (fewer for the intermediate stages to fit the time budget). verify@n uses the reward-model verifier.", "",
                  "| model | set | problems | pass@1 [95% CI] | pass@n | maj@n | verify@n | samples/s |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for row in summary["table"]:
            n = row["n"]
            ver = row.get(f"verify@{n}")
            lines.append(f"| {row['model']} | {row['set']} | {row['problems']} | {row['pass@1']:.1%} [{row['ci95'][0]:.1%}, {row['ci95'][1]:.1%}] | "
                         f"{row[f'pass@{n}']:.1%} (n={n}) | {row[f'maj@{n}']:.1%} | {'-' if ver is None else f'{ver:.1%}'} | {row['samples_per_s']:.1f} |")
        lines += ["", "![accuracy by stage](accuracy_by_stage.png)", ""]
    if "accuracy_vs_budget" in summary:
        lines += ["## Accuracy against wall-clock budget (hard test)", "",
                  "k(T) = floor(T x samples/s), samples/s measured for each model in its own eval run.", "",
                  "| model | T (s) | k | pass@k | maj@k |", "| --- | --- | --- | --- | --- |"]
        for m, c in summary["accuracy_vs_budget"].items():
            for t, k, p, mj in c["by_time"]:
                lines.append(f"| {m} | {t:.3g} | {k} | {p:.1%} | {mj:.1%} |")
        lines += ["", "![accuracy vs time](accuracy_vs_time.png)", "", "![accuracy vs samples](accuracy_vs_samples.png)", ""]
    sp = st.get("speed")
    if sp:
        lines += ["## Engine throughput on this CPU", "", "| length | " + " | ".join(sp["throughput"]) + " | hybrid / teacher |", "| --- | --- | --- | --- |"]
        for i, length in enumerate(sp["lengths"]):
            lines.append(f"| {length} | " + " | ".join(f"{sp['throughput'][m][i]['tokens_per_s']:.0f}" for m in sp["throughput"]) + f" | {sp['hybrid_over_teacher'][i]:.2f} |")
        where = sp["hybrid_overtakes_at"]
        lines += ["", f"The hybrid overtakes the teacher from {where} generated tokens on." if where else
                  "The hybrid did not overtake the teacher at these lengths on this CPU.", "", "![throughput](throughput_vs_length.png)", ""]
    return lines
