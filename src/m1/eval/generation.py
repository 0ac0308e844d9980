"""Generation backends for evaluation behind one small interface.

`HFGenerator` uses `transformers` `model.generate` (batched, left-padded); `EngineGenerator`
uses m1's own continuous-batching Engine. The choice is explicit (`--backend`), never a
silent fallback. Every call is seeded by the caller per (problem, chunk), so a resumed run
regenerates exactly the samples an uninterrupted one would have produced.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

logger = logging.getLogger(__name__)


@dataclass
class SamplingConfig:
    """Sampling settings shared by all backends."""

    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 32768


@dataclass
class Sample:
    text: str
    num_tokens: int
    finish_reason: str  # "stop" (EOS) or "length"


class Generator(Protocol):
    name: str

    def generate(self, prompt: str, n: int, sampling: SamplingConfig, seed: int) -> list[Sample]:
        """n samples for one prompt, deterministic given seed."""
        ...


class HFGenerator:
    """`transformers` generation: the n samples of a prompt form one left-padded batch."""

    name = "hf"

    def __init__(self, model, tokenizer, device: str | None = None) -> None:
        import torch

        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"

    def generate(self, prompt: str, n: int, sampling: SamplingConfig, seed: int) -> list[Sample]:
        import torch

        enc = self.tokenizer([prompt] * n, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        torch.manual_seed(seed)
        do_sample = sampling.temperature > 0
        kwargs = dict(do_sample=do_sample, max_new_tokens=sampling.max_tokens, pad_token_id=self.tokenizer.pad_token_id)
        if do_sample:
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        with torch.no_grad():
            out = self.model.generate(**enc, **kwargs)
        new = out[:, enc["input_ids"].shape[1] :]
        eos = self.tokenizer.eos_token_id
        samples = []
        for row in new.tolist():
            ids, finish = row, "length"
            if eos is not None and eos in row:
                ids, finish = row[: row.index(eos)], "stop"
            samples.append(Sample(self.tokenizer.decode(ids, skip_special_tokens=True), len(ids), finish))
        return samples


class EngineGenerator:
    """m1's Engine (the default backend): n samples of one prompt share one prefill.

    A completion is limited to what the engine's max_model_len leaves after the prompt (logged
    once), where transformers would run past the model's context."""

    name = "engine"

    def __init__(self, model, tokenizer) -> None:
        from m1.engine import Engine  # only when this backend is chosen

        self.model = model  # for --verifier self
        self.tokenizer = tokenizer
        self.engine = Engine(model, tokenizer)
        self._clamped = False

    def generate(self, prompt: str, n: int, sampling: SamplingConfig, seed: int) -> list[Sample]:
        from m1.engine import SamplingParams

        room = self.engine.max_model_len - len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        max_tokens = max(1, min(sampling.max_tokens, room))
        if max_tokens < sampling.max_tokens and not self._clamped:
            self._clamped = True
            logger.warning("engine backend: max_tokens %d limited to %d by max_model_len %d",
                           sampling.max_tokens, max_tokens, self.engine.max_model_len)
        params = SamplingParams(n=n, temperature=sampling.temperature, top_p=sampling.top_p,
                                max_tokens=max_tokens, seed=seed)
        out = self.engine.generate([prompt], params)[0]
        return [Sample(o.text, len(o.token_ids), o.finish_reason) for o in out.outputs]


def load_generator(backend: str, model_dir: str, dtype: str = "auto", device: str | None = None) -> tuple[Generator, object]:
    """Load the model and tokenizer from `model_dir` and wrap them in the chosen backend.

    ``device`` (e.g. ``cuda:1`` for one data-parallel rank) defaults to CUDA when present.
    The engine backend loads a hybrid checkpoint as it is, and a Llama/Qwen2 checkpoint as the
    all-attention hybrid (`convert_from_transformer` keeping every layer: the same network).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from m1.logs import quiet_cpu_kernel_hints

    quiet_cpu_kernel_hints()  # transformers' GraniteMoeHybrid asks for CUDA-only kernels on a CPU
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if backend == "hf":
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
        gen: Generator = HFGenerator(model, tokenizer, device=device)
    elif backend == "engine":
        import torch

        model = _load_for_engine(model_dir, dtype)
        device = device or ("cuda" if torch.cuda.is_available() else None)
        gen = EngineGenerator(model if device is None else model.to(device), tokenizer)
    else:
        raise ValueError(f"unknown backend {backend!r} (choose hf or engine)")
    logger.info("generation backend: %s (%s)", gen.name, model_dir)
    return gen, tokenizer


def _load_for_engine(model_dir: str, dtype: str):
    from transformers import AutoConfig

    from m1.modeling import HybridForCausalLM

    cfg = AutoConfig.from_pretrained(model_dir)
    if cfg.model_type in ("llama", "qwen2"):
        from transformers import AutoModelForCausalLM

        from m1.convert.mapping import convert_from_transformer

        teacher = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
        return convert_from_transformer(teacher, attention_layers=list(range(cfg.num_hidden_layers))).eval()
    return HybridForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
