"""What every stage's run shares: trainer arguments, metrics, checkpoints, resume, final save.

- **Metrics** go to ``OUT/metrics.jsonl`` (one JSON object per log call, with ``step``)
  and to TensorBoard under ``OUT/tb`` (transformers' own integration), with the trainer's
  progress bar on the terminal.
- **Checkpoints** are transformers' ``OUT/checkpoint-N`` directories (model in the hybrid
  format through `HybridForCausalLM.save_pretrained`, optimizer, scheduler, RNG states).
  A checkpoint counts only once its ``COMPLETE`` marker is written, last of all, so a run
  killed mid-save resumes from the previous one; incomplete ones are deleted on resume.
- **Resume** (``--resume``) restarts from the newest complete checkpoint; transformers
  restores optimizer, scheduler, RNG and data order, so the losses continue as if the run
  had never stopped (a test checks this to 1e-4).
- **Final model** goes to ``OUT/final`` (hybrid checkpoint + tokenizer), atomically.

Multi-GPU: every stage is a transformers/TRL Trainer, so accelerate drives it unchanged:

    accelerate launch --num_processes 8 -m m1.cli sft --config configs/sft.yaml ...        # DDP
    accelerate launch --use_fsdp --fsdp_transformer_layer_cls_to_wrap DecoderLayer \
        --num_processes 8 -m m1.cli distill --config configs/distill.yaml ...              # FSDP

Distillation's LM-head use happens inside the student's forward (``chunked_loss``), which
is what DDP's gradient hooks and FSDP's parameter gathering need; the frozen teacher is
replicated per process, unwrapped. GRPO sizes its accumulation from ``WORLD_SIZE`` so
``mini_batch_size`` stays the global mini-batch. On CPU (no CUDA), launch with torchrun and
``ACCELERATE_USE_CPU=true`` (``accelerate launch --cpu`` starts a single process):

    ACCELERATE_USE_CPU=true torchrun --standalone --nproc_per_node 2 -m m1.cli distill ...  # gloo

``tests/train/test_ddp.py`` runs exactly that: 2 ranks x batch 4 give the losses, logged
divergence and final weights of one process with batch 8 (to 1e-4, fp32). FSDP and SFT/GRPO
under several processes are not exercised by the CPU tests.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from m1.checkpoint import atomic_write_text
from m1.errors import RunPaused
from m1.train.config import RunConfig, dump_yaml

log = logging.getLogger(__name__)

COMPLETE = "COMPLETE"
_CKPT = re.compile(r"^checkpoint-(\d+)$")


def checkpointing_args(on: bool) -> dict:
    """Activation checkpointing under the name this transformers reads: `activation_checkpointing`
    since 5.25, which warns on every TrainingArguments that passes the old `gradient_checkpointing`."""
    import dataclasses

    from transformers import TrainingArguments

    name = "activation_checkpointing" if any(f.name == "activation_checkpointing" for f in dataclasses.fields(TrainingArguments)) \
        else "gradient_checkpointing"
    return {name: on, f"{name}_kwargs": {"use_reentrant": False} if on else None}


def common_args(cfg: RunConfig) -> dict:
    """Keyword arguments of transformers' TrainingArguments shared by every stage."""
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    # transformers 5 reads the TensorBoard directory from the environment when its callback is built
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(Path(cfg.out) / "tb")
    return checkpointing_args(cfg.gradient_checkpointing) | dict(
        output_dir=cfg.out,
        seed=cfg.seed,
        data_seed=cfg.seed,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=warmup_steps(cfg),
        adam_beta2=cfg.adam_beta2,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        bf16=cfg.bf16,
        dataloader_pin_memory=torch.cuda.is_available(),  # pinning needs an accelerator (torch warns otherwise)
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        report_to=list(cfg.report_to),
        dataloader_num_workers=0,
        remove_unused_columns=False,
        disable_tqdm=False,
        # m1 models are dense; GraniteMoeHybrid's config carries a router coefficient TRL would otherwise apply
        router_aux_loss_coef=0.0,
    )


def warmup_steps(cfg: RunConfig) -> int:
    """``warmup_steps`` in optimizer steps: below 1 it is a share of ``max_steps`` (of this stage).

    Converted here, not left to transformers, because its float form arrived only in 5.x
    and a staged run needs the share of each stage's own steps.
    """
    w = cfg.warmup_steps
    if w < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {w}")
    return max(1, round(w * cfg.max_steps)) if 0 < w < 1 else int(w)


