"""The demo's output: summary.json (results, targets, versions), report.md and the plots.

Everything here is read from the stages' markers and the evaluation samples they left; the
numbers come from `m1.eval` (metrics, intervals, scaling curves), never from a tally of
this module's own.
"""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from m1.demo.config import BASELINE, HYBRID, Context

TARGETS = (  # name, what it measures, when it holds (the table)
    ("teacher_hard_in_range", "teacher's hard greedy accuracy", "0.10 <= value <= 0.60"),
    ("distill_easy_vs_teacher", "hybrid's easy greedy accuracy after distill / teacher's", ">= 0.95"),
    ("sft_hard_vs_teacher_trained", "hybrid's hard pass@1 after SFT - teacher's after the same SFT", ">= -0.03"),
    ("grpo_gain", "hybrid's hard pass@1 after GRPO - after SFT (paired bootstrap ci)", ">= 0.05 and ci[0] > 0"),
    ("maj_gain", "final hybrid's maj@k - pass@1 on hard, k = the teacher-trained model's samples (paired ci)", "ci[0] > 0"),
    ("verify_vs_maj", "final hybrid's verify@k - maj@k on hard, same k (paired ci); verify@k = verifier-weighted vote", ">= 0"),
    ("equal_time_win", "smallest (hybrid - teacher-trained) maj@k(T) over budgets giving both >= 1 sample", "> 0"),
    ("constant_baseline", "best constant answer's accuracy, worst test split", "<= 0.03"),
    ("wall_time", "seconds of the full run (its stages' wall time)", "<= 1200"),
)


