"""The attention -> Mamba mapping: a Llama/Qwen2 teacher becomes a hybrid.

Three inits (`INIT_MODES`, the one list the CLI, `MambaInit` and the check below read):
`attention` (the copy below, M1's, and the Python API's default), `random` (Mamba-2's own
init) and `calibrated` (the copy, then `m1.convert.calibrate` measures the teacher on text
and sets the mixers' decay, scales and a per-layer fit; the CLI's default, via
`m1.convert.calibrate.convert_with_report`).

Layers listed in `attention_layers` keep their attention. Every other layer becomes a
Mamba-2 mixer initialised from that layer's attention weights, reading Mamba-2 as
linear attention with a decay:

    attention:  y_t = sum_s softmax(q_t . k_s) v_s
    Mamba-2:    y_t = sum_s (C_t . B_s) * prod(decays) * dt_s * x_s

so C <- W_q, B <- W_k, x <- W_v and out_proj <- W_o (biases likewise). Grouped KV heads
are repeated across the query heads that share them, which is exact at init.

The mapping of channels: Mamba head h owns x channels [h*P, (h+1)*P) of the expanded
V, and its group owns B/C channels [g*N, (g+1)*N) of the expanded K and of Q. M1's
16-state shape (192 heads x 16, 192 groups, state 16 on Llama-3.2-3B) therefore cuts each
128-dim attention head into 8 sub-heads, each with its own 16-dim slices of q, k and v.
The full-state shape (24 x 128, state 128) maps one Mamba head to one attention head.
The conversion checks that every Mamba head's x channels and its group's B/C channels
come from the same attention head.

Other pieces:
- conv starts as the identity (last tap 1), so x, B, C pass through (then silu, which
  the architecture applies after the conv);
- the gate: z weights zero and a constant positive z bias, so silu(z) is a constant that
  the gated RMSNorm divides out; zero z *without* a bias would silence the layer;
- dt comes from dt_bias alone (dt weights zero) and A is small, so the layer starts close
  to linear attention with almost no forgetting;
- the gated RMSNorm's weight is set to the expected RMS of v under the layer's input norm,
  so the Mamba output starts at the scale attention's output had;
- MLPs, norms, embeddings and the LM head are copied.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from m1.config import SUPPORTED_TEACHERS, ConfigError, HybridConfig
from m1.layers.mamba2 import inv_softplus
from m1.modeling import HybridForCausalLM

log = logging.getLogger(__name__)

# How the Mamba layers can start, the CLI's default first. `convert_from_transformer` builds
# the first-order ones (`attention`, `random`); `calibrated` is `attention` followed by
# `m1.convert.calibrate`, which needs calibration text (`convert_with_report`).
INIT_MODES = ("calibrated", "attention", "random")


@dataclass
class MambaInit:
    """How the Mamba layers start. The defaults were chosen by measuring KL(teacher || hybrid)."""

    mode: str = "attention"  # one of INIT_MODES
    gate_bias: float = 1.0  # constant z; silu(1) ~ 0.73, removed by the norm
    dt: float = 1.0  # softplus(dt_bias) at init
    A: float = 0.01  # decay rate: exp(-dt * A) per step; small = long memory, like attention
    D: float = 0.0  # skip connection; linear attention has none
    norm_scale: str = "v_rms"  # "v_rms" or "ones"
    norm_mult: float = 0.25  # attention averages v over positions, so its output is smaller than v
    conv_scale: float = 1.0  # identity tap of the conv; < 1 keeps silu(conv) in its near-linear range


def load_transformer(teacher, dtype: torch.dtype | None = None):
    """The transformer to convert: a `LlamaForCausalLM`/`Qwen2ForCausalLM` from a model object, a local
    directory, a hub id or a `.gguf` file (an unsupported architecture is a `ConfigError`).

    Not `m1.train.model.load_teacher`, which loads any causal LM (a hybrid too) frozen, for distillation."""
    if isinstance(teacher, (str, Path)):
        from m1.checkpoint import load_causal_lm

        teacher = load_causal_lm(teacher, dtype=dtype)
    _check_architecture(teacher.config)
    return teacher


def _check_architecture(tcfg) -> str:
    """The teacher config's model_type; a `ConfigError` unless m1 converts it."""
    model_type = getattr(tcfg, "model_type", None)
    if model_type not in SUPPORTED_TEACHERS:
        raise ConfigError("model_type", f"unsupported teacher architecture {model_type!r}; m1 converts {SUPPORTED_TEACHERS}")
    return model_type


