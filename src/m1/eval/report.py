"""report.md and PNG plots from summaries (matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(summaries: dict[str, dict], path: Path) -> None:
    """pass@k, maj@k (and verify@k) against k, one panel per benchmark."""
    names = [b for b, s in summaries.items() if s.get("problems")]
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(4.5 * max(1, len(names)), 3.5), squeeze=False)
    for ax, b in zip(axes[0], names):
        s = summaries[b]
        for key in ("pass@k", "maj@k", "verify@k"):
            if key in s:
                ks = [int(k) for k in s[key]]
                ax.plot(ks, [s[key][str(k)] for k in ks], marker="o", label=key)
        if s.get("chance"):  # guessing from the benchmark's answers (m1.eval.metrics.guessing_pass_at_k)
            ks = [int(k) for k in s["chance"]["pass@k"]]
            ax.plot(ks, [s["chance"]["pass@k"][str(k)] for k in ks], linestyle="--", color="grey", label="chance pass@k")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("k (samples)")
        ax.set_ylabel("accuracy")
        ax.set_title(b)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _cell(s: dict, key: str, k: str) -> str:
    """A percentage, with its 95% interval where the summary has one (pass@k, maj@k)."""
    ci = s.get(f"{key}_ci95", {}).get(k)
    return f"{100 * s[key][k]:.1f}" + (f" ({100 * ci[0]:.1f}-{100 * ci[1]:.1f})" if ci else "")


def write_report(summaries: dict[str, dict], out: Path, title: str) -> Path:
    """report.md with a table per benchmark and the curves plot beside it."""
    plot_curves(summaries, out / "curves.png")
    lines = [f"# {title}", "", "![pass@k and maj@k](curves.png)", ""]
    for b, s in summaries.items():
        if not s.get("problems"):
            lines += [f"## {b}", "", "no complete problems", ""]
            continue
        p1 = s["pass@1"]
        lines += [f"## {b}", "",
                  f"{s['problems']} problems, n={s['n']}. pass@1 = {100 * p1['mean']:.1f}% "
                  f"(95% CI {100 * p1['ci95'][0]:.1f}-{100 * p1['ci95'][1]:.1f}), mean tokens {s['mean_tokens']:.0f}, "
                  f"{100 * s['truncated_frac']:.1f}% truncated, {100 * s['no_answer_frac']:.1f}% without an answer, "
                  f"{s['samples_per_s']:.2f} samples/s.", ""]
        chance = s.get("chance")
        if chance:
            lines += [f"Chance: always answering {chance['constant_answer']!r} scores {100 * chance['constant_accuracy']:.1f}%; "
                      "k guesses drawn from the other problems' gold answers score the *chance pass@k* column.", ""]
        keys = [k for k in ("pass@k", "maj@k", "verify@k") if k in s]
        lines.append("| k | " + " | ".join(keys) + (" | chance pass@k" if chance else "") + " |")
        lines.append("|---|" + "---|" * (len(keys) + bool(chance)))
        for k in s["pass@k"]:
            cells = [_cell(s, key, k) for key in keys] + ([f"{100 * chance['pass@k'][k]:.1f}"] if chance else [])
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
        lines.append("")
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
