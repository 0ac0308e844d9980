"""Sweeps for `m1 demo`'s design: run reduced or full demo variants side by side, one process
per variant, and print the numbers that decide the design.

Two modes:

- ``ladder``: the task ladder. Each variant pretrains a teacher on its own mix of chain
  lengths (and label style, model size, steps) and reports its greedy accuracy on test chains
  of every length, so the hard level can be put where the teacher partly solves it.
- ``demo``: whole `m1 demo` runs with overridden sizes (``--set stage.field=value``), each in
  its own output directory, then a table of the nine targets. Demo runs resume from their
  stage markers, so a sweep that outlives one call continues where it stopped.

Meant for a machine with many cores (the GPU machine has 16: 8 variants at 2 threads each);
results land as JSON under ``--out`` and as a table on stdout. Example::

    python studies/demo_sweep.py ladder --out /tmp/ladder --jobs 8 --threads 2
    python studies/demo_sweep.py demo --out /tmp/sweep --variants base,lr2 --jobs 2
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path


LENGTHS = (2, 3, 4, 6, 8, 10, 12, 14, 16)

# ------------------------------------------------------------------------------------ ladder

# name -> (train mix: list of (min_steps, max_steps, random_labels, weight), teacher overrides)
LADDER: dict[str, dict] = {
    "base":      {"mix": [(2, 3, False, 0.8), (10, 14, False, 0.2)], "teacher": {}},
    "hf35":      {"mix": [(2, 3, False, 0.65), (10, 14, False, 0.35)], "teacher": {}},
    "short6":    {"mix": [(2, 6, False, 1.0)], "teacher": {}},
    "short6r":   {"mix": [(2, 6, True, 1.0)], "teacher": {}},
    "short8":    {"mix": [(2, 8, False, 1.0)], "teacher": {}},
    "short8r":   {"mix": [(2, 8, True, 1.0)], "teacher": {"steps": 1500}},
    "med":       {"mix": [(2, 3, False, 0.7), (4, 8, False, 0.3)], "teacher": {}},
    "base1500":  {"mix": [(2, 3, False, 0.8), (10, 14, False, 0.2)], "teacher": {"steps": 1500}},
    "smoke":     {"mix": [(2, 3, False, 0.8), (10, 14, False, 0.2)], "teacher": {"steps": 3}},  # the harness's own check
}


def _difficulty(name: str, lo: int, hi: int, random_labels: bool):
    from m1.tasks.arithmetic import Difficulty

    return Difficulty(name, min_steps=lo, max_steps=hi, random_labels=random_labels)


def run_ladder_variant(name: str, spec: dict, out: str, threads: int, n_train: int, n_test: int, seed: int) -> dict:
    import torch

    from m1.convert import convert_from_transformer
    from m1.engine import Engine, SamplingParams
    from m1.eval import extract_answer
    from m1.tasks import make_split
    from m1.tasks.encode import prompt_ids
    from m1.tasks.teacher import TeacherConfig, build_teacher, train_teacher
    from m1.tasks.tokenizer import train_tokenizer

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    out_dir = Path(out) / name
    out_dir.mkdir(parents=True, exist_ok=True)
    comps = []
    for i, (lo, hi, rl, w) in enumerate(spec["mix"]):
        d = _difficulty(f"train{i}_{lo}_{hi}{'r' if rl else ''}", lo, hi, rl)
        comps.append((make_split(d, max(256, int(n_train * w / max(x[3] for x in spec["mix"]))), seed=seed), w))
    label_style = any(x[2] for x in spec["mix"])
    tests = {L: make_split(_difficulty(f"len{L}{'r' if label_style else ''}", L, L, label_style), n_test, seed=seed, split="test")
             for L in LENGTHS}
    texts = [p.prompt for ps, _ in comps for p in ps] + [p.solution for ps, _ in comps for p in ps]
    texts += [f"{c}: " for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"]
    tok = train_tokenizer(texts)
    tok.save_pretrained(str(out_dir / "tokenizer"))
    # train_teacher draws "hard" batches with probability hard_fraction: two components map
    # onto easy/hard; one component is all "easy".
    train = {"easy": comps[0][0]}
    hard_fraction = 0.0
    if len(comps) == 2:
        train["hard"] = comps[1][0]
        hard_fraction = comps[1][1] / (comps[0][1] + comps[1][1])
    cfg = TeacherConfig(**{"hard_fraction": hard_fraction, "seed": seed, **spec["teacher"]})
    model = build_teacher(cfg, tok)
    tl = train_teacher(model, tok, train, cfg)
    train_s = time.perf_counter() - t0
    hybrid = convert_from_transformer(model, attention_layers=list(range(cfg.num_layers))).eval()
    engine = Engine(hybrid, tok, max_batch_size=256, max_model_len=512)
    acc = {}
    t1 = time.perf_counter()
    for L, ps in tests.items():
        prompts = [prompt_ids(tok, p) for p in ps]
        outs = engine.generate(prompts, SamplingParams(temperature=0.0, max_tokens=16 * L + 24), use_tqdm=False)
        ok = sum(extract_answer(o.outputs[0].text) == p.answer for o, p in zip(outs, ps))
        acc[L] = ok / len(ps)
    tokens = {L: sum(len(tok(p.solution)["input_ids"]) for p in ps) / len(ps) for L, ps in tests.items()}
    res = {"variant": name, "spec": spec, "hard_fraction": hard_fraction, "final_loss": tl.losses[-1][1],
           "train_seconds": round(train_s, 1), "eval_seconds": round(time.perf_counter() - t1, 1),
           "greedy_accuracy_by_length": acc, "solution_tokens_by_length": tokens, "params": tl.num_params}
    (out_dir / "result.json").write_text(json.dumps(res, indent=1))
    return res


# ------------------------------------------------------------------------------------ demo

def _apply_overrides(cfg, sets: list[str]):
    """``stage.field=value`` overrides of a DemoConfig (values parsed as JSON, else strings)."""
    for s in sets:
        key, _, raw = s.partition("=")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        parts = key.split(".")
        if len(parts) == 1:
            setattr(cfg, parts[0], value)
            continue
        obj = getattr(cfg, parts[0])
        if len(parts) == 3:
            inner = getattr(obj, parts[1])
            obj = replace(obj, **{parts[1]: replace(inner, **{parts[2]: value})})
        else:
            obj = replace(obj, **{parts[1]: value})
        setattr(cfg, parts[0], obj)
    return cfg


def _brief(results: dict) -> dict:
    """The numbers of each finished stage that decide the design (no curves, no configs)."""
    out: dict = {}
    for name, r in results.items():
        b: dict = {"seconds": r.get("stage_seconds")}
        for key in ("final_loss", "first_loss", "reward_first", "reward_last", "positive_fraction", "hard_to_easy_token_ratio",
                    "kl_converted", "kl_attention", "kl_m1_start", "kl_random_mean", "hybrid_over_teacher", "constant_baseline"):
            if key in r:
                b[key] = r[key]
        for curve in ("loss_curve", "reward_curve"):
            if r.get(curve):
                b[curve.replace("_curve", "")] = [r[curve][0][1], r[curve][-1][1]]
        if name in ("eval_init", "eval_distill"):
            b.update({f"{m}/{d}": v["accuracy"] for m, ds in r.items() if isinstance(ds, dict) for d, v in ds.items() if isinstance(v, dict)})
        if name == "eval":
            for m, sets in r["models"].items():
                for k, s in sets.items():
                    n = s["n"]
                    b[f"{m}/{k}"] = {"pass@1": s["pass@1"]["mean"], f"maj@{n}": s["maj@k"][str(n)], "samples_per_s": s["samples_per_s"],
                                     **({f"verify@{n}": s["verify@k"][str(n)]} if "verify@k" in s else {})}
        out[name] = b
    return out


def run_demo_variant(name: str, sets: list[str], out: str, threads: int, seed: int, quick: bool, until: str | None,
                     base: str | None, base_until: str | None = None) -> dict:
    """One demo variant: its stages in order (up to ``until``), stages already finished under
    ``base`` (same seed and mode) copied in first and so skipped."""
    import logging
    import shutil

    import torch

    from m1.demo import STAGES, DemoConfig, run_stages, stage_batches
    from m1.demo.report import demo_summary

    logging.basicConfig(level=logging.WARNING)
    cfg = DemoConfig.make(out=Path(out) / name, quick=quick, seed=seed, threads=threads)
    cfg = _apply_overrides(cfg, sets)
    if base and not cfg.out.exists():
        names = [s.name for s in STAGES]
        keep = set(names[: names.index(base_until) + 1] if base_until else names)
        shutil.copytree(base, cfg.out, ignore=lambda d, files: [f for f in files if d == base and f in set(names) - keep])
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    for batch in stage_batches(STAGES):  # batch by batch, so brief.json is current if the sweep is cut off
        last = until if until in [s.name for s in batch] else batch[-1].name
        ctx = run_stages(cfg, last)
        (cfg.out / "brief.json").write_text(json.dumps(_brief(ctx.results), indent=1))
        if last == until:
            break
    res = {"variant": name, "sets": sets, "seconds": round(time.perf_counter() - t0, 1), "brief": _brief(ctx.results)}
    if len(ctx.results) == len(STAGES):
        summary = demo_summary(ctx)
        res["targets"] = summary.get("targets")
    return res


# ------------------------------------------------------------------------------------ driver

def _guard(fn, name, *args):
    """Run one variant in a worker; a failure is reported, not raised, so others finish."""
    log = Path(args[1] if fn is run_demo_variant else args[1]) / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            return fn(name, *args)
        except Exception:  # noqa: BLE001 - a sweep reports every variant's fate
            tb = traceback.format_exc()
            print(tb, flush=True)
            return {"variant": name, "error": tb.splitlines()[-1]}


def collect(out: Path) -> dict:
    """Every variant's brief.json and the training curves logged so far (metrics.jsonl), for a
    sweep cut off by its time limit."""
    res: dict = {}
    for d in sorted(p for p in out.iterdir() if p.is_dir()):
        r: dict = {}
        if (d / "brief.json").exists():
            r["brief"] = json.loads((d / "brief.json").read_text())
        for m in sorted(d.glob("*/run/metrics.jsonl")):
            rows = [json.loads(x) for x in m.read_text().splitlines() if x.strip()]
            r[f"{m.parent.parent.name}_curve"] = [{k: v for k, v in x.items() if k in ("step", "loss", "reward", "entropy")} for x in rows]
        res[d.name] = r
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=("ladder", "demo", "collect"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--variants", default=None, help="comma-separated names (default: all of the mode's table)")
    p.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=20_000)
    p.add_argument("--n-test", type=int, default=100)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--until", default=None, help="demo mode: stop after this stage")
    p.add_argument("--base", default=None, help="demo mode: a demo directory whose finished stages every variant starts from")
    p.add_argument("--base-until", default=None, help="demo mode: copy only the base's stages up to this one")
    p.add_argument("--set", action="append", default=[], metavar="NAME:stage.field=value",
                   help="demo mode: an override for variant NAME (repeatable); a variant is any NAME used here")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.mode == "collect":
        print(json.dumps(collect(args.out), indent=1))
        return 0
    ctx = multiprocessing.get_context("spawn")
    jobs = []
    if args.mode == "ladder":
        names = args.variants.split(",") if args.variants else list(LADDER)
        jobs = [(run_ladder_variant, n, LADDER[n], str(args.out), args.threads, args.n_train, args.n_test, args.seed) for n in names]
    else:
        sets: dict[str, list[str]] = {}
        for s in args.set:
            n, _, kv = s.partition(":")
            sets.setdefault(n, []).append(kv)
        names = args.variants.split(",") if args.variants else list(sets) or ["base"]
        jobs = [(run_demo_variant, n, sets.get(n, []), str(args.out), args.threads, args.seed, args.quick, args.until, args.base, args.base_until)
                for n in names]
    t0 = time.perf_counter()
    results = []
    with concurrent.futures.ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
        futs = [pool.submit(_guard, fn, name, *rest) for fn, name, *rest in jobs]
        for f in concurrent.futures.as_completed(futs):
            r = f.result()
            results.append(r)
            print(f"[{time.perf_counter() - t0:6.0f}s] {r['variant']}: {'ERROR ' + r['error'] if 'error' in r else 'done'}", flush=True)
    (args.out / f"{args.mode}_results.json").write_text(json.dumps(results, indent=1))
    if args.mode == "ladder":
        print("variant     loss    train_s " + " ".join(f"L{L:<4}" for L in LENGTHS))
        for r in sorted(results, key=lambda r: r["variant"]):
            if "error" in r:
                continue
            a = r["greedy_accuracy_by_length"]
            print(f"{r['variant']:<11} {r['final_loss']:.4f} {r['train_seconds']:7.0f} " + " ".join(f"{a[L]:.2f} " for L in LENGTHS))
    else:
        for r in sorted(results, key=lambda r: r["variant"]):
            if "error" in r:
                continue
            print(f"== {r['variant']} ({r['seconds']:.0f}s) {r['sets']}")
            for stage, b in r["brief"].items():
                print(f"   {stage:<16} {json.dumps(b)[:400]}")
            for t in r.get("targets") or []:
                print(f"   {t['name']:<28} {t['value']!s:<24} {'met' if t['met'] else 'MISSED'} {t.get('ci', '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
