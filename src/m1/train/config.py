"""Typed configs for the three stages, loadable from YAML and overridable on the command line.

Every option is a dataclass field whose ``metadata["help"]`` documents it; the same text
becomes the command's ``--help``. Precedence: dataclass default < ``--config FILE.yaml`` <
command-line flags. Unknown YAML keys are errors, so a typo never silently falls back to
a default.

Loss normalisation is an explicit field in every stage (``loss_normalization`` for
distill/SFT, ``loss_type`` for GRPO) and is written into the run's ``config.yaml``.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from m1.errors import UserError, field_error, looks_like_local_path, require_model_dir, require_path


def opt(default: Any, help: str, **kw) -> Any:
    """A documented field."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class RunConfig:
    """Options every stage shares: where, how long, how fast, how it logs and saves."""

    out: str = opt("runs/run", "output directory: checkpoints, metrics.jsonl, TensorBoard logs, final/ model")
    seed: int = opt(0, "random seed (model init, data order, sampling)")
    max_steps: int = opt(100, "optimizer steps to run")
    per_device_batch_size: int = opt(8, "sequences per device per micro-batch")
    gradient_accumulation_steps: int = opt(1, "micro-batches per optimizer step")
    learning_rate: float = opt(1e-5, "peak learning rate (AdamW)")
    lr_scheduler: str = opt("cosine", "learning-rate schedule: constant, linear, cosine, ... (transformers names)")
    warmup_steps: float = opt(0, "linear warm-up: optimizer steps, or a share of max_steps if below 1 (0.05: the first 5 percent)")
    weight_decay: float = opt(0.0, "AdamW weight decay")
    adam_beta2: float = opt(0.999, "AdamW's second-moment decay (0.95 is common for pretraining-style runs)")
    max_grad_norm: float = opt(1.0, "gradient clipping norm")
    max_length: int = opt(8192, "longest training sequence in tokens (longer ones are truncated)")
    bf16: bool = opt(False, "train in bf16 autocast (GPU); CPU tests use fp32")
    gradient_checkpointing: bool = opt(False, "recompute each layer's activations in backward to save memory")
    logging_steps: int = opt(1, "log metrics every N steps (to metrics.jsonl and TensorBoard)")
    save_steps: int = opt(50, "save a resumable checkpoint every N steps")
    save_total_limit: int = opt(2, "keep at most N checkpoints")
    resume: bool = opt(False, "continue from the newest complete checkpoint in `out`")
    max_seconds: float = opt(0, "wall-clock limit of this command (0: none): at the limit a complete checkpoint is saved and the command exits 75; run it again with --resume to continue")
    data_format: str = opt("auto", "field mapping of the data: auto, openmathinstruct2, openr1, deepscaler, gsm8k, m1-prompts, m1-messages, text")
    data_split: str = opt("train", "split to read when the data is a hub dataset id")
    data_limit: int = opt(0, "read at most N records (0: all)")
    num_threads: int = opt(0, "torch CPU threads (0: leave torch's default)")
    report_to: list = opt(["tensorboard"], "trackers besides metrics.jsonl (transformers' report_to names)")


@dataclass
class DistillConfig(RunConfig):
    """Stage 1: distil the hybrid student from its teacher on fixed data (M1: reverse KL)."""

    teacher: str = opt("", "teacher model: directory, hub id or .gguf file (any transformers causal LM, or a hybrid)")
    student: str = opt("", "student hybrid checkpoint directory (from `m1 convert`)")
    data: str = opt("", "training data: conversations (assistant tokens are trained) or raw text ({'text': ...}, packed into max_length rows, every token trained); JSONL/JSON file (.gz too), directory, or hub dataset id")
    loss: str = opt("reverse_kl", "divergence on assistant tokens: reverse_kl (M1), forward_kl (MambaInLlama) or jsd")
    jsd_beta: float = opt(0.5, "mixture weight of the JSD (0.5: symmetric)")
    temperature: float = opt(1.0, "softmax temperature of both teacher and student logits in the loss (on-policy: also the temperature the student samples its replies at)")
    loss_normalization: str = opt("token", "loss scale: 'token' = sum over assistant tokens / assistant tokens in the optimizer step's batch")
    loss_chunk_size: int = opt(1024, "assistant tokens per chunk of the chunked KL (the logits of one chunk are in memory at a time)")
    freeze: str = opt("none", "'none', or 'non_mamba': train only the Mamba mixers")
    trainable_pattern: str = opt("", "regex over parameter names: only matching parameters train (overrides `freeze`)")
    stepwise_layers: int = opt(0, "stepwise schedule: train this many Mamba layers at a time, bottom up (0: all at once)")
    stepwise_steps: int = opt(0, "optimizer steps per stepwise stage")
    on_policy: bool = opt(False, "on-policy distillation (the student generates) through TRL's DistillationTrainer")
    stages: str = opt("kl", "'kl' (M1's one stage: end-to-end divergence) or 'align,kl' (staged: teacher-forced per-layer alignment of the Mamba mixers, then end-to-end)")
    align_fraction: float = opt(0.25, "with stages align,kl: share of max_steps, and so of the training tokens, spent in the align stage")
    align_learning_rate: float = opt(1e-3, "peak learning rate of the align stage (only the Mamba mixers train there)")
    max_completion_length: int = opt(256, "on-policy only: tokens the student generates per prompt")
    rollout_backend: str = opt("auto", "on-policy only: the student's replies from 'engine' (m1.engine), 'generate' (transformers generate), or 'auto' (the same as engine)")
    log_completions: bool = opt(False, "on-policy only: keep the prompts and the student's replies of each logging step in OUT/completions/completions_<step>.parquet (TRL's log_completions), to read what it writes as it trains")


