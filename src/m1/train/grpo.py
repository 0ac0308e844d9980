"""`m1 grpo`: stage 3, GRPO on prompts with verifiable answers, on TRL's `GRPOTrainer`.

Rollouts come through TRL's ``rollout_func`` from `Rollouts`, on the live training weights
at every generation round: m1's `Engine` (``rollout_backend: engine``; it shares one prefill
among a prompt's samples) or transformers' ``generate()`` (``generate``). ``auto`` takes the
engine. The choice is logged. The reward is m1's grader (`m1.eval.reward.math_reward_func`).

M1's recipe is the default (``recipe: m1``): no KL term (beta 0), an entropy bonus of 0.01
(TRL's ``entropy_coef``), 8 rollouts per prompt at temperature 0.9, batches of 128
rollouts split into two mini-batches of 64 (two optimizer updates per rollout batch),
lr 1e-6, clip 0.2, rollouts up to 32K tokens. ``recipe: dr_grpo`` switches to Dr. GRPO
(constant normaliser, no std scaling); ``recipe: dapo`` to DAPO (clip-higher 0.28,
token-level loss, dynamic sampling). The loss normalisation is always the explicit
``loss_type`` field.

`HybridGRPOTrainer` subclasses GRPOTrainer for one thing TRL does only on its vLLM path:
comparing the rollout engine's logprobs with the trainer's for the same tokens. Every
generation round it computes the trainer's logprobs of the sampled tokens, logs the gap
(``sampling/logprob_gap/mean`` and ``/max``), and applies truncated importance sampling
(TIS): each token's advantage is multiplied by min(exp(trainer - rollout), ``tis_cap``).
For the clipped objective this equals multiplying the per-token loss by that weight (the
weight is positive and detached), which is how TRL applies it on the vLLM path.

DAPO's dynamic sampling also lives in `Rollouts`: a group whose rollouts all score the same
carries no advantage, so its prompt is replaced by other training prompts (their gold
answer is passed on to the reward through ``rollout_func``'s extra fields) until a group
with mixed scores appears or ``dynamic_sampling_tries`` run out.
"""

from __future__ import annotations

import logging
import os
import random

import torch
from transformers import AutoTokenizer
from trl import GRPOConfig as TRLGRPOConfig
from trl import GRPOTrainer

from m1.eval.reward import math_reward_func
from m1.errors import remove_if_left_empty
from m1.train.config import GRPOConfig, parse_config
from m1.data import DataError
from m1.train.data import load_prompts
from m1.train.model import load_student
from m1.train.runs import CompleteCheckpoints, JsonlMetrics, TimeLimit, common_args, deadline, prepare_out, resume_step, save_final, train_or_pause

log = logging.getLogger(__name__)

RECIPES: dict[str, dict] = {
    "m1": dict(beta=0.0, entropy_coef=0.01, num_generations=8, temperature=0.9, generation_batch_size=128,
               mini_batch_size=64, num_iterations=1, learning_rate=1e-6, epsilon=0.2, epsilon_high=0.0,
               max_completion_length=32768, loss_type="grpo", scale_rewards="group", dynamic_sampling=False,
               lr_scheduler="constant"),
}
RECIPES["dr_grpo"] = {**RECIPES["m1"], "loss_type": "dr_grpo", "scale_rewards": "none"}
RECIPES["dapo"] = {**RECIPES["m1"], "loss_type": "dapo", "epsilon_high": 0.28, "dynamic_sampling": True}


def _reward(completions, answer, **kw):
    return math_reward_func(completions, answer)


_reward.__name__ = "math_reward"