def environment() -> dict:
    """Versions and CPU model, so a number can be traced to the software and machine that made it."""
    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    cpu = platform.processor() or None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return {"python": platform.python_version(), "torch": version("torch"), "transformers": version("transformers"),
            "trl": version("trl"), "m1": version("m1"), "platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count()}


def _rows(ctx: Context, name: str, key: str) -> list[dict]:
    from m1.eval.samples import read_samples

    return read_samples(ctx.path("eval", name, key, "samples.jsonl"))


def _paired(a: dict[str, float], b: dict[str, float]) -> tuple[float, list[float]]:
    from m1.eval.metrics import paired_difference_interval

    ids = sorted(set(a) & set(b), key=lambda x: (len(x), x))
    mean, lo, hi = paired_difference_interval([a[i] for i in ids], [b[i] for i in ids])
    return mean, [lo, hi]


def budget_curves(ctx: Context) -> dict:
    """hard_k accuracy against samples and against wall-clock budget, final hybrid vs teacher-trained:
    `m1 scaling`'s curves (`m1.eval.scaling`), over its time grid."""
    from m1.eval.scaling import accuracy_by_k, budget_curve, time_grid

    ev = ctx.results["eval"]["models"]
    curves = {}
    for name in (HYBRID, BASELINE):
        s = ev[name]["hard_k"]
        rows = _rows(ctx, name, "hard_k")
        curves[name] = {"samples_per_s": s["samples_per_s"], "n": s["n"], "rows": rows, "by_k": accuracy_by_k(rows, s["n"])}
    budgets = time_grid([(c["samples_per_s"], c["n"]) for c in curves.values()])
    for c in curves.values():
        c["by_time"] = budget_curve(c.pop("rows"), c["n"], c["samples_per_s"], budgets)
    return curves


def targets(ctx: Context, summary: dict) -> list[dict]:
    from m1.eval.samples import per_problem

    r = ctx.results
    out: list[dict] = []

    def add(name: str, value: float | None, threshold: str, met: bool, ci: list[float] | None = None, **extra):
        rec: dict[str, Any] = {"name": name, "value": value, "threshold": threshold}
        if ci is not None:
            rec["ci"] = ci
        rec["met"] = bool(met) if value is not None else False
        rec.update(extra)
        out.append(rec)

    init = r.get("eval_init", {})
    t_hard = init.get("teacher", {}).get("hard")
    add("teacher_hard_in_range", t_hard and t_hard["accuracy"], "0.10 <= value <= 0.60",
        t_hard is not None and 0.10 <= t_hard["accuracy"] <= 0.60, t_hard and t_hard["ci95"])
    ev = r.get("eval", {}).get("models", {})
    t_easy = init.get("teacher", {}).get("easy")
    dist = r.get("eval_distill", {})
    if "distill" in dist and t_easy:
        d, t = dist["distill"]["easy"]["accuracy"], t_easy["accuracy"]
        v = d / t if t else 0.0
        extra = {}
        if "distill_m1" in dist:
            extra["m1_recipe"] = dist["distill_m1"]["easy"]["accuracy"] / t if t else 0.0
        add("distill_easy_vs_teacher", v, ">= 0.95", v >= 0.95, distill=d, teacher=t, problems=dist["distill"]["easy"]["n"], **extra)
    if "sft" in ev and "teacher_sft" in ev:
        v = ev["sft"]["hard"]["pass@1"]["mean"] - ev["teacher_sft"]["hard"]["pass@1"]["mean"]
        add("sft_hard_vs_teacher_trained", v, ">= -0.03", v >= -0.03)
    if "grpo" in ev and "sft" in ev:
        n_g, n_s = ev["grpo"]["hard"]["n"], ev["sft"]["hard"]["n"]
        v, ci = _paired(per_problem(_rows(ctx, "grpo", "hard"), n_g, "pass@1"), per_problem(_rows(ctx, "sft", "hard"), n_s, "pass@1"))
        add("grpo_gain", v, ">= 0.05 and ci[0] > 0", v >= 0.05 and ci[0] > 0, ci, problems=ev["grpo"]["hard"]["problems"])
    if HYBRID in ev and "hard_k" in ev[HYBRID]:
        n = ev[HYBRID]["hard_k"]["n"]
        k = ev.get(BASELINE, {}).get("hard_k", {}).get("n", n)
        rows = _rows(ctx, HYBRID, "hard_k")
        p1, maj = per_problem(rows, n, "pass@1"), per_problem(rows, n, "maj@k", k)
        v, ci = _paired(maj, p1)
        add("maj_gain", v, "ci[0] > 0", ci[0] > 0, ci, k=k, n=n)
        if all("verifier_score" in x for x in rows):
            v, ci = _paired(per_problem(rows, n, "weighted_vote@k", k), maj)
            best_of, _ = _paired(per_problem(rows, n, "verify@k", k), maj)
            add("verify_vs_maj", v, ">= 0", v >= 0, ci, k=k, n=n, method="verifier-weighted vote (likelihood verifier)",
                best_of_k_minus_maj=best_of)
    if "accuracy_vs_budget" in summary:
        c = summary["accuracy_vs_budget"]
        # budgets where both models have at least one sample and neither has run out of them
        lo = max(1 / c[m]["samples_per_s"] for m in (HYBRID, BASELINE))
        hi = min(c[m]["n"] / c[m]["samples_per_s"] for m in (HYBRID, BASELINE))
        hy = {round(t, 9): m for t, _, _, m in c[HYBRID]["by_time"] if lo - 1e-12 <= t <= hi + 1e-12}
        ba = {round(t, 9): m for t, _, _, m in c[BASELINE]["by_time"] if lo - 1e-12 <= t <= hi + 1e-12}
        common = sorted(set(hy) & set(ba))
        if common:
            v = min(hy[t] - ba[t] for t in common)
            add("equal_time_win", v, "> 0", v > 0, budgets=len(common))
    base = r.get("data", {}).get("constant_baseline")
    if base:
        worst = max(base, key=lambda s: base[s]["accuracy"])
        v = base[worst]["accuracy"]
        add("constant_baseline", v, "<= 0.03", v <= 0.03, split=worst, answer=base[worst]["answer"])
    wall = summary["total_seconds"]
    add("wall_time", wall, "<= 1200", wall <= 1200)
    for t in out:
        t["applies"] = not ctx.cfg.quick or t["name"] == "constant_baseline"
    return out


def wall_seconds(results: dict[str, dict]) -> float:
    """The run's wall time from its stages' markers: the sum of stage times, each parallel
    group counted once at its own wall time (its members overlap)."""
    from m1.demo.stages import STAGES

    groups = {s.name: s.group for s in STAGES}
    total, seen = 0.0, set()
    for name, res in results.items():
        g = groups.get(name)
        if g and "group_wall_seconds" in res:
            if g not in seen:
                seen.add(g)
                total += res["group_wall_seconds"]
        else:
            total += res.get("stage_seconds") or 0
    return round(total, 1)


def demo_summary(ctx: Context) -> dict:
    """summary.json: every stage's results, the evaluation table, the curves and the targets."""
    r = ctx.results
    summary: dict[str, Any] = {
        "mode": "quick" if ctx.cfg.quick else "full", "seed": ctx.cfg.seed, "threads": ctx.cfg.threads,
        "work": stage_work(ctx.cfg),
        "environment": environment(),
        "stages": dict(r),
        "stage_seconds": {name: res.get("stage_seconds") for name, res in r.items()},
        # the stages' own times: a rerun that skips every stage keeps the first run's
        "total_seconds": wall_seconds(r),
        "constant_baseline": r.get("data", {}).get("constant_baseline", {}),
    }
    summary["accuracy"] = {f"{m}/{d}": v["accuracy"] for st in ("eval_init", "eval_distill") for m, by_d in r.get(st, {}).items()
                           if isinstance(by_d, dict) for d, v in by_d.items() if isinstance(v, dict)}
    ev = r.get("eval", {}).get("models", {})
    table = []
    for name, by_d in ev.items():
        for d, s in by_d.items():
            n = s["n"]
            row = {"model": name, "set": d, "problems": s["problems"], "n": n, "pass@1": s["pass@1"]["mean"],
                   "ci95": s["pass@1"]["ci95"], f"pass@{n}": s["pass@k"][str(n)], f"maj@{n}": s["maj@k"][str(n)],
                   "samples_per_s": s["samples_per_s"]}
            if "verify@k" in s:
                row[f"verify@{n}"] = s["verify@k"][str(n)]
                row[f"weighted_vote@{n}"] = s["weighted_vote@k"][str(n)]
            table.append(row)
    summary["table"] = table
    if "grpo" in r:
        summary["grpo_reward_curve"] = r["grpo"]["reward_curve"]
    if "speed" in r:
        sp = r["speed"]
        summary["speed"] = {k: sp[k] for k in ("lengths", "hybrid_over_teacher", "hybrid_overtakes_at")}
    if HYBRID in ev and BASELINE in ev:
        curves = budget_curves(ctx)
        summary["accuracy_vs_budget"] = curves
        summary["plots"] = make_plots(ctx, summary, curves)
    summary["targets"] = targets(ctx, summary)
    return summary


def _ci_axis(ax, values: list[float]) -> None:
    """A y axis that fits the data (with room for the intervals), not always 0..1."""
    top = max(values + [0.05])
    ax.set_ylim(0, min(1.03, top * 1.15 + 0.02))


def make_plots(ctx: Context, summary: dict, curves: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from m1.eval.scaling import plot_scaling

    out = ctx.cfg.out
    paths = []
    ev = ctx.results["eval"]["models"]
    init = ctx.results.get("eval_init", {})
    base = summary["constant_baseline"]
    # left: greedy easy accuracy through distillation; right: sampled hard pass@1 after SFT and GRPO
    easy = [(m, init[m]["easy"]["accuracy"], init[m]["easy"]["ci95"]) for m in ("teacher", "hybrid_init") if "easy" in init.get(m, {})]
    dist = ctx.results.get("eval_distill", {})
    easy += [(m, dist[m]["easy"]["accuracy"], dist[m]["easy"]["ci95"]) for m in ("distill_m1", "distill") if m in dist]
    hard = [("teacher", init["teacher"]["hard"]["accuracy"], init["teacher"]["hard"]["ci95"])] if "hard" in init.get("teacher", {}) else []
    hard += [(m, ev[m]["hard"]["pass@1"]["mean"], ev[m]["hard"]["pass@1"]["ci95"]) for m in ("teacher_sft", "sft", "teacher_grpo", "grpo")
             if "hard" in ev.get(m, {})]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [max(1, len(easy)), max(1, len(hard))]})
    panels = ((axes[0], easy, "easy", "greedy accuracy, easy test"),
              (axes[1], hard, "hard", f"pass@1 (T={ctx.results['eval']['temperature']}), hard test; teacher greedy"))
    for ax, bars, split, ylabel in panels:
        if not bars:
            ax.set_axis_off()
            continue
        names, ms, cis = zip(*bars)
        colors = ["C1" if m.startswith("teacher") else "C0" for m in names]
        ax.bar(range(len(names)), ms, color=colors,
               yerr=[[m - c[0] for m, c in zip(ms, cis)], [c[1] - m for m, c in zip(ms, cis)]], capsize=3)
        if split in base:
            ax.axhline(base[split]["accuracy"], color="k", linestyle=":", linewidth=1,
                       label=f"constant answer {base[split]['answer']!r}: {base[split]['accuracy']:.1%}")
            ax.legend(fontsize=7, loc="best")
        ax.set_xticks(range(len(names)), names, fontsize=8, rotation=20)
        ax.set_xlabel("model (stage)")
        ax.set_ylabel(ylabel, fontsize=8)
        _ci_axis(ax, [c[1] for c in cis])
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("Accuracy through the stages (95% CI; orange: teacher line, blue: hybrid line)")
    fig.tight_layout()
    fig.savefig(out / "accuracy_by_stage.png", dpi=110)
    plt.close(fig)
    paths.append("accuracy_by_stage.png")
    label = {HYBRID: "hybrid (final)", BASELINE: "teacher-trained"}
    named = {label[m]: c for m, c in curves.items()}
    plot_scaling(named, out / "accuracy_vs_samples.png", "hard test")
    paths.append("accuracy_vs_samples.png")
    fig, ax = plt.subplots(figsize=(6, 4))
    ys = []
    for m, c in named.items():
        ts = [t for t, *_ in c["by_time"]]
        ax.plot(ts, [x[3] for x in c["by_time"]], marker="o", label=f"{m} maj@k(T)")
        ax.plot(ts, [x[2] for x in c["by_time"]], linestyle="--", label=f"{m} pass@k(T)")
        ys += [x[2] for x in c["by_time"]] + [x[3] for x in c["by_time"]]
    ax.set_xscale("log")
    ax.set_xlabel("wall-clock budget per problem T (s); k(T) = floor(T x samples/s)")
    ax.set_ylabel("hard test accuracy")
    ax.set_title("Equal wall-clock: final hybrid vs teacher-trained")
    _ci_axis(ax, ys)
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
            ax.plot([x["length"] for x in rows], [x["tokens_per_s"] for x in rows], marker="o",
                    label={"teacher": "teacher-trained", "hybrid": "hybrid (final)"}.get(m, m))
        ax.set_xlabel("generated tokens per sequence")
        ax.set_ylabel(f"tokens/s (batch {sp['batch']}, one thread per process)")
        ax.set_title("Engine decode throughput on this CPU")
        ax.set_xscale("log", base=2)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "throughput_vs_length.png", dpi=110)
        plt.close(fig)
        paths.append("throughput_vs_length.png")
    return paths


