"""Rotary position embeddings, with every rope type transformers knows (Llama-3 scaling included).

The inverse frequencies come from transformers' own rope tables, so a converted model
rotates exactly as its teacher did.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS


def _default_inv_freq(config) -> tuple[torch.Tensor, float]:
    dim = config.hidden_size // config.num_attention_heads
    base = config.rope_parameters["rope_theta"]
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float) / dim)), 1.0


class RotaryEmbedding(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        inv_freq, self.attention_scaling = self.compute_inv_freq()
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def compute_inv_freq(self) -> tuple[torch.Tensor, float]:
        """Recomputed after loading too: a non-persistent buffer is not in the checkpoint."""
        rope_type = (self.config.rope_parameters or {}).get("rope_type", "default")
        if rope_type == "default":
            return _default_inv_freq(self.config)
        if rope_type in ROPE_INIT_FUNCTIONS:
            return ROPE_INIT_FUNCTIONS[rope_type](self.config)
        raise ValueError(f"rope_parameters.rope_type: unsupported rope type {rope_type!r}")

    @torch.no_grad()
    def reset_parameters(self) -> None:
        inv_freq, self.attention_scaling = self.compute_inv_freq()
        self.inv_freq.copy_(inv_freq)

    @torch.no_grad()
    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq.to(position_ids.device)
        emb = torch.cat((freqs, freqs), dim=-1)
        return (emb.cos() * self.attention_scaling).to(dtype), (emb.sin() * self.attention_scaling).to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (b, heads, l, d); cos/sin (b, l, d)."""
    return x * cos[:, None] + _rotate_half(x) * sin[:, None]