def hybrid_config_from_teacher(
    tcfg,
    attention_layers,
    mamba_heads: int | None = None,
    mamba_head_dim: int | None = None,
    mamba_groups: int | None = None,
    state_size: int | None = None,
    **overrides,
) -> HybridConfig:
    """The hybrid's config: the teacher's dimensions plus the Mamba shape."""
    model_type = _check_architecture(tcfg)
    head_dim = tcfg.hidden_size // tcfg.num_attention_heads
    if getattr(tcfg, "head_dim", head_dim) not in (None, head_dim):
        raise ConfigError("head_dim", f"teacher head_dim {tcfg.head_dim} != hidden_size / num_attention_heads = {head_dim}")
    has_bias = model_type == "qwen2" or bool(getattr(tcfg, "attention_bias", False))
    if model_type == "llama" and getattr(tcfg, "mlp_bias", False):
        raise ConfigError("mlp_bias", "teachers with MLP biases are not supported")
    mamba_heads = mamba_heads or tcfg.num_attention_heads
    mamba_head_dim = mamba_head_dim or (tcfg.num_attention_heads * head_dim) // mamba_heads
    kwargs = dict(
        vocab_size=tcfg.vocab_size,
        hidden_size=tcfg.hidden_size,
        intermediate_size=tcfg.intermediate_size,
        num_hidden_layers=tcfg.num_hidden_layers,
        num_attention_heads=tcfg.num_attention_heads,
        num_key_value_heads=tcfg.num_key_value_heads or tcfg.num_attention_heads,
        attention_layers=list(attention_layers),
        mamba_heads=mamba_heads,
        mamba_head_dim=mamba_head_dim,
        mamba_groups=mamba_groups or mamba_heads,
        state_size=state_size or mamba_head_dim,
        attention_bias=has_bias,
        mamba_proj_bias=True,
        rope_parameters=dict(tcfg.rope_parameters),
        rms_norm_eps=tcfg.rms_norm_eps,
        tie_word_embeddings=bool(tcfg.tie_word_embeddings),
        max_position_embeddings=tcfg.max_position_embeddings,
        bos_token_id=tcfg.bos_token_id,
        eos_token_id=tcfg.eos_token_id,
        pad_token_id=tcfg.pad_token_id,
    )
    kwargs.update(overrides)
    return HybridConfig.create(**kwargs)


