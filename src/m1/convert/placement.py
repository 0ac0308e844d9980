"""Measured attention placement (`--attention-layers auto:K`): which layers to keep as attention.

Uniform spacing ignores that some attention layers are far harder to replace than
others. Following the idea of hybrid-distillation's KL-guided selection, each layer is
ranked by restoring it alone as attention in an otherwise all-Mamba, calibrated student
and measuring KL(teacher || student) on held-out calibration rows: the lower the KL with
layer i restored, the more layer i's attention matters. The best K are kept.

The per-layer fitting of `m1.convert.calibrate` is teacher-forced here (each mixer reads the
teacher's hidden state), so the mixers fitted once serve every candidate: candidate i
differs from the all-Mamba student only at layer i. Each mixer is fitted on at least
`MIN_TOKENS_PER_CANDIDATE` tokens, whatever the time budget, so the ranking does not
come from undertrained mixers. (This ranks single restorations; it does not search
over sets, so interactions between kept layers are not measured.)
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace

import torch

from m1.convert.calibrate import CalibrationConfig, calibrate
from m1.convert.fidelity import token_kl
from m1.convert.mapping import convert_from_transformer, copy_attention
from m1.layers.attention import Attention
from m1.modeling import decoder_of

log = logging.getLogger(__name__)

MIN_TOKENS_PER_CANDIDATE = 500_000


@torch.no_grad()
def _swap_in_attention(student, teacher, i: int):
    """Make layer i of `student` an attention layer with the teacher's weights; return the undo function."""
    layer = student.model.layers[i]
    mixer = layer.mamba
    ref = next(student.parameters())
    attn = Attention(student.config, i).to(device=ref.device, dtype=ref.dtype)
    copy_attention(decoder_of(teacher).layers[i].self_attn, attn)
    del layer.mamba
    layer.self_attn = attn

    def undo():
        del layer.self_attn
        layer.mamba = mixer

    return undo


def rank_attention_layers(teacher, calibration_ids: torch.Tensor, k: int, config: CalibrationConfig | None = None,
                          min_fit_tokens: int | None = None, **shape) -> dict:
    """Rank every layer by the KL of restoring it alone as attention; return the ranking and the chosen K.

    ``min_fit_tokens``: tokens each mixer is fitted on at least; None reads
    `MIN_TOKENS_PER_CANDIDATE` at call time (the default suits real models; a tiny model whose
    ranking is clear after fewer, like the demo's, may pass less).
    """
    if min_fit_tokens is None:
        min_fit_tokens = MIN_TOKENS_PER_CANDIDATE
    cfg = config or CalibrationConfig()
    n = calibration_ids.shape[0]
    n_hold = max(1, n // 4)
    fit_ids, held = calibration_ids[: n - n_hold], calibration_ids[n - n_hold :]
    tokens_per_step = cfg.fit_batch * min(cfg.fit_seq_len or calibration_ids.shape[1], calibration_ids.shape[1])
    steps = max(cfg.fit_max_steps, math.ceil(min_fit_tokens / tokens_per_step))
    t0 = time.monotonic()
    log.info("placement: fitting all %d layers as Mamba candidates, %d steps each (>= %d tokens a mixer; the calibration "
             "time budget does not bound this phase), then ranking them", teacher.config.num_hidden_layers, steps, min_fit_tokens)
    device = next(teacher.parameters()).device  # fit and rank where the teacher is (a GPU if the caller put it there)
    student = convert_from_transformer(teacher, [], init="attention", seed=cfg.seed, **shape).to(device).eval()
    fit_ids, held = fit_ids.to(device), held.to(device)
    rep = calibrate(student, teacher, fit_ids, None, replace(cfg, inputs="teacher", fit_max_steps=steps, fit_seconds=float("inf")))
    base = token_kl(teacher, student, held)
    rows = []
    for i in range(student.config.num_hidden_layers):
        undo = _swap_in_attention(student, teacher, i)
        kl = token_kl(teacher, student, held)  # a layer runs whichever mixer it holds
        undo()
        rows.append({"layer": i, "kl": kl})
        log.info("placement: layer %d restored as attention: KL %.4f (all Mamba %.4f)", i, kl, base)
    order = sorted(rows, key=lambda r: r["kl"])
    chosen = sorted(r["layer"] for r in order[:k])
    return {
        "k": k,
        "chosen": chosen,
        "kl_all_mamba": base,
        "ranking": order,
        "fit_steps_per_layer": steps,
        "fit_tokens_per_candidate": steps * tokens_per_step,
        "heldout_tokens": held.numel(),
        "seconds": time.monotonic() - t0,
        "calibration_seconds": rep.seconds,
    }


def plot_ranking(ranking: dict, path) -> None:
    """Bar chart: KL with each layer restored alone as attention; chosen layers highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(ranking["ranking"], key=lambda r: r["layer"])
    xs = [r["layer"] for r in rows]
    ys = [r["kl"] for r in rows]
    colors = ["tab:orange" if x in ranking["chosen"] else "tab:blue" for x in xs]
    fig, ax = plt.subplots(figsize=(max(6, len(xs) * 0.3), 3.5))
    ax.bar(xs, ys, color=colors)
    ax.axhline(ranking["kl_all_mamba"], color="gray", ls="--", lw=1, label="all Mamba")
    lo, hi = min(ys + [ranking["kl_all_mamba"]]), max(ys + [ranking["kl_all_mamba"]])
    ax.set_ylim(max(0.0, lo - 0.1 * (hi - lo + 1e-9)), hi + 0.1 * (hi - lo + 1e-9))
    ax.set_xlabel("layer restored alone as attention")
    ax.set_ylabel("KL(teacher || student), nats/token")
    ax.set_title(f"Measured placement: the {ranking['k']} lowest-KL layers are kept (orange)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
