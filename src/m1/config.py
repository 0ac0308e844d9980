"""The hybrid model's configuration.

`HybridConfig` *is* a transformers `GraniteMoeHybridConfig` (dense, rope, unit
multipliers): that is what makes m1's checkpoints load in `AutoModelForCausalLM`
and vLLM without custom code. On top of it m1 adds the vocabulary users think in
(`attention_layers`, `mamba_heads`, `state_size`, ...), a table of named shapes, and
validation that names the offending field when a value is wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from transformers import GraniteMoeHybridConfig

from m1.errors import UserError

MAMBA = "linear_attention"  # transformers >= 5 spelling of a Mamba layer
ATTENTION = "full_attention"
# Older transformers (4.x) and vLLM read the legacy strings; config.json is written with these.
LEGACY_LAYER_TYPES = {MAMBA: "mamba", ATTENTION: "attention"}
_FROM_LEGACY = {"mamba": MAMBA, "attention": ATTENTION}

SUPPORTED_TEACHERS = ("llama", "qwen2")


class ConfigError(UserError):
    """A config value is invalid; the message starts with the field's name."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field_name = field_name


@dataclass(frozen=True)
class Shape:
    """One row of the named-shape table (`HybridConfig.from_name`)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    attention_layers: tuple[int, ...]
    mamba_heads: int = 0
    mamba_head_dim: int = 0
    mamba_groups: int = 0
    state_size: int = 16
    rope_parameters: dict = field(default_factory=dict)
    tie_word_embeddings: bool = True
    rms_norm_eps: float = 1e-5
    max_position_embeddings: int = 131072


_LLAMA32_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 32.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}
_LLAMA32_3B = dict(
    vocab_size=128256,
    hidden_size=3072,
    intermediate_size=8192,
    num_hidden_layers=28,
    num_attention_heads=24,
    num_key_value_heads=8,
    rope_parameters=_LLAMA32_ROPE,
)
M1_ATTENTION_LAYERS = (3, 8, 13, 18, 23, 27)

NAMED_SHAPES: dict[str, Shape] = {
    # The teacher: every layer attention.
    "llama-3.2-3b": Shape(**_LLAMA32_3B, attention_layers=tuple(range(28)), mamba_heads=24, mamba_head_dim=128, mamba_groups=24, state_size=128),
    # M1's state budget (3072 channels x state 16) in Mamba-2 form: one group per 16-wide head.
    "m1-3b": Shape(**_LLAMA32_3B, attention_layers=M1_ATTENTION_LAYERS, mamba_heads=192, mamba_head_dim=16, mamba_groups=192, state_size=16),
    # The head-sized state: each Mamba head mirrors one attention head.
    "m1-3b-s128": Shape(**_LLAMA32_3B, attention_layers=M1_ATTENTION_LAYERS, mamba_heads=24, mamba_head_dim=128, mamba_groups=24, state_size=128),
}


class HybridConfig(GraniteMoeHybridConfig):
    """A GraniteMoeHybrid config restricted to what m1 builds: dense Llama-style layers.

    Build one with `HybridConfig.create(...)` (m1's names) or `HybridConfig.from_name(...)`;
    `HybridConfig.from_pretrained(dir)` reads a saved checkpoint.
    """

    # ---- m1's vocabulary over the GraniteMoeHybrid fields ---------------------------------
    @property
    def attention_layers(self) -> list[int]:
        return [i for i, t in enumerate(self.layer_types) if _FROM_LEGACY.get(t, t) == ATTENTION]

    @property
    def mamba_layers(self) -> list[int]:
        return [i for i, t in enumerate(self.layer_types) if _FROM_LEGACY.get(t, t) == MAMBA]

    def is_attention(self, layer_idx: int) -> bool:
        return _FROM_LEGACY.get(self.layer_types[layer_idx], self.layer_types[layer_idx]) == ATTENTION

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def mamba_inner(self) -> int:
        """Width of x (and of the gate z): heads x head dim."""
        return self.mamba_n_heads * self.mamba_d_head

    @property
    def mamba_conv_dim(self) -> int:
        return self.mamba_inner + 2 * self.mamba_n_groups * self.mamba_d_state

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        *,
        vocab_size: int,
        hidden_size: int,
        intermediate_size: int,
        num_hidden_layers: int,
        num_attention_heads: int,
        num_key_value_heads: int | None = None,
        attention_layers: list[int] | tuple[int, ...] = (),
        mamba_heads: int | None = None,
        mamba_head_dim: int | None = None,
        mamba_groups: int | None = None,
        state_size: int = 16,
        conv_width: int = 4,
        chunk_size: int = 64,
        attention_bias: bool = False,
        mamba_proj_bias: bool = True,
        mamba_conv_bias: bool = True,
        rope_parameters: dict | None = None,
        rms_norm_eps: float = 1e-5,
        tie_word_embeddings: bool = False,
        max_position_embeddings: int = 4096,
        **extra: Any,
    ) -> "HybridConfig":
        """Build and validate a config from m1's names (see DESIGN.md, section 2).

        Mamba defaults mirror the attention it replaces: one Mamba head per query head,
        the head dim as state size, which is what attention initialisation needs.
        """
        num_key_value_heads = num_key_value_heads or num_attention_heads
        _require_int("num_hidden_layers", num_hidden_layers, minimum=1)
        _require_int("num_attention_heads", num_attention_heads, minimum=1)
        _require_int("hidden_size", hidden_size, minimum=1)
        if hidden_size % num_attention_heads:
            raise ConfigError("num_attention_heads", f"{num_attention_heads} does not divide hidden_size={hidden_size}")
        head_dim = hidden_size // num_attention_heads
        mamba_heads = mamba_heads or num_attention_heads
        mamba_head_dim = mamba_head_dim or (num_attention_heads * head_dim) // mamba_heads
        mamba_groups = mamba_groups or mamba_heads
        layer_types = _layer_types(attention_layers, num_hidden_layers)
        inner = mamba_heads * mamba_head_dim
        if inner % hidden_size:
            raise ConfigError(
                "mamba_heads",
                f"mamba_heads x mamba_head_dim = {inner} must be a whole multiple of hidden_size={hidden_size} "
                "(GraniteMoeHybrid stores the Mamba width as mamba_expand x hidden_size)",
            )
        rope = dict(rope_parameters or {"rope_type": "default", "rope_theta": 10000.0})
        cfg = cls(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            shared_intermediate_size=intermediate_size,
            num_hidden_layers=num_hidden_layers,
            num_attention_heads=num_attention_heads,
            num_key_value_heads=num_key_value_heads,
            layer_types=layer_types,
            mamba_n_heads=mamba_heads,
            mamba_d_head=mamba_head_dim,
            mamba_n_groups=mamba_groups,
            mamba_d_state=state_size,
            mamba_d_conv=conv_width,
            mamba_expand=inner // hidden_size,
            mamba_chunk_size=chunk_size,
            mamba_conv_bias=mamba_conv_bias,
            mamba_proj_bias=mamba_proj_bias,
            attention_bias=attention_bias,
            rope_parameters=rope,
            rms_norm_eps=rms_norm_eps,
            tie_word_embeddings=tie_word_embeddings,
            max_position_embeddings=max_position_embeddings,
            # The GraniteMoeHybrid knobs that make it a plain Llama stack:
            position_embedding_type="rope",
            attention_multiplier=1.0 / math.sqrt(head_dim),
            embedding_multiplier=1.0,
            residual_multiplier=1.0,
            logits_scaling=1.0,
            num_local_experts=0,
            num_experts_per_tok=0,
            router_aux_loss_coef=0.0,  # dense: no router, so trainers must add no router loss
            output_router_logits=False,
            hidden_act="silu",
            **extra,
        )
        cfg.check()
        return cfg

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "HybridConfig":
        """A named shape: 'llama-3.2-3b', 'm1-3b' or 'm1-3b-s128'. Overrides use `create`'s names."""
        if name not in NAMED_SHAPES:
            raise ConfigError("name", f"unknown shape {name!r}; known: {sorted(NAMED_SHAPES)}")
        s = NAMED_SHAPES[name]
        kwargs = dict(
            vocab_size=s.vocab_size,
            hidden_size=s.hidden_size,
            intermediate_size=s.intermediate_size,
            num_hidden_layers=s.num_hidden_layers,
            num_attention_heads=s.num_attention_heads,
            num_key_value_heads=s.num_key_value_heads,
            attention_layers=list(s.attention_layers),
            mamba_heads=s.mamba_heads,
            mamba_head_dim=s.mamba_head_dim,
            mamba_groups=s.mamba_groups,
            state_size=s.state_size,
            rope_parameters=dict(s.rope_parameters),
            tie_word_embeddings=s.tie_word_embeddings,
            rms_norm_eps=s.rms_norm_eps,
            max_position_embeddings=s.max_position_embeddings,
        )
        kwargs.update(overrides)
        return cls.create(**kwargs)

    # ---- validation ------------------------------------------------------------------------------
    def validate_architecture(self) -> None:
        super().validate_architecture()
        self.check()

    def check(self) -> None:
        """Raise `ConfigError` naming the first bad field."""
        n = self.num_hidden_layers
        if self.layer_types is None or len(self.layer_types) != n:
            raise ConfigError("layer_types", f"needs one entry per layer ({n}), got {self.layer_types!r}")
        for i, t in enumerate(self.layer_types):
            if _FROM_LEGACY.get(t, t) not in (MAMBA, ATTENTION):
                raise ConfigError("layer_types", f"layer {i} has type {t!r}; m1 builds only Mamba and attention layers")
        if self.num_local_experts not in (0, None):
            raise ConfigError("num_local_experts", "m1 models are dense (0 experts)")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                "num_key_value_heads",
                f"{self.num_key_value_heads} does not divide num_attention_heads={self.num_attention_heads}",
            )
        if self.position_embedding_type != "rope":
            raise ConfigError("position_embedding_type", f"m1 uses 'rope', got {self.position_embedding_type!r}")
        if self.mamba_layers:
            for name in ("mamba_n_heads", "mamba_d_head", "mamba_n_groups", "mamba_d_state", "mamba_d_conv", "mamba_chunk_size"):
                _require_int(name, getattr(self, name), minimum=1)
            if self.mamba_n_heads % self.mamba_n_groups:
                raise ConfigError("mamba_n_groups", f"{self.mamba_n_groups} does not divide mamba_n_heads={self.mamba_n_heads}")
            if self.mamba_inner != self.mamba_expand * self.hidden_size:
                raise ConfigError(
                    "mamba_d_head",
                    f"mamba_n_heads x mamba_d_head = {self.mamba_inner} != mamba_expand x hidden_size "
                    f"= {self.mamba_expand * self.hidden_size}",
                )

    def to_dict(self) -> dict[str, Any]:
        """Serialise with the legacy layer-type strings that vLLM and transformers 4.x read.

        transformers >= 5 maps them back on load, so every reader agrees.
        """
        d = super().to_dict()
        if d.get("layer_types") is not None:
            d["layer_types"] = [LEGACY_LAYER_TYPES.get(t, t) for t in d["layer_types"]]
        rope = d.get("rope_parameters") or {}
        if "rope_theta" in rope:
            d["rope_theta"] = rope["rope_theta"]
        if rope.get("rope_type", "default") != "default":
            d["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
        d["architectures"] = ["GraniteMoeHybridForCausalLM"]
        return d


def _require_int(name: str, value: Any, minimum: int = 0) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(name, f"must be an integer >= {minimum}, got {value!r}")


def _layer_types(attention_layers: list[int] | tuple[int, ...], num_layers: int) -> list[str]:
    seen: set[int] = set()
    for idx in attention_layers:
        if not isinstance(idx, int) or isinstance(idx, bool):
            raise ConfigError("attention_layers", f"indices must be integers, got {idx!r}")
        if not 0 <= idx < num_layers:
            raise ConfigError("attention_layers", f"index {idx} is out of range for {num_layers} layers")
        if idx in seen:
            raise ConfigError("attention_layers", f"index {idx} is listed twice")
        seen.add(idx)
    return [ATTENTION if i in seen else MAMBA for i in range(num_layers)]
