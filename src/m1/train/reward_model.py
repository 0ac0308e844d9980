"""Training an outcome reward model, the verifier of verify@k: a causal LM with a one-logit
classification head, trained on graded (problem, completion, correct) triples.

The policy's own samples, graded by m1's grader, are the data (M1's verifier setting in
miniature). The loss is binary cross-entropy, the positive class weighted by the
negative/positive ratio (clamped to [0.2, 5]) so a rare label is still learned. The input
is encoded exactly as `m1.eval.verifiers.RewardModelVerifier.score` encodes it (problem,
then the completion's last `MAX_SOLUTION_CHARS` characters, as a text pair), and the output
is a transformers sequence-classification checkpoint that it loads.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelledSample:
    problem: str
    completion: str
    correct: bool


@dataclass
class RewardModelConfig:
    """One reward-model run."""

    base: str  # causal LM directory the classifier starts from (Llama/Qwen2 through transformers)
    out: str
    steps: int = 60
    batch_size: int = 32
    learning_rate: float = 3e-4
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    max_length: int = 1024
    seed: int = 0
    log_every: int = 10


@dataclass
class RewardModelResult:
    samples: int
    positive_fraction: float
    losses: list[tuple[int, float]]  # (step, loss), every `log_every` steps and the last
    seconds: float
    model: str


def samples_from_rows(rows: list[dict], problems: dict[str, str]) -> list[LabelledSample]:
    """Labelled samples from the eval loop's samples.jsonl rows (`m1.eval.samples`); ``problems`` maps problem_id to its text."""
    return [LabelledSample(problems[r["problem_id"]], r["text"], bool(r["correct"])) for r in rows]


def _with_new_head(cls, base: str):
    """The base model with a fresh one-logit head. transformers reports the head's weights as
    missing from the checkpoint, which is expected here (the head is what training builds),
    so its load report is silenced and one line says what happened instead."""
    import transformers

    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        model = cls.from_pretrained(base, num_labels=1)
    finally:
        transformers.logging.set_verbosity(level)
    log.info("reward model: %s with a new one-logit head (initialised here, trained below)", base)
    return model


def train_reward_model(cfg: RewardModelConfig, data: list[LabelledSample]) -> RewardModelResult:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from m1.eval.verifiers import MAX_SOLUTION_CHARS

    if not data:
        raise ValueError("train_reward_model: no labelled samples")
    tok = AutoTokenizer.from_pretrained(cfg.base)
    tok.padding_side = "right"
    torch.manual_seed(cfg.seed)
    model = _with_new_head(AutoModelForSequenceClassification, cfg.base)
    model.config.pad_token_id = tok.pad_token_id
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    pos = sum(d.correct for d in data)
    pos_weight = torch.tensor((len(data) - pos) / max(pos, 1.0)).clamp(0.2, 5.0)
    rng = random.Random(cfg.seed)
    losses: list[tuple[int, float]] = []
    model.train()
    t0 = time.perf_counter()
    for step in range(cfg.steps):
        batch = rng.sample(data, min(cfg.batch_size, len(data)))
        enc = tok([b.problem for b in batch], [b.completion[-MAX_SOLUTION_CHARS:] for b in batch], return_tensors="pt",
                  padding=True, truncation=True, max_length=cfg.max_length)
        enc.pop("token_type_ids", None)
        logits = model(**enc).logits[:, 0]
        y = torch.tensor([float(b.correct) for b in batch])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, pos_weight=pos_weight)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        opt.step()
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            losses.append((step, round(loss.item(), 6)))
            log.info("verifier step %d loss %.4f", step, loss.item())
    model.eval()
    out = Path(cfg.out)
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    result = RewardModelResult(samples=len(data), positive_fraction=pos / len(data), losses=losses,
                                 seconds=time.perf_counter() - t0, model=str(out))
    (out / "train_log.json").write_text(json.dumps(result.__dict__))
    return result
