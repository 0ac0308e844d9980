"""The engine's public data types: what a caller asks for and what comes back.

Shaped like vLLM's (`SamplingParams`, `RequestOutput.outputs[j]`) so evaluation and
GRPO code reads the same whichever engine produced it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SamplingParams:
    """How to sample the completions of one prompt.

    `temperature=0` is greedy. `top_p=1.0` and `top_k=0` disable truncation. `seed`
    fixes the random stream of every sample of the request (None draws one), so a
    request's tokens do not depend on which other requests share its batch.
    `stop` strings end a completion and are cut from its text; `stop_token_ids` and
    the EOS token (unless `ignore_eos`) end it too and stay in `token_ids`.
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int = 256
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    seed: int | None = None
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n: must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature: must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p: must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k: must be >= 0 (0 disables), got {self.top_k}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens: must be >= 1, got {self.max_tokens}")
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", [self.stop])

    @property
    def truncates(self) -> bool:
        """Whether sampling needs the sorted (top-p / top-k) path."""
        return self.temperature > 0 and (self.top_p < 1.0 or self.top_k > 0)


@dataclass
class CompletionOutput:
    """One sample. `logprobs[t]` is log_softmax(logits / T) at `token_ids[t]` (raw at T = 0)."""

    index: int
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str | None = None  # "stop" | "length" | "error"
    error: str | None = None


@dataclass
class RequestOutput:
    """All samples of one prompt, in sample order."""

    request_id: int
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    error: str | None = None


@dataclass(frozen=True)
class StreamDelta:
    """What one sample gained since the last delta; `finish_reason` is set on its last one."""

    index: int
    token_ids: list[int]
    text: str
    logprobs: list[float]
    finish_reason: str | None = None
    error: str | None = None