class TimeLimit(TrainerCallback):
    """``--max-seconds``: at the deadline, save a complete checkpoint and stop training.

    The deadline is a `time.monotonic()` instant fixed when the command starts, so a staged
    run's stages share one budget. Under several processes rank 0's clock decides and the
    decision is broadcast, so every rank stops at the same step.
    """

    def __init__(self, deadline: float | None):
        self.deadline = deadline
        self.hit = False

    def on_step_end(self, args, state, control, **kwargs):
        if self.deadline is None:
            return
        hit = time.monotonic() >= self.deadline
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            flag = torch.tensor([float(hit)], device=args.device)
            torch.distributed.broadcast(flag, 0)
            hit = bool(flag.item())
        if hit:
            self.hit = True
            control.should_save = True
            control.should_training_stop = True


def deadline(cfg: RunConfig) -> float | None:
    """The monotonic instant at which ``--max-seconds`` stops the command (None: no limit)."""
    if cfg.max_seconds < 0:
        raise ValueError(f"max_seconds must be >= 0, got {cfg.max_seconds}")
    return time.monotonic() + cfg.max_seconds if cfg.max_seconds else None


def train_or_pause(trainer, limit: TimeLimit, resume_from: str | None, steps: int, out: str | Path) -> None:
    """``trainer.train()``; if the time limit stopped it short of ``steps``, raise `RunPaused`."""
    trainer.add_callback(limit)
    trainer.train(resume_from_checkpoint=resume_from)
    done = trainer.state.global_step
    if limit.hit and done < steps:
        log.warning("%s: time limit reached at step %d of %d; checkpoint-%d saved", out, done, steps, done)
        raise RunPaused(f"time limit reached at step {done} of {steps}; checkpoint saved in {out}; "
                        "run the same command with --resume to continue")


class JsonlMetrics(TrainerCallback):
    """Append every logged dict (with its step) to ``OUT/metrics.jsonl``.

    On resume, lines from steps after the checkpoint are dropped first, so the file reads
    as one uninterrupted run.
    """

    def __init__(self, path: Path, resume_step: int | None):
        self.path = Path(path)
        if resume_step is not None and self.path.exists():
            kept = [l for l in self.path.read_text().splitlines() if l.strip() and json.loads(l).get("step", 0) <= resume_step]
            atomic_write_text(self.path, "".join(l + "\n" for l in kept))
        elif resume_step is None and self.path.exists():
            self.path.unlink()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float, str))}}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


class CompleteCheckpoints:
    """Trainer mixin: mark a checkpoint complete once every file of it is written, and resume from one."""

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):  # noqa: D401 - transformers' hook
        # transformers re-reads the checkpoint's config.json through the base PreTrainedConfig only to
        # compare versions; in 5.17 its layer_types validator rejects the hybrid's 'mamba' entries and
        # resume fails. Read it with the model's own config class instead (the weights load unchanged).
        import transformers.trainer as trainer_module

        base = trainer_module.PreTrainedConfig
        target = self.accelerator.unwrap_model(self.model if model is None else model)
        trainer_module.PreTrainedConfig = getattr(target, "config_class", base) or base
        try:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        finally:
            trainer_module.PreTrainedConfig = base

    def _save_checkpoint(self, model, trial):  # noqa: D401 - transformers' hook
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            ckpt = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
            if ckpt.is_dir():
                atomic_write_text(ckpt / COMPLETE, json.dumps({"step": self.state.global_step}))


def complete_checkpoints(out: str | Path) -> list[Path]:
    out = Path(out)
    if not out.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in out.iterdir() if (m := _CKPT.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found) if (p / COMPLETE).exists()]


def prepare_out(cfg: RunConfig) -> str | None:
    """Create ``out``; with ``resume``, return the checkpoint to resume from (deleting incomplete ones)."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    resume_from = None
    if cfg.resume:
        for p in out.iterdir():
            if _CKPT.match(p.name) and p.is_dir() and not (p / COMPLETE).exists():
                log.warning("removing incomplete checkpoint %s", p)
                shutil.rmtree(p, ignore_errors=True)
        done = complete_checkpoints(out)
        if done:
            resume_from = str(done[-1])
            log.info("resuming from %s", resume_from)
        else:
            log.warning("--resume: no complete checkpoint in %s; starting from scratch", out)
    atomic_write_text(out / "config.yaml", dump_yaml(cfg))
    return resume_from


def resume_step(resume_from: str | None) -> int | None:
    if resume_from is None:
        return None
    return int(_CKPT.match(Path(resume_from).name).group(1))


def save_final(trainer, tokenizer, out: str | Path) -> Path:
    """The trained model as a hybrid checkpoint (atomic) plus its tokenizer in ``OUT/final``."""
    final = Path(out) / "final"
    trainer.save_model(str(final))  # HybridForCausalLM.save_pretrained: atomic, GraniteMoeHybrid layout
    if trainer.args.should_save:
        tokenizer.save_pretrained(str(final))
    return final


def read_metrics(out: str | Path) -> list[dict]:
    path = Path(out) / "metrics.jsonl"
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()] if path.exists() else []
