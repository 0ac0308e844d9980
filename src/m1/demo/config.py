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

if TYPE_CHECKING:
    from m1.tasks.teacher import TeacherConfig


def _teacher_config(**kw) -> "TeacherConfig":
    from m1.tasks.teacher import TeacherConfig

    return TeacherConfig(**kw)


@dataclass(frozen=True)
class DataSizes:
    n_train: int = 20_000  # training problems per difficulty
    n_test_easy: int = 1_000
    n_test_hard: int = 1_000


@dataclass(frozen=True)
class InitEvalSizes:
    """Greedy accuracy right after pretraining and conversion."""

    n_easy: int = 1_000  # easy test problems, teacher and converted hybrid
    n_hard: int = 1_000  # hard test problems, teacher only
    max_tokens_easy: int = 48
    max_tokens_hard: int = 192
    n_kl_texts: int = 32  # held-out sequences for KL(teacher || hybrid) at init


@dataclass(frozen=True)
class DistillSizes:
    steps: int = 100
    batch: int = 16
    lr: float = 1e-3
    warmup: int = 10
    n_easy: int = 2000
    n_hard: int = 500
    max_length: int = 512


@dataclass(frozen=True)
class SFTSizes:
    steps: int = 100
    batch: int = 4
    max_length: int = 1024
    lr: float = 1e-3
    warmup: int = 10
    n_easy: int = 500
    n_hard: int = 4000


@dataclass(frozen=True)
class GRPOSizes:
    steps: int = 20
    generations: int = 8
    generation_batch: int = 64
    mini_batch: int = 32
    lr: float = 2e-5
    temperature: float = 1.0
    max_tokens: int = 256
    n_prompts: int = 2000


@dataclass(frozen=True)
class VerifierSizes:
    n_prompts: int = 200  # hard training problems the SFT hybrid samples for labelled data
    samples: int = 4
    temperature: float = 1.0
    steps: int = 60
    batch: int = 32
    lr: float = 3e-4


@dataclass(frozen=True)
class HardSamples:
    """Samples per hard test problem for each evaluated model."""

    teacher: int = 1
    hybrid_init: int = 1
    distill: int = 1
    sft: int = 2
    grpo: int = 2
    teacher_sft: int = 2
    teacher_grpo: int = 2


@dataclass(frozen=True)
class EvalSizes:
    n_easy: int = 200
    n_easy_samples: int = 4
    n_hard: int = 1000
    n_hard_samples: HardSamples = field(default_factory=HardSamples)
    scaling_problems: int = 100  # first hard test problems given `scaling_n` samples (maj@k, verify@k, budget curves)
    scaling_n: int = 8
    temperature: float = 0.7
    max_tokens_easy: int = 64
    max_tokens_hard: int = 256
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
    attention_fraction: float = 0.25  # share of layers kept as attention in the hybrid
    data: DataSizes = field(default_factory=DataSizes)
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
            data=DataSizes(n_train=2_000, n_test_easy=200, n_test_hard=1_000),
            teacher=_teacher_config(steps=40, batch_size=16, seed=seed),
            init_eval=InitEvalSizes(n_easy=64, n_hard=0, n_kl_texts=8),
            distill=DistillSizes(steps=3, batch=4, lr=1e-3, warmup=0, n_easy=32, n_hard=8),
            sft=SFTSizes(steps=3, batch=2, max_length=512, lr=1e-3, warmup=0, n_easy=8, n_hard=32),
            grpo=GRPOSizes(steps=2, generations=4, generation_batch=8, mini_batch=8, lr=1e-5, temperature=1.0, max_tokens=48, n_prompts=16),
            verifier=VerifierSizes(n_prompts=8, samples=2, temperature=1.0, steps=3, batch=8, lr=3e-4),
            eval=EvalSizes(n_easy=16, n_easy_samples=2, n_hard=32, n_hard_samples=HardSamples(1, 1, 1, 1, 1, 1, 1),
                           scaling_problems=8, scaling_n=4, temperature=0.7, max_tokens_easy=48, max_tokens_hard=64),
            speed=SpeedSizes(batch=4, lengths=(16, 32, 64)),
        )


MODELS = {  # model name in the report -> checkpoint directory under the demo's out
    "teacher": ("convert_teacher",),
    "hybrid_init": ("convert",),
    "distill": ("distill", "run", "final"),
    "sft": ("sft", "run", "final"),
    "grpo": ("grpo", "run", "final"),
    "teacher_sft": ("teacher_sft", "run", "final"),
    "teacher_grpo": ("teacher_grpo", "run", "final"),
}
SCALED = ("teacher", "sft", "grpo", "teacher_grpo")  # given `scaling_n` samples on the first hard problems
HYBRID, BASELINE = "grpo", "teacher_grpo"  # the equal-wall-clock comparison


@dataclass
class Context:
    """What stages share: the config and the results of the stages run or skipped so far."""

    cfg: DemoConfig
    results: dict[str, dict] = field(default_factory=dict)

    def path(self, *parts: str) -> Path:
        return self.cfg.out.joinpath(*parts)