def _pct(x: float) -> str:
    return f"{x:.1%}"


def _target_value(t: dict) -> str:
    v = t["value"]
    if v is None:
        return "-"
    s = f"{v:.1f}" if t["name"] == "wall_time" else f"{v:.3f}"
    if "ci" in t and t["ci"] is not None:
        s += f" [{t['ci'][0]:.3f}, {t['ci'][1]:.3f}]"
    return s


def _target_met(t: dict, mode: str) -> str:
    if t["applies"]:
        return "met" if t["met"] else "**MISSED**"
    return f"n/a in {mode} mode ({'met' if t['met'] else 'not met'})"


def targets_table(summary: dict) -> list[str]:
    lines = ["| target | value [95% CI] | holds when | met |", "| --- | --- | --- | --- |"]
    for t in summary["targets"]:
        lines.append(f"| {t['name']} | {_target_value(t)} | {t['threshold']} | {_target_met(t, summary['mode'])} |")
    return lines


def design_section(summary: dict) -> list[str]:
    """How the demo maps to M1, why its task is shaped as it is, and the fixed work of each stage."""
    st = summary["stages"]
    levels = st.get("data", {}).get("levels", {})
    lines = ["## Design", ""]
    if levels:
        pre, easy, hard = levels.get("pretrain", {}), levels.get("easy", {}), levels.get("hard", {})
        lines += [f"**Task ladder.** Chained arithmetic; a level is a range of chain lengths. The teacher pretrains on short chains "
                  f"only: easy ({easy.get('min_steps')}-{easy.get('max_steps')} steps) and longer pretraining chains "
                  f"({pre.get('min_steps')}-{pre.get('max_steps')}). A transformer this small does not extrapolate in length "
                  f"(trained on 2..K steps it solves almost none of K+1 or more: studies/results/demo_ladder_*.json), so the hard "
                  f"level ({hard.get('min_steps')}-{hard.get('max_steps')} steps) straddles that edge: the teacher solves its "
                  "shortest chains and not its longest, which puts its greedy hard accuracy between 10% and 60%, and leaves SFT on "
                  "hard traces and GRPO something to teach. Every solution line is one computation.", ""]
    lines += ["**Stages and M1.** Stage 0 (M1: Llama-3.2-3B-Instruct) is the teacher's pretraining. `convert` is M1's "
              "attention-to-Mamba initialisation, with two changes measured on a real model (docs/distill_study.md): "
              "the layers kept as attention are chosen by measurement, and the Mamba layers are calibrated. `distill` is "
              "M1's stage 1 as a staged recipe (align the new mixers to their attention layers, then forward KL); "
              "`distill_m1` is M1's own recipe (even placement, attention copy, reverse KL) at the same steps and text, "
              "for comparison. `sft` is M1's stage 2 (hard traces), `grpo` its stage 3 (rewarded by the grader). "
              "`teacher_sft`/`teacher_grpo` put the teacher through the same two stages: M1's comparison with a "
              "transformer trained the same way. `verifier`, `eval` and `speed` are M1's test-time-compute measures.", ""]
    work = summary.get("work") or []
    if work:
        lines += ["**Work of each stage** (fixed by the config; the same on every machine):", "", "| stage | work |", "| --- | --- |"]
        lines += [f"| {name} | {what} |" for name, what in work] + [""]
    return lines


