"""Pretrain a tiny Llama teacher on the task from scratch, on CPU, in minutes.

The teacher uses grouped-query attention (fewer KV heads than query heads) so that
conversion to the hybrid has to expand KV heads, as it does for real Llama checkpoints.
Batches are drawn per difficulty so padding stays small: short easy sequences and long
hard ones are never padded to each other's length.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from m1.tasks.arithmetic import Problem
from m1.tasks.encode import Example, collate, encode_example

log = logging.getLogger(__name__)


@dataclass
class TeacherConfig:
    """Model shape and training schedule of the demo teacher."""

    hidden_size: int = 128
    intermediate_size: int = 384
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    max_position_embeddings: int = 512
    steps: int = 1000
    batch_size: int = 32
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 30
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    # Mostly easy batches: they are 4x shorter, and the per-line skills (copying the labelled
    # operation, one-step arithmetic) are shared; hard batches teach the later labels.
    hard_fraction: float = 0.2
    seed: int = 0
    log_every: int = 10


@dataclass
class TrainLog:
    """What training did, for the summary: losses by step and wall time."""

    losses: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # process CPU time: comparable across runs on a busy machine
    num_params: int = 0


def build_teacher(cfg: TeacherConfig, tokenizer: PreTrainedTokenizerBase) -> LlamaForCausalLM:
    torch.manual_seed(cfg.seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def _lr_at(step: int, cfg: TeacherConfig) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio`` of the peak."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def train_teacher(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerBase,
    train: dict[str, list[Problem]],
    cfg: TeacherConfig,
    callback: Callable[[int, LlamaForCausalLM], None] | None = None,
) -> TrainLog:
    """Train on ``train`` (difficulty -> problems) with loss on the assistant turn only."""
    encoded: dict[str, list[Example]] = {d: [encode_example(tokenizer, p) for p in ps] for d, ps in train.items()}
    rng = random.Random(cfg.seed)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )
    out = TrainLog(num_params=sum(p.numel() for p in model.parameters()))
    model.train()
    start, cpu_start = time.perf_counter(), time.process_time()
    bar = tqdm(range(cfg.steps), desc="teacher", unit="step")
    running = None
    for step in bar:
        difficulty = "hard" if ("hard" in encoded and rng.random() < cfg.hard_fraction) or "easy" not in encoded else "easy"
        batch = collate(rng.sample(encoded[difficulty], cfg.batch_size), tokenizer.pad_token_id)
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
        loss = model(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        value = loss.item()
        running = value if running is None else 0.9 * running + 0.1 * value
        bar.set_postfix(loss=f"{running:.3f}", refresh=False)
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            out.losses.append((step, value))
            log.debug("step %d loss %.4f", step, value)
        if callback is not None:
            callback(step, model)
    bar.close()
    out.seconds = time.perf_counter() - start
    out.cpu_seconds = time.process_time() - cpu_start
    model.eval()
    log.info("teacher: %d params, %d steps in %.1fs, final loss %.4f", out.num_params, cfg.steps, out.seconds, running or float("nan"))
    return out


def config_dict(cfg: TeacherConfig) -> dict:
    return asdict(cfg)
