"""Grouped-query attention with RoPE: Llama's attention, and Qwen2's with q/k/v biases.

Stored as GraniteMoeHybrid's `self_attn`; with `attention_bias` every projection has a
bias, and conversion leaves o_proj's at zero so Qwen2 is reproduced exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from m1.layers.rope import apply_rotary


class Attention(nn.Module):
    def __init__(self, config, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = config.attention_multiplier
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=bias)

    @staticmethod
    def kv_shape(config) -> tuple[int, int]:
        """What one token leaves in the KV cache, in K and in V each: (kv heads, head dim)."""
        return (config.num_key_value_heads, config.head_dim)

    def forward(self, hidden: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None, cache=None):
        """mask: boolean (b, 1, q, k), True = may attend; None = plain causal over this call's tokens."""
        b, l, _ = hidden.shape
        q = self.q_proj(hidden).view(b, l, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(hidden).view(b, l, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(hidden).view(b, l, self.num_kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = rope
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        rep = self.num_heads // self.num_kv_heads
        if rep > 1:
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        if mask is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=l > 1, scale=self.scaling)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scaling)
        return self.o_proj(out.transpose(1, 2).reshape(b, l, -1))
