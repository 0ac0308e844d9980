"""Plot studies/results/distill_smollm2_*.jsonl: held-out KL and perplexity ratio against training tokens."""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

res = Path(sys.argv[1] if len(sys.argv) > 1 else "studies/results")
out = Path(sys.argv[2] if len(sys.argv) > 2 else "docs/distill_study.png")
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for recipe, style in (("staged", "o-"), ("m1-paper", "s--")):
    rows = [json.loads(l) for l in (res / f"distill_smollm2_{recipe}.jsonl").read_text().splitlines() if l.strip()]
    rows = [r for r in rows if r.get("stage") != "final"]
    x = [r["tokens"] / 1e6 for r in rows]
    axes[0].plot(x, [r["heldout_kl"] for r in rows], style, label=f"{recipe}: KL(teacher || hybrid)")
    axes[0].plot(x, [r["heldout_kl_reverse"] for r in rows], style, alpha=0.4, label=f"{recipe}: KL(hybrid || teacher)")
    axes[1].plot(x, [r["ppl_ratio"] for r in rows], style, label=f"{recipe}: 512 tokens")
    axes[1].plot(x, [r["ppl_ratio_2048"] for r in rows], style, alpha=0.4, label=f"{recipe}: 2,048 tokens")
axes[0].set_yscale("log")
axes[0].set_xlabel("student training tokens (millions, align stage included)")
axes[0].set_ylabel("held-out KL, nats/token (log scale)")
axes[0].set_title("SmolLM2-135M -> hybrid (6/30 attention, state 16): held-out KL")
axes[1].set_yscale("log")
axes[1].axhline(1.35, color="gray", ls=":", lw=1, label="target 1.35")
axes[1].set_xlabel("student training tokens (millions)")
axes[1].set_ylabel("perplexity ratio to the teacher (log scale)")
axes[1].set_title("Perplexity ratio on MATH500 text")
for ax in axes:
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
fig.tight_layout()
fig.savefig(out, dpi=120)
print(out)
