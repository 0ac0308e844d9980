"""How close a freshly converted hybrid is to its teacher: KL(teacher || hybrid) at init.

Used to choose the Mamba initialisation by measurement (attention-derived against
Mamba-2's random init, and the knobs of `MambaInit`), and reported by the demo.
"""

from __future__ import annotations

import logging
from dataclasses import asdict

import torch
import torch.nn.functional as F

from m1.convert import MambaInit, convert_from_transformer

log = logging.getLogger(__name__)


@torch.no_grad()
def token_kl(teacher, student, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> float:
    """Mean over real tokens of KL(p_teacher || p_student) of the next-token distributions."""
    t = F.log_softmax(teacher(input_ids, attention_mask=attention_mask).logits.float(), -1)
    s = F.log_softmax(student(input_ids, attention_mask=attention_mask).logits.float(), -1)
    kl = (t.exp() * (t - s)).sum(-1)
    if attention_mask is None:
        return kl.mean().item()
    m = attention_mask.float()
    return ((kl * m).sum() / m.sum()).item()


def conversion_kl(teacher, input_ids, attention_mask, attention_layers, init: MambaInit, seed: int = 0, **shape) -> float:
    student = convert_from_transformer(teacher, attention_layers, init=init, seed=seed, **shape).eval()
    return token_kl(teacher, student, input_ids, attention_mask)


def compare_inits(teacher, input_ids, attention_mask, attention_layers, seeds=(0, 1, 2), init: MambaInit | None = None, **shape) -> dict:
    """KL at conversion for attention init and random init over `seeds`, and their ratio."""
    init = init or MambaInit()
    att = [conversion_kl(teacher, input_ids, attention_mask, attention_layers, init, s, **shape) for s in seeds]
    rnd = [conversion_kl(teacher, input_ids, attention_mask, attention_layers, MambaInit(mode="random"), s, **shape) for s in seeds]
    mean_att, mean_rnd = sum(att) / len(att), sum(rnd) / len(rnd)
    result = {
        "attention_layers": list(attention_layers),
        "kl_attention_init": att,
        "kl_random_init": rnd,
        "mean_kl_attention_init": mean_att,
        "mean_kl_random_init": mean_rnd,
        "ratio": mean_att / mean_rnd,
        "worst_seed_ratio": max(a / r for a, r in zip(att, rnd)),
        "init": asdict(init),
    }
    log.info("KL(teacher||hybrid) at init: attention %.4f, random %.4f, ratio %.3f", mean_att, mean_rnd, result["ratio"])
    return result
