"""Loading models for training, and the one adapter TRL needs on the hybrid.

TRL 1.16's trainers compute log-probabilities through a "fused LM head" that calls the
model's backbone (``model.base_model``) with extra keyword arguments (``use_cache``) and
reads ``.last_hidden_state`` from what it returns. `HybridModel.forward` returns the
hidden-state tensor itself and takes no extra keywords, so `HybridForTraining` swaps the
backbone's class for a subclass that does both, and re-states the causal-LM forward over
it. Parameter names, the config and the on-disk format are unchanged: what this class
saves is an ordinary hybrid checkpoint (`HybridForCausalLM.from_pretrained` loads it).

If `HybridModel.forward` ever returns a `BaseModelOutputWithPast`, this module reduces to
`HybridForCausalLM` plus the ``chunked_loss`` hook below.

``chunked_loss``: distillation computes its loss from the student's hidden states in
chunks (see `m1.train.losses`). Passing the loss function *into* the forward keeps the LM
head's use inside the wrapped module's forward, which DDP and FSDP require (FSDP
un-shards parameters only inside forward).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from m1.modeling import _OUTPUT_CACHE_FIELD, HybridForCausalLM, HybridModel

log = logging.getLogger(__name__)


class _TrainingBackbone(HybridModel):
    """`HybridModel` that tolerates the keywords trainers pass and returns a model output."""

    def forward(  # type: ignore[override]
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        cache=None,
        inputs_embeds=None,
        cu_seqlens=None,
        past_key_values=None,
        use_cache=None,
        **ignored,
    ) -> BaseModelOutputWithPast:
        hidden = super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache if cache is not None else past_key_values,
            inputs_embeds=inputs_embeds,
            cu_seqlens=cu_seqlens,
        )
        return BaseModelOutputWithPast(last_hidden_state=hidden)


class HybridForTraining(HybridForCausalLM):
    """`HybridForCausalLM` whose backbone speaks TRL's fused-LM-head protocol.

    Extra forward keyword: ``chunked_loss(hidden, lm_head) -> Tensor``; when given, the
    forward returns ``CausalLMOutputWithPast(loss=chunked_loss(...))`` without building
    the full logits.
    """

    def __init__(self, config):
        super().__init__(config)
        self.model.__class__ = _TrainingBackbone  # same module, same parameters, new forward

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        cache=None,
        past_key_values=None,
        inputs_embeds=None,
        labels=None,
        use_cache=None,
        logits_to_keep: int = 0,
        cu_seqlens=None,
        chunked_loss: Callable[[torch.Tensor, torch.nn.Module], torch.Tensor] | None = None,
        **kwargs,
    ):
        cache = cache if cache is not None else past_key_values
        hidden = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            cu_seqlens=cu_seqlens,
        ).last_hidden_state
        if chunked_loss is not None:
            return CausalLMOutputWithPast(loss=chunked_loss(hidden, self.lm_head))
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits, labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{_OUTPUT_CACHE_FIELD: cache})


def is_hybrid_checkpoint(path: str | Path) -> bool:
    """True when ``path`` is a local directory holding a GraniteMoeHybrid (m1) config."""
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return False
    import json

    return json.loads(cfg.read_text()).get("model_type") == "granitemoehybrid"


def load_student(path: str | Path, dtype: torch.dtype = torch.float32) -> HybridForTraining:
    """A hybrid checkpoint (local directory or hub id) as a trainable `HybridForTraining`."""
    model = HybridForTraining.from_pretrained(str(path), dtype=dtype)
    return model


def load_teacher(path: str | Path, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """Any causal LM (hub id or directory): a hybrid loads as m1's class, others through Auto."""
    if is_hybrid_checkpoint(path):
        model = HybridForTraining.from_pretrained(str(path), dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    model.eval()
    model.requires_grad_(False)
    return model


def backbone_hidden(model: torch.nn.Module, **inputs) -> torch.Tensor:
    """Final hidden states (after the last norm) of any transformers causal LM or the hybrid."""
    out = model.get_decoder()(**inputs) if hasattr(model, "get_decoder") else model.model(**inputs)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out
