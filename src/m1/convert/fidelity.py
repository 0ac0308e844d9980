"""How close a hybrid is to its teacher: next-token KL and held-out fidelity.

`token_kl` and `compare_inits` measure KL(teacher || hybrid) at conversion (used to choose
the Mamba initialisation by measurement, attention-derived against Mamba-2's random init,
and reported by the demo; placement ranks layers by it); `fidelity` and its text helpers
are the fixed held-out measures of a distilled hybrid (issue 11).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict

import torch
import torch.nn.functional as F

from m1.convert.calibration_data import pack_rows
from m1.convert.mapping import MambaInit, convert_from_transformer

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


# ---------------------------------------------------------------- held-out fidelity (issue 11's fixed measures)


def math500_texts(path, limit: int | None = None) -> list[str]:
    """MATH500 as raw text, `problem + "\\n\\n" + solution`, no chat template (held-out text)."""
    from m1.jsonio import iter_records

    out = []
    for _, r in iter_records(path):
        out.append(f"{r['problem']}\n\n{r['solution']}")
        if limit and len(out) >= limit:
            break
    return out


def tokenize_texts(tokenizer, texts: list[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (ids, mask), each text cut at `max_len` tokens (BOS added when the tokenizer has one)."""
    rows = []
    for t in texts:
        ids = tokenizer(t, add_special_tokens=False)["input_ids"]
        if tokenizer.bos_token_id is not None:
            ids = [tokenizer.bos_token_id] + ids
        rows.append(ids[:max_len])
    L = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), L), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), L), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def joined_sequences(tokenizer, texts: list[str], length: int, count: int) -> torch.Tensor:
    """`count` rows of exactly `length` tokens made by joining texts end to end (long-context check)."""
    return pack_rows([tokenizer(t + "\n\n", add_special_tokens=False)["input_ids"] for t in texts], length, count)


@torch.no_grad()
def fidelity(teacher, student, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, batch: int = 8) -> dict:
    """Held-out closeness of `student` to `teacher` on the same tokens.

    - `heldout_kl`: forward KL(teacher || student) over the full vocabulary, mean over real
      next-token positions; `heldout_kl_reverse`: KL(student || teacher);
    - `ppl_ratio`: exp(student NLL - teacher NLL) on the real next tokens;
    - `top1_agreement`: how often the two argmax tokens agree.
    """
    sums = torch.zeros(5, dtype=torch.float64)  # fwd KL, rev KL, student NLL, teacher NLL, top-1 agree
    count = 0
    for s in range(0, input_ids.shape[0], batch):
        ids = input_ids[s : s + batch]
        m = None if attention_mask is None else attention_mask[s : s + batch]
        lt = F.log_softmax(teacher(ids, attention_mask=m).logits.float(), -1)[:, :-1]
        ls = F.log_softmax(student(ids, attention_mask=m).logits.float(), -1)[:, :-1]
        nxt = ids[:, 1:]
        real = torch.ones_like(nxt, dtype=torch.bool) if m is None else (m[:, 1:] * m[:, :-1]).bool()
        pt, ps = lt.exp(), ls.exp()
        fwd = (pt * (lt - ls)).sum(-1)
        rev = (ps * (ls - lt)).sum(-1)
        nll_s = -ls.gather(-1, nxt[..., None])[..., 0]
        nll_t = -lt.gather(-1, nxt[..., None])[..., 0]
        agree = (lt.argmax(-1) == ls.argmax(-1)).double()
        for j, v in enumerate((fwd, rev, nll_s, nll_t, agree)):
            sums[j] += v.double()[real].sum().item()
        count += int(real.sum())
    fwd, rev, nll_s, nll_t, agree = (sums / max(count, 1)).tolist()
    return {"heldout_kl": fwd, "heldout_kl_reverse": rev, "ppl_ratio": math.exp(nll_s - nll_t), "student_nll": nll_s,
            "teacher_nll": nll_t, "top1_agreement": agree, "tokens": count}
