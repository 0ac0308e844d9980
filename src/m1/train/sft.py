"""`m1 sft`: stage 2, supervised fine-tuning on reasoning traces, on TRL's `SFTTrainer`.

- **Completion-only loss**: conversations are tokenised with the model's chat template
  (`m1.train.data.tokenize_conversation`) and only assistant tokens carry labels.
- **Packing**: TRL's best-fit-decreasing packing puts several conversations in one
  ``max_length`` row and its padding-free collator marks each one's start by
  ``position_ids`` restarting at 0, with no attention mask. The hybrid reads exactly
  that: attention stays within each conversation, and every Mamba layer restarts its conv
  and SSM state at each boundary (M1's authors report RL failing otherwise). A test checks
  packed loss == unpacked loss.
- **Loss normalisation** (``loss_normalization: token``): cross-entropy summed over
  assistant tokens, divided by the assistant tokens of the whole optimizer step (TRL's
  ``num_items_in_batch`` path), computed by TRL's fused, tiled LM head so the logits are
  never whole in memory.
"""

from __future__ import annotations

import logging

import torch
from transformers import AutoTokenizer
from trl import SFTConfig as TRLSFTConfig
from trl import SFTTrainer

from m1.errors import remove_if_left_empty
from m1.train.config import SFTConfig, parse_config
from m1.data import DataError
from m1.train.data import load_conversations, tokenize_conversations
from m1.train.model import load_student
from m1.train.runs import CompleteCheckpoints, JsonlMetrics, TimeLimit, common_args, deadline, prepare_out, resume_step, save_final, train_or_pause

log = logging.getLogger(__name__)


class HybridSFTTrainer(CompleteCheckpoints, SFTTrainer):
    """TRL's SFTTrainer with checkpoints marked complete (see `m1.train.runs`)."""


def labelled(train):
    """``labels`` = input ids on assistant tokens, -100 elsewhere (TRL's collator reads ``labels``)."""
    return train.map(
        lambda r: {"labels": [t if m else -100 for t, m in zip(r["input_ids"], r["completion_mask"])]},
        remove_columns=["completion_mask"],
    )


def build_trainer(cfg: SFTConfig, resume_from: str | None = None):
    for name in ("model", "data"):
        if not getattr(cfg, name):
            raise DataError(f"--{name} is required")
    if cfg.loss_normalization != "token":
        raise ValueError(f"loss_normalization {cfg.loss_normalization!r} is not supported (only 'token')")
    tok = AutoTokenizer.from_pretrained(cfg.model)
    rows = load_conversations(cfg.data, cfg.data_format, cfg.data_split, cfg.data_limit or None)
    train = labelled(tokenize_conversations(tok, rows, cfg.max_length))
    model = load_student(cfg.model, dtype=torch.float32)
    args = TRLSFTConfig(
        **common_args(cfg),
        max_length=cfg.max_length,
        packing=cfg.packing,
        packing_strategy="bfd",
        padding_free=cfg.packing,
        completion_only_loss=True,
        loss_type="nll",
        average_tokens_across_devices=True,
    )
    trainer = HybridSFTTrainer(
        model=model, args=args, train_dataset=train, processing_class=tok,
        callbacks=[JsonlMetrics(f"{cfg.out}/metrics.jsonl", resume_step(resume_from))],
    )
    return trainer, tok


def run(cfg: SFTConfig):
    limit = deadline(cfg)  # counted from the command's start
    resume_from = prepare_out(cfg)
    torch.manual_seed(cfg.seed)
    trainer, tok = build_trainer(cfg, resume_from)
    train_or_pause(trainer, TimeLimit(limit), resume_from, cfg.max_steps, cfg.out)
    final = save_final(trainer, tok, cfg.out)
    log.info("fine-tuned model saved to %s", final)
    return trainer


def cli_main(argv: list[str] | None = None) -> int:
    cfg = parse_config(SFTConfig, argv, "m1 sft", __doc__.split("\n\n")[0])
    with remove_if_left_empty(cfg.out):  # a failed first run leaves no empty run directory
        run(cfg)
    return 0
