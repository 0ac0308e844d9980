"""Loading models for training.

Students load as `HybridForCausalLM` (which TRL's trainers drive directly: its backbone
returns a `BaseModelOutputWithPast`, accepts the extra keywords trainers pass, and its
forward takes a ``chunked_loss`` hook for distillation). Teachers load as m1's class when
they are hybrid checkpoints and through `m1.checkpoint.load_causal_lm` otherwise (a
directory, a hub id or a `.gguf` file).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from m1.checkpoint import load_causal_lm
from m1.modeling import HybridForCausalLM, decoder_of

log = logging.getLogger(__name__)


def is_hybrid_checkpoint(path: str | Path) -> bool:
    """True when ``path`` is a local directory holding a GraniteMoeHybrid (m1) config."""
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return False
    import json

    return json.loads(cfg.read_text()).get("model_type") == "granitemoehybrid"


def load_student(path: str | Path, dtype: torch.dtype = torch.float32) -> HybridForCausalLM:
    """A hybrid checkpoint (local directory or hub id), trainable."""
    return HybridForCausalLM.from_pretrained(str(path), dtype=dtype)


def load_teacher(path: str | Path, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """Any causal LM (hub id or directory): a hybrid loads as m1's class, others through Auto."""
    if is_hybrid_checkpoint(path):
        model = HybridForCausalLM.from_pretrained(str(path), dtype=dtype)
    else:
        model = load_causal_lm(path, dtype=dtype)
    model.eval()
    model.requires_grad_(False)
    return model


def backbone_hidden(model: torch.nn.Module, **inputs) -> torch.Tensor:
    """Final hidden states (after the last norm) of any transformers causal LM or the hybrid."""
    out = decoder_of(model)(**inputs)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out
