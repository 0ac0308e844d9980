"""Generation backends for evaluation behind one small interface.

`HFGenerator` uses `transformers` `model.generate` (batched, left-padded); `EngineGenerator`
uses m1's own continuous-batching Engine. The choice is explicit (`--backend`), never a
silent fallback. Every request carries its own `SamplingParams` (m1's one sampling type),
seeded by the caller per (problem, chunk), so a resumed run regenerates exactly the samples
an uninterrupted one would have produced.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Protocol

from m1.engine.params import SamplingParams

logger = logging.getLogger(__name__)


@dataclass
class Sample:
    text: str
    num_tokens: int
    finish_reason: str  # "stop" (EOS) or "length"


class Generator(Protocol):
    name: str
    requests_per_call: int | None  # how many requests the eval loop hands over per call; None: a whole benchmark

    def generate(self, prompts: list[str], params: list[SamplingParams]) -> list[list[Sample]]:
        """`params[i].n` samples of `prompts[i]` for every i, deterministic given `params[i].seed`."""
        ...


class HFGenerator:
    """`transformers` generation: the n samples of a prompt form one left-padded batch."""

    name = "hf"
    requests_per_call = 1

    def __init__(self, model, tokenizer, device: str | None = None) -> None:
        import torch

        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        from m1.engine import end_token_ids

        self.ends = end_token_ids(self.model, tokenizer)  # the engine's stop set, so both backends end alike

    def generate(self, prompts: list[str], params: list[SamplingParams]) -> list[list[Sample]]:
        return [self._one(prompt, p) for prompt, p in zip(prompts, params)]

    def _one(self, prompt: str, sampling: SamplingParams) -> list[Sample]:
        import torch

        enc = self.tokenizer([prompt] * sampling.n, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        torch.manual_seed(sampling.seed)
        do_sample = sampling.temperature > 0
        ends = self.ends
        kwargs = dict(do_sample=do_sample, max_new_tokens=sampling.max_tokens, pad_token_id=self.tokenizer.pad_token_id,
                      eos_token_id=sorted(ends) or None)
        if do_sample:
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
        with torch.no_grad():
            out = self.model.generate(**enc, **kwargs)
        new = out[:, enc["input_ids"].shape[1] :]
        samples = []
        for row in new.tolist():
            ids, finish = row, "length"
            end = next((i for i, t in enumerate(row) if t in ends), None)
            if end is not None:
                ids, finish = row[:end], "stop"
            samples.append(Sample(self.tokenizer.decode(ids, skip_special_tokens=True), len(ids), finish))
        return samples


class EngineGenerator:
    """m1's Engine (the default backend): the n samples of a prompt share one prefill, and the
    requests of one call are batched continuously over `max_batch_size` slots.

    `requests_per_call`: 1 (`m1 eval`: each chunk is written as soon as it is done) or None (a
    whole benchmark per call: for tiny models on a CPU, which are bound by per-call overhead).
    With a fixed context (the default: the engine's `max_model_len`) a completion is limited to
    what the context leaves after the prompt (logged once), where transformers would run past
    the model's context; `fit_context=True` instead sizes a fresh engine to each call's longest
    prompt and `max_tokens`.
    """

    name = "engine"

    def __init__(self, model, tokenizer, max_batch_size: int = 256, requests_per_call: int | None = 1,
                 fit_context: bool = False, memory_budget_gb: float | None = None) -> None:
        from m1.engine import Engine  # only when this backend is chosen

        self.model = model  # for --verifier self
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.requests_per_call = requests_per_call
        self.memory_budget_gb = memory_budget_gb
        self.engine = None if fit_context else Engine(model, tokenizer, max_batch_size=max_batch_size,
                                                      memory_budget_gb=memory_budget_gb)
        self._clamped = False

    def generate(self, prompts: list[str], params: list[SamplingParams]) -> list[list[Sample]]:
        import torch

        from m1.engine import Engine

        ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        engine = self.engine
        if engine is None:
            engine = Engine(self.model, self.tokenizer, max_batch_size=self.max_batch_size, memory_budget_gb=self.memory_budget_gb,
                            max_model_len=max(map(len, ids)) + max(p.max_tokens for p in params) + 1)
        else:
            params = [self._fit(p, len(i)) for p, i in zip(params, ids)]
        with torch.no_grad():
            outs = engine.generate(ids, params, use_tqdm=self.requests_per_call is None)
        return [[Sample(o.text, len(o.token_ids), o.finish_reason) for o in out.outputs] for out in outs]

    def _fit(self, p: SamplingParams, prompt_len: int) -> SamplingParams:
        room = self.engine.max_model_len - prompt_len
        max_tokens = max(1, min(p.max_tokens, room))
        if max_tokens < p.max_tokens and not self._clamped:
            self._clamped = True
            logger.warning("engine backend: max_tokens %d limited to %d by max_model_len %d",
                           p.max_tokens, max_tokens, self.engine.max_model_len)
        return dataclasses.replace(p, max_tokens=max_tokens)


def load_generator(backend: str, model_dir: str, dtype: str = "auto", device: str | None = None,
                   max_batch_size: int = 256, requests_per_call: int | None = 1,
                   memory_budget_gb: float | None = None) -> tuple[Generator, object]:
    """Load the model and tokenizer from `model_dir` and wrap them in the chosen backend.

    ``model_dir`` is a checkpoint directory, a hub id or a `.gguf` file (dequantised to fp32
    by transformers' GGUF reader; a teacher is often at hand only in that form).
    ``device`` (e.g. ``cuda:1`` for one data-parallel rank) defaults to CUDA when present.
    The engine backend loads a hybrid checkpoint as it is, and a Llama/Qwen2 checkpoint as the
    all-attention hybrid (`convert_from_transformer` keeping every layer: the same network);
    ``max_batch_size``, ``requests_per_call`` and ``memory_budget_gb`` size it
    (`EngineGenerator`); the hf backend takes one request per call.
    """
    from m1.checkpoint import load_tokenizer
    from m1.logs import quiet_cpu_kernel_hints

    quiet_cpu_kernel_hints()  # transformers' GraniteMoeHybrid asks for CUDA-only kernels on a CPU
    tokenizer = load_tokenizer(model_dir)
    if backend == "hf":
        gen: Generator = HFGenerator(_load_causal_lm(model_dir, dtype), tokenizer, device=device)
    elif backend == "engine":
        import torch

        model = load_engine_model(model_dir, dtype)
        device = device or ("cuda" if torch.cuda.is_available() else None)
        gen = EngineGenerator(model if device is None else model.to(device), tokenizer, max_batch_size=max_batch_size,
                              requests_per_call=requests_per_call, memory_budget_gb=memory_budget_gb)
    else:
        raise ValueError(f"unknown backend {backend!r} (choose hf or engine)")
    logger.info("generation backend: %s (%s)", gen.name, model_dir)
    return gen, tokenizer


def _load_causal_lm(model_dir: str, dtype: str = "auto"):
    """A transformers causal LM: a `.gguf` file through `m1.checkpoint.load_causal_lm` (fp32 unless
    `dtype` names another), anything else through `AutoModelForCausalLM` at `dtype`."""
    from transformers import AutoModelForCausalLM

    if str(model_dir).lower().endswith(".gguf"):
        import torch

        from m1.checkpoint import load_causal_lm

        return load_causal_lm(model_dir, None if dtype == "auto" else getattr(torch, dtype))
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)


def load_engine_model(model_dir: str, dtype: str = "auto"):
    """m1's `HybridForCausalLM` for a hybrid checkpoint, or a Llama/Qwen2 checkpoint (directory, hub
    id or `.gguf` file) as the all-attention hybrid (the same network): the model the Engine and
    the likelihood verifier run."""
    from m1.modeling import HybridForCausalLM

    if str(model_dir).lower().endswith(".gguf"):
        model_type = "gguf"
    else:
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(model_dir)
        model_type = cfg.model_type
    if model_type in ("llama", "qwen2", "gguf"):
        from m1.convert.mapping import convert_from_transformer

        teacher = _load_causal_lm(model_dir, dtype)
        n = teacher.config.num_hidden_layers
        return convert_from_transformer(teacher, attention_layers=list(range(n))).eval()
    return HybridForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
