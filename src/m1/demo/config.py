"""The demo's sizes, typed: one dataclass per stage, `DemoConfig.make` picks full or quick; and
what the stages and the report share (`Context`, the evaluated models).

Every number a stage uses is a field here, so the report can state the work of each stage
and a change of size is a change of this file. Light to import (no torch): the teacher's
config is built on first use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from m1.tasks.arithmetic import Difficulty

if TYPE_CHECKING:
    from m1.tasks.teacher import TeacherConfig


def _teacher_config(**kw) -> "TeacherConfig":
    from m1.tasks.teacher import TeacherConfig

    return TeacherConfig(**kw)


@dataclass(frozen=True)
class TaskLadder:
    """The task's levels, by chain length (steps).

    The teacher pretrains on short chains only (``pretrain``). A transformer this small does
    not extrapolate in length: trained on chains of 2..K steps it solves them and almost
    none of K+1 or more (studies/results/demo_ladder_*.json, every variant). So the hard level
    straddles that edge: the teacher solves its shortest chains and not the longer ones,
    which puts its greedy hard accuracy in 10-60%, and SFT on the hard traces, then GRPO,
    have something to teach. Easy chains are within pretraining, so distillation's target
    (the hybrid keeps the teacher's easy accuracy) is about conversion, not extrapolation.
    """

    easy_steps: tuple[int, int] = (1, 2)
    pretrain_steps: tuple[int, int] = (3, 7)  # the teacher's longer pretraining chains
    # share of the teacher's batches drawn from the longer chains, the rest from easy ones:
    # short batches are cheap and teach the per-line skills (copy the labelled operation, one
    # step of arithmetic) that the longer chains then extend
    pretrain_fraction: float = 0.4
    hard_steps: tuple[int, int] = (6, 10)

    @property
    def easy(self) -> Difficulty:
        return Difficulty("easy", *self.easy_steps)

    @property
    def pretrain(self) -> Difficulty:
        return Difficulty("short", *self.pretrain_steps)

    @property
    def hard(self) -> Difficulty:
        return Difficulty("hard", *self.hard_steps)


@dataclass(frozen=True)
class DataSizes:
    n_pretrain: int = 20_000  # the teacher's pretraining problems (short chains); also distillation text
    n_train: int = 20_000  # training problems per difficulty (easy, hard)
    n_test_easy: int = 1_000
    n_test_hard: int = 1_000


@dataclass(frozen=True)
class ConvertSizes:
    """`m1 convert --init calibrated` on task text: each Mamba head's decay from its attention
    head's measured distance, closed-form output, then a brief per-layer fit (step-bounded,
    not time-bounded, so two runs give the same model)."""

    init: str = "calibrated"
    calibration_sequences: int = 32
    calibration_seq_len: int = 256
    fit_steps: int = 100
    fit_batch: int = 4
    fit_lr: float = 1e-3


@dataclass(frozen=True)
class InitEvalSizes:
    """Greedy accuracy right after pretraining and conversion."""

    n_easy: int = 500  # easy test problems, teacher and converted hybrid
    n_hard: int = 1_000  # hard test problems, teacher only
    max_tokens_easy: int = 48
    max_tokens_hard: int = 160
    n_kl_texts: int = 32  # held-out sequences for KL(teacher || hybrid) at init


@dataclass(frozen=True)
class DistillSizes:
    """The staged recipe (`m1 distill --stages align,kl --loss forward_kl`) on pretraining text:
    first only the Mamba mixers learn, teacher-forced, to reproduce their attention layers'
    outputs (``align_fraction`` of the steps), then the whole hybrid matches the teacher's
    next-token distribution. ``m1_baseline`` also runs M1's one-stage recipe (attention copy,
    reverse KL, same steps and data) as a reported second line."""

    steps: int = 500
    batch: int = 16
    lr: float = 2e-3
    warmup: int = 10
    n_texts: int = 8000  # pretraining conversations (short chains) distilled on
    max_length: int = 512
    stages: str = "align,kl"
    loss: str = "forward_kl"
    align_fraction: float = 0.2
    align_lr: float = 1e-3
    m1_baseline: bool = True


@dataclass(frozen=True)
class SFTSizes:
    """160 steps (about one epoch of the SFT conversations): at 80 steps the hybrid was still
    learning (loss 0.03-0.06) and its hard pass@1 at T 1.0 swung with the last bits of the
    arithmetic: two runs of one seed whose calibrated inits differed in the last bits (a
    nondeterministic least-squares call, since replaced) ended at 0.249 and 0.117. At 160 steps
    the same two starts reached 0.473 and 0.471. 140 here, to leave GRPO
    its 80 steps inside the 20 minutes (the loss curves of those runs were flat from step ~130)."""

    steps: int = 140
    batch: int = 4
    max_length: int = 1024
    lr: float = 1e-3
    warmup: int = 10
    n_easy: int = 500
    n_hard: int = 4000


@dataclass(frozen=True)
class GRPOSizes:
    """M1's GRPO recipe (`m1.train.grpo.RECIPES["m1"]`) at the demo's scale, with no entropy bonus:
    M1's 0.01 is for a 3B model at lr 1e-6; on this tiny model it raised the policy's entropy
    (0.06 -> 0.15 nats/token in 40 steps) and every extra bit of randomness breaks a chain of
    exact steps (hard reward 0.27 -> 0.0). Large rounds (32 prompts x 8) at lr 1e-4: with 8
    prompts a round, or at 2e-4-3e-4, the noisy updates made the policy no better or worse.
    Rollouts at T 1.0, the temperature the demo evaluates at. Measured on one SFT hybrid (hard
    pass@1 on 1,000 problems x 2 samples, at the rollout temperature): T 1.0 40 steps +5.0
    points, 60 steps +8.4, 40 steps at lr 2e-4 +3.3; T 0.8 40 steps +2.7 and T 0.7 +0.9
    (measured at T 0.7). From a better-trained SFT hybrid (160 SFT steps, 0.473), 60 steps gained
    +4.8: hence 80."""

    steps: int = 80
    generations: int = 8
    generation_batch: int = 256
    mini_batch: int = 128
    lr: float = 1e-4
    temperature: float = 1.0
    max_tokens: int = 160
    entropy_coef: float = 0.0
    iterations: int = 1  # PPO epochs over each round's rollouts (TRL's num_iterations)
    n_prompts: int = 2000


@dataclass(frozen=True)
class VerifierSizes:
    """The verifier is a trained model of the pipeline read as a likelihood verifier (see
    `m1.demo.stages.stage_verifier` for why not a reward model)."""

    model: str = "teacher_sft"  # a MODELS key
    n_pairs: int = 200  # held-out hard training problems: reference vs one-slip copy, to check it


@dataclass(frozen=True)
class EvalSizes:
    """What the eval stage samples, all through `m1.eval`.

    Greedy easy accuracy of the distilled hybrids (on the problems and budget of
    ``InitEvalSizes``, against the teacher's from ``eval_init``);
    sampled hard pass@1 of the SFT and GRPO models of both lines on ``n_hard`` problems
    (the paired GRPO-gain interval needs >= 1,000); ``scaling_problems`` hard problems with
    many samples for the final hybrid and the teacher-trained model: maj@k, verify@k and
    accuracy against wall-clock. The faster model gets more samples (``scaling_n_hybrid``),
    so that at equal time it can spend its speed; budgets stop where the first model runs
    out of samples, so neither is ever capped.
    """

    n_hard: int = 1000
    n_hard_samples: int = 2  # the hybrid line's (sft, grpo): the paired GRPO-gain interval; the teacher line's get 1
    scaling_problems: int = 100
    scaling_n: int = 8  # teacher-trained
    scaling_n_hybrid: int = 16
    # T 1.0: the policy's own distribution, the one GRPO samples and improves. At 0.7 the SFT
    # model is already sharper (hard pass@1 0.36 against 0.25 at 1.0) and GRPO's gain smaller.
    temperature: float = 1.0
    max_tokens_easy: int = 48
    max_tokens_hard: int = 160
    batch: int = 256  # Engine slots


@dataclass(frozen=True)
class SpeedSizes:
    batch: int = 32
    lengths: tuple[int, ...] = (32, 64, 128, 256, 384)


@dataclass
class DemoConfig:
    """Sizes of everything the demo builds; ``quick`` shrinks them for CI."""

    out: Path
    quick: bool = False
    seed: int = 0
    force: bool = False
    threads: int = 2
    # share of layers kept as attention (M1: 6 of 28). Half of this tiny model's 4: with one
    # attention layer the hybrid learned easy chains but not long ones (hard pass@1 after SFT
    # 1.6% against the teacher-trained model's 25%, chains of 8-14 steps): the long chains
    # need look-ups over the whole question, which two attention layers keep.
    attention_fraction: float = 0.5
    attention_layers: tuple[int, ...] | None = None  # which layers, if set (else spread by the fraction)
    task: TaskLadder = field(default_factory=TaskLadder)
    data: DataSizes = field(default_factory=DataSizes)
    convert: ConvertSizes = field(default_factory=ConvertSizes)
    teacher: "TeacherConfig" = field(default_factory=_teacher_config)
    init_eval: InitEvalSizes = field(default_factory=InitEvalSizes)
    distill: DistillSizes = field(default_factory=DistillSizes)
    sft: SFTSizes = field(default_factory=SFTSizes)
    grpo: GRPOSizes = field(default_factory=GRPOSizes)
    verifier: VerifierSizes = field(default_factory=VerifierSizes)
    eval: EvalSizes = field(default_factory=EvalSizes)
    speed: SpeedSizes = field(default_factory=SpeedSizes)

    @classmethod
    def make(cls, out: Path, quick: bool = False, seed: int = 0, force: bool = False, threads: int = 2) -> "DemoConfig":
        if not quick:
            return cls(out=out, seed=seed, force=force, threads=threads, teacher=_teacher_config(seed=seed))
        return cls(
            out=out, quick=True, seed=seed, force=force, threads=threads,
            data=DataSizes(n_pretrain=2_000, n_train=2_000, n_test_easy=200, n_test_hard=1_000),
            convert=ConvertSizes(calibration_sequences=4, calibration_seq_len=128, fit_steps=3),
            teacher=_teacher_config(steps=40, batch_size=16, seed=seed),
            init_eval=InitEvalSizes(n_easy=64, n_hard=0, n_kl_texts=8),
            distill=DistillSizes(steps=4, batch=4, lr=1e-3, warmup=0, n_texts=40, align_fraction=0.25),
            sft=SFTSizes(steps=3, batch=2, max_length=512, lr=1e-3, warmup=0, n_easy=8, n_hard=32),
            grpo=GRPOSizes(steps=2, generations=4, generation_batch=8, mini_batch=8, lr=1e-5, temperature=1.0, max_tokens=48, n_prompts=16),
            verifier=VerifierSizes(n_pairs=16),
            eval=EvalSizes(n_hard=32, n_hard_samples=1, scaling_problems=8, scaling_n=4, scaling_n_hybrid=4,
                           temperature=1.0, max_tokens_easy=48, max_tokens_hard=64),
            speed=SpeedSizes(batch=4, lengths=(16, 32, 64)),
        )


MODELS = {  # model name in the report -> checkpoint directory under the demo's out
    "teacher": ("convert_teacher",),
    "hybrid_init": ("convert",),
    "distill": ("distill", "run", "final"),
    "distill_m1": ("distill_m1", "run", "final"),
    "sft": ("sft", "run", "final"),
    "grpo": ("grpo", "run", "final"),
    "teacher_sft": ("teacher_sft", "run", "final"),
    "teacher_grpo": ("teacher_grpo", "run", "final"),
}
HYBRID, BASELINE = "grpo", "teacher_grpo"  # the equal-wall-clock comparison


@dataclass
class Context:
    """What stages share: the config and the results of the stages run or skipped so far."""

    cfg: DemoConfig
    results: dict[str, dict] = field(default_factory=dict)

    def path(self, *parts: str) -> Path:
        return self.cfg.out.joinpath(*parts)