@dataclass
class SFTConfig(RunConfig):
    """Stage 2: supervised fine-tuning on reasoning traces, completion-only, packed."""

    model: str = opt("", "hybrid checkpoint directory to fine-tune")
    data: str = opt("", "training conversations: JSONL/JSON file, directory, or hub dataset id")
    packing: bool = opt(True, "pack conversations into max_length rows; Mamba states reset at each boundary")
    loss_normalization: str = opt("token", "loss scale: 'token' = sum over assistant tokens / assistant tokens in the optimizer step's batch")


@dataclass
class GRPOConfig(RunConfig):
    """Stage 3: GRPO on prompts with verifiable answers. Defaults are M1's recipe."""

    model: str = opt("", "hybrid checkpoint directory (the policy)")
    learning_rate: float = opt(1e-6, "learning rate (M1: 1e-6)")
    lr_scheduler: str = opt("constant", "learning-rate schedule (M1: constant)")
    prompts: str = opt("", "prompts with gold answers: JSONL/JSON file, directory, or hub dataset id")
    rollout_backend: str = opt("auto", "rollouts from 'engine' (m1.engine), 'generate' (transformers generate), or 'auto' (the same as engine)")
    num_generations: int = opt(8, "rollouts per prompt")
    temperature: float = opt(0.9, "sampling temperature of the rollouts")
    top_p: float = opt(1.0, "nucleus sampling of the rollouts")
    max_completion_length: int = opt(32768, "longest rollout in tokens (M1: long rollouts were essential)")
    max_prompt_length: int = opt(1024, "longest prompt in tokens (longer prompts are dropped)")
    generation_batch_size: int = opt(128, "rollouts per generation round (the PPO batch), across devices")
    num_iterations: int = opt(1, "PPO epochs over one generation batch (M1: 1; its two updates come from two mini-batches per batch)")
    mini_batch_size: int = opt(64, "rollouts per optimizer step (per_device_batch_size x devices x grad accumulation)")
    beta: float = opt(0.0, "KL coefficient against the reference model (M1: none)")
    entropy_coef: float = opt(0.01, "entropy bonus coefficient (M1: 0.01)")
    epsilon: float = opt(0.2, "PPO clip (lower side, and upper unless epsilon_high is set)")
    epsilon_high: float = opt(0.0, "upper clip (DAPO clip-higher: 0.28); 0 means equal to epsilon")
    loss_type: str = opt("grpo", "policy-loss normalisation: grpo (per-sequence mean), dr_grpo (constant), dapo (token-level), bnpo")
    scale_rewards: str = opt("group", "advantage scaling: group (GRPO), batch, or none (Dr. GRPO)")
    dynamic_sampling: bool = opt(False, "DAPO dynamic sampling: re-draw prompts whose rollouts all score the same")
    dynamic_sampling_tries: int = opt(4, "replacement prompts tried per zero-variance group")
    tis_cap: float = opt(2.0, "truncated importance sampling: weight min(exp(trainer - rollout logprob), cap) per token; 0 disables")
    recipe: str = opt("m1", "preset applied before config/CLI values: m1, dr_grpo or dapo")



# ---------------------------------------------------------------- YAML + argparse


def _type_of(cls, f: dataclasses.Field):
    hints = typing.get_type_hints(cls)
    return hints[f.name]


def _parse_bool(text: str) -> bool:
    t = text.lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {text!r}")