def stage_work(cfg) -> list[tuple[str, str]]:
    """(stage, its fixed amount of work) from a DemoConfig, for the report."""
    t, c, d, s, g, v, e, ie = cfg.teacher, cfg.convert, cfg.distill, cfg.sft, cfg.grpo, cfg.verifier, cfg.eval, cfg.init_eval
    return [
        ("teacher", f"{t.steps} steps x {t.batch_size} problems ({cfg.task.pretrain_fraction:.0%} of batches longer chains), lr {t.lr}"),
        ("convert", f"calibration on {c.calibration_sequences} x {c.calibration_seq_len} tokens, {c.fit_steps} fit steps per layer"
                    + ("" if cfg.attention_layers is not None else "; placement ranked over every layer")),
        ("eval_init", f"greedy: {ie.n_easy} easy (teacher, hybrid at init), {ie.n_hard} hard (teacher)"),
        ("distill", f"{d.steps} steps x {d.batch} conversations ({d.align_fraction:.0%} align, then {d.loss}), lr {d.lr}, {d.n_texts} texts"),
        ("distill_m1", "same steps, batch and text, reverse KL" if d.m1_baseline else "off"),
        ("sft / teacher_sft", f"{s.steps} steps x {s.batch} packed rows of {s.max_length} tokens ({s.n_hard} hard + {s.n_easy} easy conversations), lr {s.lr}"),
        ("grpo / teacher_grpo", f"{g.steps} optimizer steps, {g.generation_batch // g.generations} prompts x {g.generations} rollouts per round "
                                f"(T {g.temperature}, <= {g.max_tokens} tokens), mini-batch {g.mini_batch}, lr {g.lr}"),
        ("verifier", f"no training: {v.model} read as a likelihood verifier; checked on {v.n_pairs} reference / one-slip pairs"),
        ("eval", f"hard pass@1: {e.n_hard} problems x {e.n_hard_samples} samples (T {e.temperature}) for sft and grpo, x 1 for teacher_sft and teacher_grpo; "
                 f"scaling: {e.scaling_problems} problems x {e.scaling_n_hybrid} (hybrid) / {e.scaling_n} (teacher-trained)"),
    ]