def _expand_kv(w: torch.Tensor, n_kv: int, n_q: int) -> torch.Tensor:
    """(n_kv * d, ...) -> (n_q * d, ...): repeat each KV head for the query heads sharing it."""
    d = w.shape[0] // n_kv
    return w.reshape(n_kv, d, *w.shape[1:]).repeat_interleave(n_q // n_kv, dim=0).reshape(n_q * d, *w.shape[1:])


def check_attention_mapping(cfg: HybridConfig) -> None:
    """Raise `ConfigError` unless the Mamba shape can be read off the attention weights."""
    qdim = cfg.num_attention_heads * cfg.head_dim
    if cfg.mamba_inner != qdim:
        raise ConfigError("mamba_heads", f"mamba_heads x mamba_head_dim = {cfg.mamba_inner} must equal query width {qdim} for attention init")
    if cfg.mamba_n_groups * cfg.mamba_d_state != qdim:
        raise ConfigError(
            "state_size", f"mamba_groups x state_size = {cfg.mamba_n_groups * cfg.mamba_d_state} must equal query width {qdim} for attention init"
        )
    per_group = cfg.mamba_n_heads // cfg.mamba_n_groups
    for h in range(cfg.mamba_n_heads):
        x_head = (h * cfg.mamba_d_head) // cfg.head_dim
        g = h // per_group
        bc_head = (g * cfg.mamba_d_state) // cfg.head_dim
        if x_head != bc_head:
            raise ConfigError(
                "mamba_groups",
                f"Mamba head {h} takes x from attention head {x_head} but B/C from attention head {bc_head}; "
                "choose groups and state size so each group's B/C slice lies in its heads' attention head",
            )


@torch.no_grad()
def _init_mamba_from_attention(mixer, attn, input_norm_w: torch.Tensor, cfg: HybridConfig, init: MambaInit) -> None:
    nq, nkv = cfg.num_attention_heads, cfg.num_key_value_heads
    inner, gn = mixer.inner, mixer.n_groups * mixer.state_size
    wq, wk, wv = attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight
    w_x, w_b = _expand_kv(wv, nkv, nq), _expand_kv(wk, nkv, nq)
    W = mixer.in_proj.weight
    W.zero_()
    W[inner : 2 * inner] = w_x
    W[2 * inner : 2 * inner + gn] = w_b
    W[2 * inner + gn : 2 * inner + 2 * gn] = wq
    bias = mixer.in_proj.bias
    bias.zero_()
    bias[:inner] = init.gate_bias
    if attn.q_proj.bias is not None:
        bias[inner : 2 * inner] = _expand_kv(attn.v_proj.bias, nkv, nq)
        bias[2 * inner : 2 * inner + gn] = _expand_kv(attn.k_proj.bias, nkv, nq)
        bias[2 * inner + gn : 2 * inner + 2 * gn] = attn.q_proj.bias
    conv = mixer.conv1d
    conv.weight.zero_()
    conv.weight[:, 0, -1] = init.conv_scale
    if conv.bias is not None:
        conv.bias.zero_()
    # silu(eps * u) ~ eps * u / 2 for small eps: y then scales by eps^3 (C, B and x), which dt
    # restores; A shrinks by the same factor so the per-step decay exp(dt * A) is unchanged.
    comp = init.conv_scale**-3
    dt = init.dt * comp
    mixer.dt_bias.fill_(inv_softplus(dt))
    mixer.A_log.fill_(math.log(init.A / comp))
    mixer.D.fill_(init.D)
    if init.norm_scale == "v_rms":
        # E[v_c^2] for a unit-RMS normalised input scaled by the input norm's weight.
        v_rms = torch.sqrt(((w_x.float() * input_norm_w.float()[None]) ** 2).sum(-1))
        mixer.norm.weight.copy_((init.norm_mult * v_rms).to(mixer.norm.weight.dtype))
    elif init.norm_scale == "ones":
        mixer.norm.weight.fill_(init.norm_mult)
    else:
        raise ConfigError("norm_scale", f"unknown norm scale {init.norm_scale!r}")
    mixer.out_proj.weight.copy_(attn.o_proj.weight)
    if mixer.out_proj.bias is not None:
        mixer.out_proj.bias.zero_()
        if attn.o_proj.bias is not None:
            mixer.out_proj.bias.copy_(attn.o_proj.bias)


@torch.no_grad()
def copy_attention(src, dst) -> None:
    """q/k/v/o of a teacher attention module into an m1 `Attention` (a bias the teacher lacks is zeroed)."""
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        s, d = getattr(src, name), getattr(dst, name)
        d.weight.copy_(s.weight)
        if d.bias is not None:
            d.bias.copy_(s.bias) if s.bias is not None else d.bias.zero_()


def uninitialised_student(cfg: HybridConfig, dtype: torch.dtype) -> HybridForCausalLM:
    """A `HybridForCausalLM` on the CPU in `dtype`, its weights uninitialised (the rotary buffer computed).

    Why: `HybridForCausalLM(cfg)` draws every weight at random in fp32 and `.to(dtype)` copies them, which the
    attention init then overwrites. For a 3B bf16 teacher that is about 15 GB of fp32 and tens of seconds of
    random draws on a CPU; for SmolLM2-135M 0.7 s a build, paid twice by a default `m1 convert` (the student and
    the all-attention copy that samples calibration text; profiled on 2 cores, 2026-12-07). Only for inits that
    set every parameter: `tests/convert/test_mapping.py` checks the result equals a fully initialised build's.
    """
    from m1.layers.rope import RotaryEmbedding

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("meta"):
            student = HybridForCausalLM(cfg)
    finally:
        torch.set_default_dtype(previous)
    # parameters made in fp32 on purpose (A_log) take `dtype` as `.to(dtype)` gives them in a full build; to_empty
    # gives tied weights storage of their own, so they are tied again
    student = student.to_empty(device="cpu").to(dtype)
    student.tie_weights()
    with torch.no_grad():
        for module in student.modules():
            if isinstance(module, RotaryEmbedding):
                module.reset_parameters()
    return student


@torch.no_grad()
def convert_from_transformer(
    teacher,
    attention_layers,
    mamba_heads: int | None = None,
    mamba_head_dim: int | None = None,
    mamba_groups: int | None = None,
    state_size: int | None = None,
    init: MambaInit | str = "attention",
    seed: int = 0,
    **config_overrides,
) -> HybridForCausalLM:
    """Build a hybrid from a Llama/Qwen2 teacher (model object, directory or hub id).

    `attention_layers` lists the layers that keep attention; the rest become Mamba-2.
    `init="random"` gives Mamba layers Mamba-2's random initialisation instead (the
    baseline attention init is measured against).
    """
    init = MambaInit(mode=init) if isinstance(init, str) else init
    if init.mode not in INIT_MODES:
        raise ConfigError("init", f"unknown init mode {init.mode!r}; use one of {', '.join(INIT_MODES)}")
    if init.mode == "calibrated":
        raise ConfigError("init", "calibrated init needs calibration text: use "
                          "m1.convert.calibrate.convert_with_report(..., init='calibrated', calibration_ids=...)")
    teacher = load_transformer(teacher)
    cfg = hybrid_config_from_teacher(teacher.config, attention_layers, mamba_heads, mamba_head_dim, mamba_groups, state_size, **config_overrides)
    if init.mode == "attention" and cfg.mamba_layers:
        check_attention_mapping(cfg)
    torch.manual_seed(seed)
    dtype = next(teacher.parameters()).dtype
    if init.mode == "attention":  # every weight is copied or set below: none needs its random draw
        student = uninitialised_student(cfg, dtype)
        log.debug("student built uninitialised in %s (the attention init sets every weight)", dtype)
    else:
        student = HybridForCausalLM(cfg).to(dtype)
    t, s = teacher.model, student.model
    s.embed_tokens.weight.copy_(t.embed_tokens.weight)
    s.norm.weight.copy_(t.norm.weight)
    if not cfg.tie_word_embeddings:
        student.lm_head.weight.copy_(teacher.lm_head.weight)
    for i, (tl, sl) in enumerate(zip(t.layers, s.layers)):
        sl.input_layernorm.weight.copy_(tl.input_layernorm.weight)
        sl.post_attention_layernorm.weight.copy_(tl.post_attention_layernorm.weight)
        sl.shared_mlp.input_linear.weight.copy_(torch.cat([tl.mlp.gate_proj.weight, tl.mlp.up_proj.weight], dim=0))
        sl.shared_mlp.output_linear.weight.copy_(tl.mlp.down_proj.weight)
        ta = tl.self_attn
        if sl.is_attention:
            copy_attention(ta, sl.self_attn)
        elif init.mode == "attention":
            _init_mamba_from_attention(sl.mamba, ta, tl.input_layernorm.weight, cfg, init)
    log.info(
        "converted %s: %d attention layers %s, %d Mamba-2 layers (%d heads x %d, %d groups, state %d), %s init",
        teacher.config.model_type, len(cfg.attention_layers), cfg.attention_layers, len(cfg.mamba_layers),
        cfg.mamba_n_heads, cfg.mamba_d_head, cfg.mamba_n_groups, cfg.mamba_d_state, init.mode,
    )
    if getattr(teacher, "generation_config", None) is not None:
        student.generation_config = teacher.generation_config
    return student