def build_parser(cls, prog: str, description: str, positional_aliases: dict[str, str] | None = None) -> argparse.ArgumentParser:
    """An argparse parser with one ``--flag`` per field (dashes for underscores), defaults suppressed."""
    p = argparse.ArgumentParser(prog=prog, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", default=None, help="YAML file of field values (CLI flags override it)")
    for f in dataclasses.fields(cls):
        t = _type_of(cls, f)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_text = f"{f.metadata.get('help', '')} (default: {default!r})"
        flag = "--" + f.name.replace("_", "-")
        if t is bool:
            p.add_argument(flag, dest=f.name, nargs="?", const=True, type=_parse_bool, default=argparse.SUPPRESS, help=help_text)
            p.add_argument("--no-" + f.name.replace("_", "-"), dest=f.name, action="store_false", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        elif t is list or typing.get_origin(t) is list:
            p.add_argument(flag, dest=f.name, nargs="*", default=argparse.SUPPRESS, help=help_text)
        else:
            p.add_argument(flag, dest=f.name, type=t, default=argparse.SUPPRESS, help=help_text)
    return p


def from_dict(cls, values: dict, source: str = "config"):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UserError(f"{source}: unknown {cls.__name__} field(s) {unknown}; known: {sorted(names)}")
    cfg = cls()
    for k, v in values.items():
        f = next(x for x in dataclasses.fields(cls) if x.name == k)
        t = _type_of(cls, f)
        if t is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if t in (int, float, str, bool) and not isinstance(v, t):
            raise UserError(f"{source}: field {k!r} must be {t.__name__}, got {v!r}")
        setattr(cfg, k, v)
    return cfg


def load_yaml(path: str | Path) -> dict:
    require_path(path, "config file", "--config")
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        raise UserError(f"{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config file must be a YAML mapping of field: value")
    return data


def parse_config(cls, argv: list[str] | None, prog: str, description: str, presets: dict[str, dict] | None = None,
                 check: bool = True):
    """Defaults, then the preset named by ``recipe`` (if any), then ``--config``, then CLI flags.

    ``check`` runs `validate` (paths, numbers, the data file) on the result, as the CLI needs.
    """
    parser = build_parser(cls, prog, description)
    ns = vars(parser.parse_args(argv))
    config_path = ns.pop("config")
    values: dict = {}
    if config_path:
        values.update(load_yaml(config_path))
    values.update(ns)
    if presets is not None:
        recipe = values.get("recipe", getattr(cls(), "recipe", None))
        if recipe not in presets:
            raise field_error("--recipe", f"unknown recipe {recipe!r}; known: {sorted(presets)}")
        values = {**presets[recipe], **values}
    cfg = from_dict(cls, values, source=config_path or "command line")
    if check:
        validate(cfg)
    return cfg


# (field, what it holds, hub ids allowed) per stage; every one is required
# field, hub id allowed, .gguf file allowed (a frozen teacher only: transformers dequantizes it to train against)
_MODELS = {"DistillConfig": (("teacher", True, True), ("student", True, False)), "SFTConfig": (("model", True, False),),
           "GRPOConfig": (("model", True, False),)}
_DATA = {"DistillConfig": "data", "SFTConfig": "data", "GRPOConfig": "prompts"}
_POSITIVE = ("max_steps", "per_device_batch_size", "gradient_accumulation_steps", "max_length", "logging_steps",
             "save_steps", "save_total_limit", "num_generations", "generation_batch_size", "mini_batch_size",
             "max_completion_length", "max_prompt_length", "num_iterations", "loss_chunk_size")


def validate(cfg) -> None:
    """The command line's checks, before any model or tokenizer loads: numbers, model paths, the data file.

    Every failure is a one-line `UserError` naming the flag (`--student: model directory
    'x' does not exist`) or the data file's `file:line`. A local data file is read and
    mapped here, so a malformed record stops the run before the output directory exists.
    """
    from m1.train.data import load_conversations, load_prompts, load_texts

    for name in _POSITIVE:
        v = getattr(cfg, name, None)
        if v is not None and v < 1:
            raise field_error("--" + name.replace("_", "-"), f"must be at least 1, got {v}")
    if cfg.learning_rate <= 0:
        raise field_error("--learning-rate", f"must be > 0, got {cfg.learning_rate}")
    if cfg.warmup_steps < 0:
        raise field_error("--warmup-steps", f"must be >= 0, got {cfg.warmup_steps}")
    if cfg.max_seconds < 0:
        raise field_error("--max-seconds", f"must be >= 0 (0: no limit), got {cfg.max_seconds}")
    if not 0 <= cfg.adam_beta2 < 1:
        raise field_error("--adam-beta2", f"must be in [0, 1), got {cfg.adam_beta2}")
    if cfg.data_limit < 0:
        raise field_error("--data-limit", f"must be >= 0, got {cfg.data_limit}")
    if Path(cfg.out).exists() and not Path(cfg.out).is_dir():
        raise field_error("--out", f"{cfg.out!r} exists and is not a directory")
    kind = type(cfg).__name__
    for name, hub_ok, gguf_ok in _MODELS.get(kind, ()):
        require_model_dir(getattr(cfg, name), "--" + name, hub_ok=hub_ok, gguf_ok=gguf_ok)
    data_field = _DATA.get(kind)
    if data_field is None:
        return
    source = getattr(cfg, data_field)
    flag = "--" + data_field
    if not source:
        raise field_error(flag, "is required")
    path = Path(source).expanduser()
    if path.exists():
        prompts_only = kind == "GRPOConfig" or getattr(cfg, "on_policy", False)
        args = (str(path), cfg.data_format, cfg.data_split, cfg.data_limit or None)
        if prompts_only:
            load_prompts(*args)
        elif kind != "DistillConfig" or load_texts(*args) is None:  # distillation also reads a raw corpus
            load_conversations(*args)
    elif looks_like_local_path(source):
        raise field_error(flag, f"file {source!r} does not exist")


def dump_yaml(cfg) -> str:
    return yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False)


__all__ = ["RunConfig", "DistillConfig", "SFTConfig", "GRPOConfig", "parse_config", "from_dict", "load_yaml", "dump_yaml",
           "validate"]