def write_demo_report(summary: dict, path: Path) -> None:
    """report.md from a `demo_summary`."""
    st = summary["stages"]
    env = summary["environment"]
    lines = [f"# m1 demo ({summary['mode']} mode, seed {summary['seed']}, {summary['threads']} threads)", "",
             f"Python {env['python']}, torch {env['torch']}, transformers {env['transformers']}, TRL {env['trl']}; "
             f"CPU {env['cpu']} ({env['cpu_count']} cores). Wall time (sum of stage times): {summary['total_seconds']:.0f} s.", ""]
    lines += ["## Targets", ""] + targets_table(summary) + [""]
    lines += design_section(summary)
    base = summary["constant_baseline"]
    if base:
        lines += ["Constant-answer baseline (always answering a split's most frequent gold answer): "
                  + "; ".join(f"{d} {_pct(b['accuracy'])} (answer {b['answer']!r}, {b['n']} problems)" for d, b in base.items()), ""]
    tok = st.get("tokenizer")
    if tok:
        lines += [f"Task: chained small-number arithmetic. Tokenizer vocab {tok['vocab_size']}; hard solutions are "
                  f"{tok['hard_to_easy_token_ratio']:.1f}x as long as easy ones in tokens.", ""]
    teacher = st.get("teacher")
    if teacher:
        lines += [f"Teacher: Llama, {teacher['params']:,} parameters, trained {teacher['config']['steps']} steps in "
                  f"{teacher['train_seconds']}s (loss {teacher['first_loss']:.3f} -> {teacher['final_loss']:.3f}).", ""]
    conv = st.get("convert")
    if conv:
        lines += [f"Hybrid: attention kept at layers {conv['attention_layers']} of {conv['num_layers']}, Mamba-2 {conv['mamba_shape']}.", ""]
        pl = conv.get("placement")
        if pl:
            lines += ["Measured placement (`m1.convert.placement`): KL(teacher || hybrid) with each layer restored alone as attention "
                      "in an all-Mamba calibrated student (lower: that layer's attention matters more); all Mamba "
                      f"{pl['kl_all_mamba']:.3f}; " + ", ".join(f"layer {r['layer']} {r['kl']:.3f}" for r in sorted(pl["ranking"], key=lambda r: r["layer"]))
                      + f". Kept: {pl['chosen']}. M1's even spacing would keep {conv.get('m1_attention_layers')}.", ""]
    lines += ["## Greedy accuracy (m1.eval, temperature 0)", "", "| model | set | accuracy [95% CI] | constant answer | correct / n |",
              "| --- | --- | --- | --- | --- |"]
    for model, by_d in [*st.get("eval_init", {}).items(), *st.get("eval_distill", {}).items()]:
        for d, v in (by_d.items() if isinstance(by_d, dict) else ()):
            if isinstance(v, dict):
                lines.append(f"| {model} | {d} test | {_pct(v['accuracy'])} [{_pct(v['ci95'][0])}, {_pct(v['ci95'][1])}] | "
                             f"{_pct(base[d]['accuracy']) if d in base else '-'} | {v['correct']} / {v['n']} |")
    lines.append("")
    init = st.get("init_kl")
    if init:
        lines += ["## KL(teacher || hybrid) at conversion", "",
                  f"On {init['texts']} held-out test sequences ({init['tokens']} tokens), nats/token: "
                  f"{init['converted_init']} init (the hybrid the demo trains) {init['kl_converted']:.3f}; "
                  f"attention copy at the same layers {init['kl_attention']:.3f}; attention copy at M1's placement "
                  f"{init['m1_attention_layers']} (where M1's recipe starts) {init['kl_m1_start']:.3f}; random init "
                  + ", ".join(f"{x:.3f}" for x in init["kl_random"]) + " (seeds 0-2).", ""]
    tr = [(k, st[k]) for k in ("distill", "distill_m1", "sft", "teacher_sft", "grpo", "teacher_grpo") if k in st]
    if tr:
        lines += ["## Training stages (m1.train recipes)", "", "| stage | steps | seconds | first -> last logged |", "| --- | --- | --- | --- |"]
        for k, v in tr:
            curve = v.get("reward_curve") or v.get("loss_curve") or []
            what = "reward" if v.get("reward_curve") else "loss"
            span = f"{what} {curve[0][1]:.4f} -> {curve[-1][1]:.4f}" if curve else "-"
            steps = v["config"].get("max_steps") if isinstance(v.get("config"), dict) else None
            lines.append(f"| {k} | {steps or (curve[-1][0] if curve else '?')} | {v['train_seconds']} | {span} |")
        lines.append("")
    ver = st.get("verifier")
    if ver and "pairwise_accuracy" in ver:
        lines += [f"Verifier: `{ver['verifier_of']}` read as a likelihood verifier (a sample's score is the probability of its least "
                  f"likely token; no training). On {ver['pairs']} held-out hard training problems it scores the reference solution "
                  f"above a copy with one step's slip {_pct(ver['pairwise_accuracy'])} of the time (chance 50%).", ""]
    if summary.get("table"):
        e = st["eval"]
        lines += ["## Accuracy of every stage (Engine, sampled, m1.eval)", "",
                  f"Temperature {e['temperature']}; samples per problem: " + ", ".join(f"{m} {n}" for m, n in e["n"].items())
                  + ". With the verifier: best-of-n (the top-scored sample) and the verifier-weighted vote "
                  "(the answer whose samples carry the most verifier probability). 'const' is the split's constant-answer baseline.", "",
                  "| model | set | problems | pass@1 [95% CI] | const | pass@n | maj@n | best-of-n | weighted vote@n | samples/s |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for row in summary["table"]:
            n = row["n"]
            ver = row.get(f"verify@{n}")
            wv = row.get(f"weighted_vote@{n}")
            split = "easy" if row["set"].startswith("easy") else "hard"
            lines.append(f"| {row['model']} | {row['set']} | {row['problems']} | {_pct(row['pass@1'])} [{_pct(row['ci95'][0])}, "
                         f"{_pct(row['ci95'][1])}] | {_pct(base[split]['accuracy']) if split in base else '-'} | "
                         f"{_pct(row[f'pass@{n}'])} (n={n}) | {_pct(row[f'maj@{n}'])} | {'-' if ver is None else _pct(ver)} | "
                         f"{'-' if wv is None else _pct(wv)} | {row['samples_per_s']:.1f} |")
        lines += ["", "![accuracy by stage](accuracy_by_stage.png)", ""]
    if "accuracy_vs_budget" in summary:
        lines += ["## Accuracy against wall-clock budget (hard test)", "",
                  "k(T) = floor(T x samples/s), samples/s measured for each model in its own eval run.", "",
                  "| model | T (s) | k | pass@k | maj@k |", "| --- | --- | --- | --- | --- |"]
        for m, c in summary["accuracy_vs_budget"].items():
            for t, k, p, mj in c["by_time"]:
                lines.append(f"| {m} | {t:.3g} | {k} | {_pct(p)} | {_pct(mj)} |")
        lines += ["", "![accuracy vs time](accuracy_vs_time.png)", "", "![accuracy vs samples](accuracy_vs_samples.png)", ""]
    sp = st.get("speed")
    if sp:
        names = list(sp["throughput"])
        lines += ["## Engine throughput on this CPU", "", "| length | " + " | ".join(names) + " | hybrid / teacher |",
                  "| --- | " + " | ".join("---" for _ in names) + " | --- |"]
        for i, length in enumerate(sp["lengths"]):
            lines.append(f"| {length} | " + " | ".join(f"{sp['throughput'][m][i]['tokens_per_s']:.0f}" for m in names)
                         + f" | {sp['hybrid_over_teacher'][i]:.2f} |")
        lines += ["", "![throughput](throughput_vs_length.png)", ""]
    lines += ["## Stage times", "", "| stage | seconds |", "| --- | --- |"]
    lines += [f"| {name} | {sec} |" for name, sec in summary["stage_seconds"].items()]
    path.write_text("\n".join(lines) + "\n")


__all__ = ["environment", "demo_summary", "targets", "targets_table", "write_demo_report", "make_plots"]