class Rollouts:
    """TRL ``rollout_func``: sample completions of the policy's current weights.

    Receives the generation batch's prompts (each repeated ``num_generations`` times in a
    row, by TRL's sampler) and returns, per rollout, the prompt ids, completion ids and the
    sampler's logprobs (log_softmax(logits / T) of each sampled token).
    """

    def __init__(self, cfg: GRPOConfig, tokenizer, prompt_pool: list[dict]):
        self.cfg = cfg
        self.tok = tokenizer
        self.pool = prompt_pool
        self.backend = cfg.rollout_backend
        if self.backend == "auto":
            self.backend = "engine"
        if self.backend not in ("engine", "generate"):
            raise ValueError(f"rollout_backend must be engine, generate or auto, got {cfg.rollout_backend!r}")
        log.info("GRPO rollouts: %s backend", self.backend)
        self._engine = None
        self._round = 0

    def encode(self, turns) -> list[int]:
        return list(self.tok.apply_chat_template(turns, add_generation_prompt=True, tokenize=True, return_dict=False))

    # ---- backends -------------------------------------------------------------------------------
    def _sample(self, model, prompt_ids: list[list[int]], n: int, seed: int) -> list[list[tuple[list[int], list[float]]]]:
        """For each prompt, ``n`` (completion ids, logprobs) pairs."""
        if self.backend == "engine":
            from m1.engine import Engine, SamplingParams

            if self._engine is None or self._engine.model is not model:
                longest = self.cfg.max_prompt_length + self.cfg.max_completion_length
                self._engine = Engine(model, self.tok, max_batch_size=max(n * len(prompt_ids), 1), max_model_len=longest)
            params = [SamplingParams(n=n, temperature=self.cfg.temperature, top_p=self.cfg.top_p,
                                     max_tokens=self.cfg.max_completion_length, seed=seed + i) for i in range(len(prompt_ids))]
            outs = self._engine.generate(prompt_ids, params, use_tqdm=False)
            return [[(list(c.token_ids), list(c.logprobs)) for c in o.outputs] for o in outs]
        return self._generate(model, prompt_ids, n, seed)

    @torch.no_grad()
    def _generate(self, model, prompt_ids, n, seed):
        flat = [p for p in prompt_ids for _ in range(n)]
        width = max(map(len, flat))
        pad = self.tok.pad_token_id
        ids = torch.full((len(flat), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(flat):
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        device = next(model.parameters()).device
        torch.manual_seed(seed)
        was_training = model.training
        model.eval()
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=True,
                             temperature=self.cfg.temperature, top_p=self.cfg.top_p, top_k=0,
                             max_new_tokens=self.cfg.max_completion_length, pad_token_id=pad,
                             eos_token_id=self.tok.eos_token_id, output_logits=True, return_dict_in_generate=True)
        model.train(was_training)
        gen = out.sequences[:, width:]
        logits = torch.stack(out.logits, dim=1).float() / self.cfg.temperature
        logps = torch.log_softmax(logits, -1).gather(-1, gen[..., None]).squeeze(-1)
        res = []
        for i in range(len(flat)):
            toks = gen[i].tolist()
            if self.tok.eos_token_id in toks:
                toks = toks[: toks.index(self.tok.eos_token_id) + 1]
            res.append((toks, logps[i, : len(toks)].tolist()))
        return [res[j * n:(j + 1) * n] for j in range(len(prompt_ids))]

    # ---- the rollout_func -----------------------------------------------------------------------
    def __call__(self, prompts: list, trainer) -> dict:
        model = trainer.accelerator.unwrap_model(trainer.model)
        n = trainer.num_generations if model.training else trainer.num_generations_eval
        if len(prompts) % n:
            raise ValueError(f"got {len(prompts)} prompts, not a multiple of num_generations={n}")
        groups = [prompts[i] for i in range(0, len(prompts), n)]
        seed = self.cfg.seed * 1_000_003 + trainer.state.global_step * 1009 + self._round + 7919 * trainer.accelerator.process_index
        self._round += 1
        prompt_ids = [self.encode(p) for p in groups]
        samples = self._sample(model, prompt_ids, n, seed)
        answers = [trainer._current_answers[g * n] for g in range(len(groups))]
        if self.cfg.dynamic_sampling:
            self._resample_flat_groups(model, groups, prompt_ids, samples, answers, trainer, n, seed)
        out = {"prompt_ids": [], "completion_ids": [], "logprobs": []}
        for g in range(len(groups)):
            for toks, lps in samples[g]:
                out["prompt_ids"].append(prompt_ids[g])
                out["completion_ids"].append(toks)
                out["logprobs"].append(lps)
        if self.cfg.dynamic_sampling:  # replaced prompts carry their own gold answer to the reward
            out["answer"] = [a for a in answers for _ in range(n)]
        return out

    def _resample_flat_groups(self, model, groups, prompt_ids, samples, answers, trainer, n, seed):
        rng = random.Random(seed)
        kept = replaced = 0
        for g in range(len(groups)):
            answer = answers[g]
            for attempt in range(self.cfg.dynamic_sampling_tries + 1):
                texts = self.tok.batch_decode([t for t, _ in samples[g]], skip_special_tokens=True)
                scores = math_reward_func(texts, [answer] * n)
                if len(set(scores)) > 1 or attempt == self.cfg.dynamic_sampling_tries:
                    break
                row = self.pool[rng.randrange(len(self.pool))]
                prompt_ids[g] = self.encode(row["prompt"])
                answer = row["answer"]
                answers[g] = answer
                samples[g] = self._sample(model, [prompt_ids[g]], n, seed + 31 * (attempt + 1) + g)[0]
                replaced += 1
            kept += 1
        trainer._metrics["train"]["dynamic_sampling/replaced_groups"].append(replaced / max(kept, 1))


class HybridGRPOTrainer(CompleteCheckpoints, GRPOTrainer):
    """GRPOTrainer + rollout/trainer logprob gap and TIS on any rollout backend (see module docstring)."""

    def __init__(self, *args, tis_cap: float = 2.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.tis_cap = tis_cap

    def _generate_and_score_completions(self, inputs):
        self._current_answers = [x.get("answer") for x in inputs]  # for dynamic sampling
        out = super()._generate_and_score_completions(inputs)
        sampling = out.get("sampling_per_token_logps")
        if sampling is None:
            return out
        mask = out["completion_mask"] if "tool_mask" not in out else out["completion_mask"] * out["tool_mask"]
        old = out.get("old_per_token_logps")
        if old is None:
            ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
            attn = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
            mode = "train" if self.model.training else "eval"
            bs = self.args.per_device_train_batch_size if mode == "train" else self.args.per_device_eval_batch_size
            with torch.no_grad():
                old, _, _ = self._get_per_token_logps_and_entropies(self.model, ids, attn, out["completion_ids"].size(1), batch_size=bs)
            out["old_per_token_logps"] = old
        m = mask.bool()
        diff = (old - sampling).masked_fill(~m, 0.0)
        gap = diff.abs()[m]
        metrics = self._metrics["train" if self.model.training else "eval"]
        metrics["sampling/logprob_gap/mean"].append(self.accelerator.gather(gap.mean() if gap.numel() else diff.new_zeros(())).mean().item())
        metrics["sampling/logprob_gap/max"].append(self.accelerator.gather(gap.max() if gap.numel() else diff.new_zeros(())).max().item())
        if self.tis_cap > 0:
            w = torch.exp(diff).clamp(max=self.tis_cap).masked_fill(~m, 0.0)
            adv = out["advantages"]
            out["advantages"] = (adv.unsqueeze(1) if adv.dim() == 1 else adv) * w
            metrics["sampling/tis_weight/mean"].append(self.accelerator.gather(w[m].mean() if m.any() else w.new_ones(())).mean().item())
        return out


def trl_args(cfg: GRPOConfig) -> TRLGRPOConfig:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_step = cfg.per_device_batch_size * world
    if cfg.mini_batch_size % per_step or cfg.generation_batch_size % cfg.mini_batch_size:
        raise ValueError(
            f"mini_batch_size ({cfg.mini_batch_size}) must be a multiple of per_device_batch_size x devices ({per_step}), "
            f"and generation_batch_size ({cfg.generation_batch_size}) a multiple of mini_batch_size"
        )
    if cfg.generation_batch_size % cfg.num_generations:
        raise ValueError(f"generation_batch_size {cfg.generation_batch_size} is not a multiple of num_generations {cfg.num_generations}")
    base = common_args(cfg)
    base["gradient_accumulation_steps"] = cfg.mini_batch_size // per_step
    return TRLGRPOConfig(
        **base,
        steps_per_generation=cfg.generation_batch_size // per_step,
        num_generations=cfg.num_generations,
        num_iterations=cfg.num_iterations,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        max_completion_length=cfg.max_completion_length,
        beta=cfg.beta,
        entropy_coef=cfg.entropy_coef,
        epsilon=cfg.epsilon,
        epsilon_high=cfg.epsilon_high or cfg.epsilon,
        loss_type=cfg.loss_type,
        scale_rewards=cfg.scale_rewards,
        mask_truncated_completions=False,
        log_completions=False,
        shuffle_dataset=True,
    )


def build_trainer(cfg: GRPOConfig, resume_from: str | None = None):
    for name in ("model", "prompts"):
        if not getattr(cfg, name):
            raise DataError(f"--{name} is required")
    tok = AutoTokenizer.from_pretrained(cfg.model)
    import datasets

    rows = load_prompts(cfg.prompts, cfg.data_format, cfg.data_split, cfg.data_limit or None)
    lengths = [len(tok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=True, return_dict=False)) for r in rows]
    rows = [r for r, n in zip(rows, lengths) if n <= cfg.max_prompt_length]
    if not rows:
        raise DataError(f"{cfg.prompts}: no prompt fits max_prompt_length={cfg.max_prompt_length}")
    train = datasets.Dataset.from_list(rows)
    model = load_student(cfg.model, dtype=torch.float32)
    args = trl_args(cfg)
    trainer = HybridGRPOTrainer(
        model=model, reward_funcs=[_reward], args=args, train_dataset=train, processing_class=tok,
        rollout_func=Rollouts(cfg, tok, rows), tis_cap=cfg.tis_cap,
        callbacks=[JsonlMetrics(f"{cfg.out}/metrics.jsonl", resume_step(resume_from))],
    )
    return trainer, tok


def run(cfg: GRPOConfig):
    limit = deadline(cfg)  # counted from the command's start
    resume_from = prepare_out(cfg)
    torch.manual_seed(cfg.seed)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    trainer, tok = build_trainer(cfg, resume_from)
    train_or_pause(trainer, TimeLimit(limit), resume_from, cfg.max_steps, cfg.out)
    final = save_final(trainer, tok, cfg.out)
    log.info("GRPO policy saved to %s", final)
    return trainer


def cli_main(argv: list[str] | None = None) -> int:
    cfg = parse_config(GRPOConfig, argv, "m1 grpo", __doc__.split("\n\n")[0], presets=RECIPES)
    with remove_if_left_empty(cfg.out):  # a failed first run leaves no empty run directory
        run(cfg)
    return 0
