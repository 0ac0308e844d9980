"""`m1 distill`: stage 1, distil the hybrid student from its teacher's logits.

Fixed-data distillation (M1's stage 1) is `DistillTrainer`, a subclass of TRL's
`SFTTrainer` that replaces only ``compute_loss``: a divergence between the frozen,
in-process teacher's next-token distribution and the student's, on assistant tokens
only. TRL's own `DistillationTrainer` is on-policy (the student generates the text), so
it cannot train on a fixed corpus; it serves ``--on-policy``. Everything else (data
order, optimizer, schedule, accumulation, checkpoints, resume, logging, accelerate/DDP/
FSDP) is transformers' and TRL's.

The loss is computed by `m1.train.losses.chunked_divergence` from hidden states in
chunks, inside the student's forward (see `m1.train.model`), so (seq x vocab) logits are
never whole in memory. Normalisation (``loss_normalization: token``): the divergence
summed over the assistant tokens of the micro-batch, divided by the assistant-token count
of the whole optimizer step (transformers' ``num_items_in_batch``), so accumulation and
batch composition never change the scale. Under DDP that count is gathered over all ranks
and the rank's sum is multiplied by the world size, which DDP's gradient average divides
out again: N ranks with per-device batch B give the loss and the update of one process on
N x B rows, whatever the split of assistant tokens between ranks (tests/train/test_ddp.py).
The logged ``<loss>_per_token`` is likewise summed over ranks before dividing.

No host-device sync in a step (outside logging): the facts about a batch that need its values
are taken on the host, from the CPU batch the collator built (`HostBatchFacts`): the flat
indices of the positions to score (so the loss gathers with ``index_select``, not a boolean
mask, whose ``nonzero`` would wait for the GPU, forward and backward) and whether every row is
whole (no padding), in which case the attention mask is not passed at all and neither model
checks it on the device. Transformers' per-step NaN/Inf check of the loss is off
(``logging_nan_inf_filter=False``): a NaN loss then shows in the logged loss instead of being
replaced by the running mean.

Options:
- ``--freeze non_mamba`` trains only the Mamba mixers; ``--trainable-pattern REGEX``
  trains exactly the parameters whose names match. Frozen parameters get
  ``requires_grad=False`` before the optimizer is built.
- ``--stepwise-layers K --stepwise-steps S``: a stepwise schedule in the spirit of
  MambaInLlama. Stage i (optimizer steps [i*S, (i+1)*S)) trains only the i-th group of K
  Mamba layers, bottom up; after the last group everything trainable trains together.
  (MambaInLlama also converts attention layers to Mamba stage by stage; here the layout
  is fixed by `m1 convert`, so the stages choose which converted layers learn.) Grads of
  the layers outside the stage are dropped just before each optimizer step, which keeps
  DDP's gradient buckets intact.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import torch
from transformers import AutoTokenizer, TrainerCallback
from trl import SFTConfig as TRLSFTConfig
from trl import SFTTrainer

from m1.checkpoint import load_tokenizer
from m1.train.align import align_loss
from m1.train.config import DistillConfig, parse_config
from m1.data import DataError
from m1.train.data import check_same_tokenizer, load_conversations, load_texts, pack_texts, tokenize_conversations
from m1.train.losses import DIVERGENCES, chunked_divergence, next_token_positions
from m1.train.model import backbone_hidden, load_student, load_teacher
from m1.train.runs import CompleteCheckpoints, JsonlMetrics, TimeLimit, common_args, deadline, prepare_out, resume_step, save_final, train_or_pause

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- parameter selection


def mamba_layer_index(name: str) -> int | None:
    m = re.match(r"model\.layers\.(\d+)\.mamba\.", name)
    return int(m.group(1)) if m else None


def select_trainable(model: torch.nn.Module, freeze: str = "none", pattern: str = "") -> list[str]:
    """Set ``requires_grad`` per parameter; return the names left trainable."""
    if pattern:
        rx = re.compile(pattern)
        keep = lambda n: bool(rx.search(n))  # noqa: E731
    elif freeze == "non_mamba":
        keep = lambda n: mamba_layer_index(n) is not None  # noqa: E731
    elif freeze == "none":
        keep = lambda n: True  # noqa: E731
    else:
        raise ValueError(f"freeze must be 'none' or 'non_mamba', got {freeze!r}")
    names = []
    for n, p in model.named_parameters():
        p.requires_grad_(keep(n))
        if keep(n):
            names.append(n)
    if not names:
        raise ValueError(f"no parameter is left trainable (freeze={freeze!r}, pattern={pattern!r})")
    log.info("training %d of %d parameter tensors (%d of %d values)", len(names), len(list(model.parameters())),
             sum(p.numel() for p in model.parameters() if p.requires_grad), sum(p.numel() for p in model.parameters()))
    return names


class StepwiseSchedule(TrainerCallback):
    """Train one group of Mamba layers per stage by dropping other grads before each optimizer step."""

    def __init__(self, model: torch.nn.Module, layers_per_stage: int, steps_per_stage: int):
        mamba = sorted({i for n, _ in model.named_parameters() if (i := mamba_layer_index(n)) is not None})
        self.groups = [mamba[i : i + layers_per_stage] for i in range(0, len(mamba), layers_per_stage)]
        self.steps = steps_per_stage
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        log.info("stepwise schedule: %d stages of %d steps, layer groups %s", len(self.groups), steps_per_stage, self.groups)

    def stage(self, step: int) -> int | None:
        i = step // self.steps
        return i if i < len(self.groups) else None

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        i = self.stage(state.global_step)
        if i is None:
            return
        allowed = set(self.groups[i])
        for n, p in self.params.items():
            if mamba_layer_index(n) not in allowed:
                p.grad = None


# ---------------------------------------------------------------- trainer


# keys `HostBatchFacts` adds to a batch; `compute_loss` reads them and passes them to no model
SCORE_INDEX = "m1_score_index"
WHOLE_ROWS = "m1_whole_rows"


class HostBatchFacts:
    """Wraps a data collator: adds to each (CPU) batch what the loss would otherwise learn from the
    device with a sync.

    - ``m1_score_index``: int64 (n,), the flat indices (row * length + position) of the positions
      whose next token is a target, in row-major order: what ``next_token_positions(labels)``
      selects, so ``hidden.flatten(0, 1).index_select(0, idx)`` equals ``hidden[mask]``.
    - ``m1_whole_rows``: True when the attention mask is all ones (no padding), so the forward can
      leave it out: it changes nothing then, and both models would check it on the device.
    """

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, examples):
        batch = self.collator(examples)
        labels = batch.get("labels")
        if isinstance(labels, torch.Tensor) and labels.device.type == "cpu":
            batch[SCORE_INDEX] = next_token_positions(labels).reshape(-1).nonzero().squeeze(1)
        mask = batch.get("attention_mask")
        batch[WHOLE_ROWS] = "position_ids" not in batch and (mask is None or bool(mask.all()))
        return batch

    def __getattr__(self, name):  # the wrapped collator's attributes (TRL sets some after building it)
        return getattr(self.collator, name)


class DistillTrainer(CompleteCheckpoints, SFTTrainer):
    """SFTTrainer whose loss is a masked divergence against a frozen in-process teacher.

    With ``align=True`` (the staged recipe's first stage) the loss is instead the
    teacher-forced per-layer alignment of `align_loss`, and only the Mamba mixers get gradients.
    """

    def __init__(self, *args, teacher: torch.nn.Module, dcfg: DistillConfig, align: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        if dcfg.loss not in DIVERGENCES:
            raise ValueError(f"--loss must be one of {DIVERGENCES}, got {dcfg.loss!r}")
        if dcfg.loss_normalization != "token":
            raise ValueError(f"loss_normalization {dcfg.loss_normalization!r} is not supported (only 'token')")
        self.teacher = teacher.to(self.accelerator.device)
        self.dcfg = dcfg
        self.align = align
        if align and self.accelerator.num_processes > 1:
            raise ValueError("the align stage runs in one process (it calls the mixers outside the DDP wrapper); run it without accelerate, then the kl stage with it")
        # divergence summed over assistant tokens, and their count, since the last log (this rank)
        self._kl_acc: torch.Tensor | None = None
        if not isinstance(self.data_collator, HostBatchFacts):
            self.data_collator = HostBatchFacts(self.data_collator)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.align:
            fwd = {k: inputs[k] for k in ("input_ids", "attention_mask") if k in inputs}
            loss = align_loss(self.accelerator.unwrap_model(model), self.teacher, **fwd)
            acc = torch.stack([loss.detach().float(), torch.ones((), device=loss.device)])
            self._kl_acc = acc if self._kl_acc is None else self._kl_acc + acc
            return (loss, None) if return_outputs else loss
        labels = inputs["labels"]
        keys = ("input_ids",) if inputs.get(WHOLE_ROWS) else ("input_ids", "attention_mask", "position_ids")
        fwd = {k: inputs[k] for k in keys if k in inputs}
        index = inputs.get(SCORE_INDEX)
        if index is not None:  # chosen on the host (HostBatchFacts): a gather, and a count known here
            index = index.to(labels.device, non_blocking=True)
            n_local = index.numel()
            pick = lambda h: h.flatten(0, 1).index_select(0, index)  # noqa: E731
        else:  # the reference: a boolean mask (its nonzero syncs with the device)
            select = next_token_positions(labels)
            n_local = select.sum()
            pick = lambda h: h[select]  # noqa: E731
        with torch.no_grad():
            # no KV cache: nothing reads it, and transformers' cache appends every layer's K and V (a cat each)
            t_hidden = pick(backbone_hidden(self.teacher, use_cache=False, **fwd))
        t_head = self.teacher.get_output_embeddings()
        cfg = self.dcfg

        def loss_fn(hidden: torch.Tensor, lm_head: torch.nn.Module) -> torch.Tensor:
            return chunked_divergence(pick(hidden), t_hidden, lm_head, t_head, cfg.loss, cfg.loss_chunk_size, cfg.jsd_beta, cfg.temperature)

        total = model(**fwd, chunked_loss=loss_fn).loss
        # a host count becomes a device value by a fill, not a copy (a blocking host-to-device copy waits for the stream)
        count = torch.full((), n_local, dtype=torch.float32, device=total.device) if isinstance(n_local, int) \
            else n_local.to(total.device, torch.float32)
        acc = torch.stack([total.detach().float(), count])
        self._kl_acc = acc if self._kl_acc is None else self._kl_acc + acc
        if num_items_in_batch is None:  # no accumulation bookkeeping: this micro-batch is the whole step
            denom = count.clamp(min=1) * self.current_gradient_accumulation_steps
        else:
            denom = torch.as_tensor(num_items_in_batch, device=total.device).clamp(min=1)
            if self.args.average_tokens_across_devices:
                total = total * self.accelerator.num_processes  # DDP averages grads across ranks
        loss = total / denom
        return (loss, None) if return_outputs else loss

    def log(self, logs, start_time=None):
        if self._kl_acc is not None and "loss" in logs:
            # every rank logs at the same step, so the sums can be reduced here: the logged value is
            # the divergence per assistant token over all ranks' tokens since the last log
            acc = self.accelerator.reduce(self._kl_acc, reduction="sum")
            name = "align_rel_mse" if self.align else f"{self.dcfg.loss}_per_token"
            logs[name] = (acc[0] / acc[1].clamp(min=1)).item()
            self._kl_acc = None
        # SFTTrainer.log merges its own metrics (entropy, accuracy) that this loss never computes
        return super(SFTTrainer, self).log(logs, start_time)


# ---------------------------------------------------------------- the align stage


def stage_plan(cfg: DistillConfig) -> list[tuple[str, int]]:
    """[(stage, optimizer steps)] from `stages` and `align_fraction`: the step (token) budget split between them."""
    stages = [s.strip() for s in cfg.stages.split(",") if s.strip()]
    if stages == ["kl"]:
        return [("kl", cfg.max_steps)]
    if stages == ["align", "kl"]:
        if not 0 < cfg.align_fraction < 1:
            raise DataError(f"align_fraction: must be in (0, 1), got {cfg.align_fraction}")
        a = max(1, round(cfg.max_steps * cfg.align_fraction))
        if a >= cfg.max_steps:
            raise DataError(f"max_steps: {cfg.max_steps} leaves no step for the kl stage after {a} align steps")
        return [("align", a), ("kl", cfg.max_steps - a)]
    if stages == ["align"]:
        return [("align", cfg.max_steps)]
    raise DataError(f"stages: {cfg.stages!r}; use 'kl', 'align,kl' or 'align'")


# ---------------------------------------------------------------- entry points


def build_trainer(cfg: DistillConfig, resume_from: str | None = None, align: bool = False) -> tuple[DistillTrainer, object]:
    for name in ("teacher", "student", "data"):
        if not getattr(cfg, name):
            raise DataError(f"--{name} is required")
    s_tok = AutoTokenizer.from_pretrained(cfg.student)
    t_tok = load_tokenizer(cfg.teacher)
    check_same_tokenizer(t_tok, s_tok, cfg.teacher, cfg.student)
    texts = load_texts(cfg.data, cfg.data_format, cfg.data_split, cfg.data_limit or None)
    if texts is not None:  # a raw corpus: packed rows, every token a target
        train = pack_texts(s_tok, texts, cfg.max_length)
    else:
        rows = load_conversations(cfg.data, cfg.data_format, cfg.data_split, cfg.data_limit or None)
        train = tokenize_conversations(s_tok, rows, cfg.max_length)
        train = train.map(lambda r: {"labels": [t if m else -100 for t, m in zip(r["input_ids"], r["completion_mask"])]}, remove_columns=["completion_mask"])

    dtype = torch.bfloat16 if cfg.bf16 else torch.float32
    student = load_student(cfg.student, dtype=torch.float32)  # fp32 master weights; bf16 via autocast
    teacher = load_teacher(cfg.teacher, dtype=dtype)
    if student.config.vocab_size != teacher.config.vocab_size:
        raise DataError(f"student vocab_size {student.config.vocab_size} != teacher vocab_size {teacher.config.vocab_size}")
    select_trainable(student, "non_mamba" if align else cfg.freeze, "" if align else cfg.trainable_pattern)

    args = TRLSFTConfig(
        **common_args(cfg),
        max_length=cfg.max_length,
        packing=False,  # the teacher sees the same padded batch; packed attention would need varlen kernels in it
        completion_only_loss=True,
        dataset_kwargs={"skip_prepare_dataset": True},
        # the token count that normalises the loss is summed over ranks (transformers' default,
        # stated so it cannot drift): DDP then matches one process on the combined batch
        average_tokens_across_devices=True,
        # transformers' per-step isnan/isinf of the loss is two host syncs a step; a NaN loss then
        # shows in the logged loss (not the running mean), and the weights go NaN either way
        logging_nan_inf_filter=False,
        # batches go to the GPU without a blocking copy (which would drain the stream every step);
        # safe with the pinned memory common_args asks for on CUDA
        accelerator_config={"non_blocking": torch.cuda.is_available()},
    )
    callbacks = [JsonlMetrics(f"{cfg.out}/metrics.jsonl", resume_step(resume_from))]
    if cfg.stepwise_layers:
        if cfg.stepwise_steps <= 0:
            raise ValueError("--stepwise-layers needs --stepwise-steps > 0")
        callbacks.append(StepwiseSchedule(student, cfg.stepwise_layers, cfg.stepwise_steps))
    trainer = DistillTrainer(
        model=student, args=args, train_dataset=train, processing_class=s_tok, callbacks=callbacks, teacher=teacher, dcfg=cfg, align=align
    )
    return trainer, s_tok


def engine_distillation_trainer():
    """TRL's `DistillationTrainer` whose student writes its replies with m1's `Engine` (``rollout_backend``
    engine/auto), as `m1 grpo`'s rollouts do: TRL's own path without vLLM is transformers' ``generate()``, a
    Python loop over the layers for every token. The class is built on first use, so importing this module
    does not import TRL's experimental trainer."""
    from trl import DistillationTrainer

    class EngineDistillationTrainer(DistillationTrainer):
        def __init__(self, *args, rollout_backend: str = "auto", **kwargs):
            super().__init__(*args, **kwargs)
            self.rollout_backend = "engine" if rollout_backend == "auto" else rollout_backend
            if self.rollout_backend not in ("engine", "generate"):
                raise DataError(f"rollout_backend: engine, generate or auto, got {rollout_backend!r}")
            if self.rollout_backend == "engine" and (self.use_vllm or (self.min_p or 0) > 0 or (self.repetition_penalty or 1.0) != 1.0):
                raise DataError("rollout_backend: the engine samples with temperature, top_p and top_k only; use generate")
            log.info("on-policy replies: %s backend", self.rollout_backend)
            self._engine = None
            self._rounds = 0

        def _generate_single_turn(self, prompt_ids, images, multimodal_fields, has_tool_images=False):
            if self.rollout_backend == "generate" or (images and any(images)):
                return super()._generate_single_turn(prompt_ids, images, multimodal_fields, has_tool_images)
            from m1.engine import Engine, SamplingParams

            model = self.accelerator.unwrap_model(self.model)
            longest = max(map(len, prompt_ids)) + self.max_completion_length
            e = self._engine
            if e is None or e.model is not model or e.max_model_len < longest:
                # a slot for every prompt of this batch (more would queue), and room for prompts twice its longest
                e = self._engine = Engine(model, self._tokenizer, max_batch_size=len(prompt_ids),
                                          max_model_len=2 * max(map(len, prompt_ids)) + self.max_completion_length)
            seed = self.args.seed * 1_000_003 + self.state.global_step * 1009 + self._rounds
            self._rounds += 1
            params = SamplingParams(temperature=self.temperature, top_p=self.top_p if self.top_p is not None else 1.0,
                                    top_k=self.top_k or 0, max_tokens=self.max_completion_length,
                                    stop_token_ids=list(self.eos_token_ids), seed=seed)
            with torch.no_grad():  # as TRL's own path: no autograd graph of the replies, whatever the engine's ops do
                outs = e.generate([list(p) for p in prompt_ids], params, use_tqdm=False)
            return [list(o.outputs[0].token_ids) for o in outs]  # an ending token is kept, as TRL's path keeps it

    return EngineDistillationTrainer


def build_on_policy_trainer(cfg: DistillConfig):
    """TRL's DistillationTrainer: the student samples, the teacher scores (generalised JSD)."""
    from trl import DistillationConfig

    from m1.train.data import load_prompts

    s_tok = AutoTokenizer.from_pretrained(cfg.student)
    check_same_tokenizer(load_tokenizer(cfg.teacher), s_tok, cfg.teacher, cfg.student)
    rows = load_prompts(cfg.data, cfg.data_format, cfg.data_split, cfg.data_limit or None)
    import datasets

    train = datasets.Dataset.from_list([{"prompt": r["prompt"]} for r in rows])  # conversational prompts, as TRL reads them
    beta = {"forward_kl": 0.0, "reverse_kl": 1.0, "jsd": cfg.jsd_beta}[cfg.loss]
    shared = common_args(cfg)
    shared.pop("router_aux_loss_coef")  # SFT's and GRPO's field; DistillationConfig has none (its loss adds no router term)
    # log_completions: TRL writes each logging step's texts to OUT/completions/*.parquet and prints a sample of them
    args = DistillationConfig(**shared, max_completion_length=cfg.max_completion_length, temperature=cfg.temperature, beta=beta,
                              log_completions=cfg.log_completions, num_completions_to_print=2)
    student = load_student(cfg.student)
    teacher = load_teacher(cfg.teacher)
    select_trainable(student, cfg.freeze, cfg.trainable_pattern)
    trainer = engine_distillation_trainer()(model=student, teacher_model=teacher, args=args, train_dataset=train,
                                            processing_class=s_tok, callbacks=[JsonlMetrics(f"{cfg.out}/metrics.jsonl", None)],
                                            rollout_backend=cfg.rollout_backend)
    return trainer, s_tok


def run(cfg: DistillConfig):
    """One stage (M1's recipe), or the staged recipe: align in OUT/align, then kl in OUT.

    Each stage is an ordinary resumable run; a finished align stage (OUT/align/final) is
    not run again, so `--resume` continues wherever the interruption was.
    """
    plan = stage_plan(cfg)
    if cfg.on_policy and len(plan) > 1:
        raise DataError("stages: the align stage needs fixed data; use --stages kl with --on-policy")
    if cfg.log_completions and not cfg.on_policy:
        raise DataError("log_completions: the student writes replies only with --on-policy; fixed-data distillation has none to log")
    student = cfg.student
    trainer = None
    limit = TimeLimit(deadline(cfg))  # one budget for every stage of the command
    for stage, steps in plan:
        scfg = dataclasses.replace(cfg, max_steps=steps, student=student)
        if stage == "align" and len(plan) > 1:
            scfg = dataclasses.replace(scfg, out=str(Path(cfg.out) / "align"), learning_rate=cfg.align_learning_rate)
            if (Path(scfg.out) / "final" / "config.json").exists():
                log.info("align stage already finished in %s; continuing with the kl stage", scfg.out)
                student = str(Path(scfg.out) / "final")
                continue
        elif stage == "align":
            scfg = dataclasses.replace(scfg, learning_rate=cfg.align_learning_rate)
        log.info("distill stage %s: %d optimizer steps", stage, steps)
        resume_from = prepare_out(scfg)
        torch.manual_seed(cfg.seed)
        if cfg.on_policy:
            trainer, tok = build_on_policy_trainer(scfg)
        else:
            trainer, tok = build_trainer(scfg, resume_from, align=stage == "align")
        train_or_pause(trainer, limit, resume_from, steps, scfg.out)
        final = save_final(trainer, tok, scfg.out)
        log.info("distill stage %s: student saved to %s", stage, final)
        student = str(final)
    return trainer


def cli_main(argv: list[str] | None = None) -> int:
    cfg = parse_config(DistillConfig, argv, "m1 distill", __doc__.split("\n\n")[0])
    run(cfg)
    return 0
