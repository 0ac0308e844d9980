"""What vLLM's `GraniteMoeHybridForCausalLM` loader reads from a checkpoint.

vLLM cannot be installed here, so this module records, as plain data, the config keys and
tensor names that vLLM's GraniteMoeHybrid model class consumes, and checks a checkpoint's
`config.json` plus its safetensors key names against them. Everything below was read from
vLLM's public source (stored copies; commits given where the copy carried one):

  vllm/model_executor/models/granitemoehybrid.py
      @ 0195c9ec6ea9cda412d1c69034fc5926a2c29528  (current layout; imports mamba2/mamba_mixer2.py,
                                                   reads config.rope_parameters)
      @ fc41bfe8ebdbe69a333da8eeb0c17bf22741d1d4  (older V0-era layout; reads config.rope_theta and
                                                   config.rope_scaling directly)
  vllm/model_executor/layers/mamba/mamba2/mamba_mixer2.py
      @ 2e0714afc079f2c76e0666f5089c42f231cfea62  (MambaMixer2, Mixer2RMSNormGated, sharded loaders)
  vllm/model_executor/layers/mamba/mamba_mixer2.py
      @ 004d4e4cf6dbbc83ba15f889d76c213c94c7207b  (older path of the same mixer; same parameters)
  vllm/model_executor/models/granitemoeshared.py
      @ 055e47c28003156421365af985d676fc921cb075  (GraniteMoeSharedMLP: shared_mlp.input/output_linear)
  vllm/config/model.py                             (get_mamba_chunk_size, get_num_layers_by_block_type,
                                                   is_hybrid)
  vllm/transformers_utils/config.py                (patch_rope_parameters)
  vllm/model_executor/models/utils.py              (AutoWeightsLoader: unknown names raise, rotary
                                                   inv_freq/cos/sin caches are skipped)
  requirements/common.txt
      @ 0073e4497d734b1f947e79fc92a05f71d910f6ce  (pins transformers >= 4.56.0, < 5)

Layer-type strings (the one thing most likely to bite):
  * Every vLLM release up to and including v0.25.1 maps only "mamba" and "attention" to decoder
    layer classes (`ALL_DECODER_LAYER_TYPES` in granitemoehybrid.py) and counts attention layers
    for KV-cache sizing by comparing `layers_block_type` to "attention" (config/model.py), and
    `ModelConfig.is_hybrid` tests `layer == "attention"`.
  * vLLM PR #47867 (after v0.25.1) adds "full_attention"/"linear_attention" as aliases, because
    transformers >= 5 rewrites the legacy names in memory on every config load.
  * transformers 4.x (what vLLM pins) *rejects* any layer type other than "mamba"/"attention" in
    `GraniteMoeHybridConfig.__init__`.
  * transformers 5.x accepts the legacy strings in config.json and remaps them on load, but its
    `save_pretrained` writes the new spellings ("linear_attention"/"full_attention").
  So config.json must carry "mamba"/"attention": the only spelling every reader accepts.

RoPE: with transformers 4.x, vLLM's `patch_rope_parameters` rebuilds `rope_parameters` from the
legacy attributes and overwrites `rope_parameters["rope_theta"]` with `config.rope_theta`, whose
4.x default is 10000.0 when config.json has no top-level `rope_theta`. The older model file reads
`config.rope_theta`/`config.rope_scaling` directly. So config.json should carry a top-level
`rope_theta` (and, for a non-default rope type, a legacy `rope_scaling`) that agree with
`rope_parameters`; transformers 5.x prefers `rope_parameters` when both are present.

The Mamba-2 mixer as vLLM builds it (mamba2/mamba_mixer2.py), with d_inner = mamba_expand *
hidden_size, G = mamba_n_groups, N = mamba_d_state, H = mamba_n_heads, K = mamba_d_conv:
  * in_proj.weight rows, in order: z (gate, d_inner) | x (d_inner) | B (G*N) | C (G*N) | dt (H).
  * conv1d.weight is (d_inner + 2*G*N, 1, K), channels ordered x | B | C; conv1d.bias if
    mamba_conv_bias. The conv activation is config.hidden_act.
  * The checkpoint stores `A_log`; the loader renames it to the parameter `A` and loads
    A = -exp(A_log.float()) (float32). A checkpoint tensor literally named `...mamba.A` would get
    the same -exp() applied to it, so store A_log.
  * D and dt_bias are per head (H,). dt goes through softplus(dt + dt_bias) with a hard-coded
    dt_limit = (0, inf): config `time_step_limit` is ignored.
  * norm.weight is (d_inner,). The gated norm multiplies by silu(z) *before* normalising
    (norm_before_gate=False) and normalises over G contiguous blocks of d_inner / G channels
    (group_size = d_inner // n_groups), then scales by weight. With G == 1 it is one RMS over
    all d_inner channels.
  * in_proj/out_proj carry a bias iff mamba_proj_bias.
Attention: head_dim is always hidden_size // num_attention_heads (no `head_dim` key is read by the
model), the softmax scale is attention_multiplier, RoPE is applied (neox style) only when
position_embedding_type == "rope"; q/k/v_proj are stacked into qkv_proj at load.
MLP: with num_local_experts == 0 (dense; supported, read via getattr with default 0) the only MLP
is `shared_mlp`, built only when shared_intermediate_size != 0; input_linear is [gate | up]
(silu(first half) * second half), no biases, hidden_act must be "silu".
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

ARCHITECTURE = "GraniteMoeHybridForCausalLM"
MODEL_TYPE = "granitemoehybrid"

# Layer-type strings. Legacy spellings: accepted by every vLLM release and by transformers 4.x/5.x.
VLLM_MAMBA = "mamba"
VLLM_ATTENTION = "attention"
VLLM_LAYER_TYPES: tuple[str, ...] = (VLLM_MAMBA, VLLM_ATTENTION)
# transformers >= 5 spellings: vLLM accepts them only after PR #47867 (post v0.25.1); transformers
# 4.x rejects them. Never write these to config.json.
TRANSFORMERS5_LAYER_TYPES: dict[str, str] = {"linear_attention": VLLM_MAMBA, "full_attention": VLLM_ATTENTION}

_GRANITE = "vllm/model_executor/models/granitemoehybrid.py"
_MIXER = "vllm/model_executor/layers/mamba/mamba2/mamba_mixer2.py"
_SHARED = "vllm/model_executor/models/granitemoeshared.py"
_MODEL_CFG = "vllm/config/model.py"
_TU_CFG = "vllm/transformers_utils/config.py"

# The config keys vLLM reads for this architecture. Per key:
#   when     - "always", or "moe" (only read when num_local_experts > 0)
#   required - False when vLLM reads it with a default (getattr) or from an alternative key
#   allowed  - the values that work, where that matters (None: any value of the right kind)
#   source   - where it is read
VLLM_REQUIRED_CONFIG_KEYS: dict[str, dict[str, Any]] = {
    # --- identity: picks the model class --------------------------------------------------------
    "architectures": {"when": "always", "required": True, "allowed": ([ARCHITECTURE],),
                      "source": "vllm/model_executor/models/registry.py", "note": "must list GraniteMoeHybridForCausalLM"},
    "model_type": {"when": "always", "required": True, "allowed": (MODEL_TYPE,),
                   "source": "transformers AutoConfig", "note": "selects GraniteMoeHybridConfig"},
    # --- whole model ----------------------------------------------------------------------------
    "vocab_size": {"when": "always", "required": True, "allowed": None, "source": _GRANITE, "note": "embed_tokens / lm_head rows"},
    "hidden_size": {"when": "always", "required": True, "allowed": None, "source": _GRANITE, "note": ""},
    "num_hidden_layers": {"when": "always", "required": True, "allowed": None, "source": _GRANITE, "note": "make_layers count"},
    "layer_types": {"when": "always", "required": True, "allowed": VLLM_LAYER_TYPES, "source": _GRANITE,
                    "note": "config.layer_types[i] indexes ALL_DECODER_LAYER_TYPES = {'attention', 'mamba'}; "
                            "'linear_attention'/'full_attention' raise KeyError before vLLM PR #47867"},
    "rms_norm_eps": {"when": "always", "required": True, "allowed": None, "source": _GRANITE,
                     "note": "all RMSNorms and the Mamba gated norm"},
    "hidden_act": {"when": "always", "required": True, "allowed": ("silu",), "source": _SHARED + ", " + _MIXER,
                   "note": "GraniteMoeSharedMLP raises for anything but silu; also the conv1d activation"},
    "embedding_multiplier": {"when": "always", "required": True, "allowed": None, "source": _GRANITE,
                             "note": "embeddings are multiplied by it"},
    "residual_multiplier": {"when": "always", "required": True, "allowed": None, "source": _GRANITE,
                            "note": "both residual branches are scaled by it"},
    "logits_scaling": {"when": "always", "required": True, "allowed": None, "source": _GRANITE,
                       "note": "LogitsProcessor(scale=1/logits_scaling); must be non-zero"},
    "tie_word_embeddings": {"when": "always", "required": True, "allowed": (True, False), "source": _GRANITE,
                            "note": "True: lm_head shares embed_tokens and no lm_head.weight is expected"},
    "max_position_embeddings": {"when": "always", "required": True, "allowed": None, "source": _GRANITE,
                                "note": "get_rope(max_position=...) and vLLM's max_model_len"},
    # --- attention layers -----------------------------------------------------------------------
    "num_attention_heads": {"when": "always", "required": True, "allowed": None, "source": _GRANITE,
                            "note": "head_dim = hidden_size // num_attention_heads (no head_dim key is used)"},
    "num_key_value_heads": {"when": "always", "required": True, "allowed": None, "source": _GRANITE, "note": ""},
    "attention_bias": {"when": "always", "required": True, "allowed": (True, False), "source": _GRANITE,
                       "note": "bias on qkv_proj and o_proj"},
    "attention_multiplier": {"when": "always", "required": True, "allowed": None, "source": _GRANITE,
                             "note": "passed to Attention as the softmax scale"},
    "position_embedding_type": {"when": "always", "required": True, "allowed": ("rope", None), "source": _GRANITE,
                                "note": "anything but 'rope' silently means no positional embedding"},
    "rope_parameters": {"when": "always", "required": False, "allowed": None, "source": _GRANITE + ", " + _TU_CFG,
                        "note": "current vLLM: get_rope(rope_parameters=config.rope_parameters)"},
    "rope_theta": {"when": "always", "required": False, "allowed": None, "source": _TU_CFG,
                   "note": "with transformers 4.x it overwrites rope_parameters['rope_theta'] (4.x default 10000.0); "
                           "older vLLM reads config.rope_theta directly"},
    "rope_scaling": {"when": "always", "required": False, "allowed": None, "source": _TU_CFG,
                     "note": "with transformers 4.x it replaces rope_parameters; older vLLM passes it to get_rope"},
    # --- Mamba-2 layers -------------------------------------------------------------------------
    "mamba_n_heads": {"when": "always", "required": True, "allowed": None, "source": _GRANITE, "note": "H"},
    "mamba_d_head": {"when": "always", "required": True, "allowed": None, "source": _GRANITE,
                     "note": "P; mamba_n_heads * mamba_d_head must equal mamba_expand * hidden_size"},
    "mamba_n_groups": {"when": "always", "required": True, "allowed": None, "source": _GRANITE + ", " + _MIXER,
                       "note": "G: B/C groups and gated-norm groups; G % tp == 0 or G == 1"},
    "mamba_d_state": {"when": "always", "required": True, "allowed": None, "source": _GRANITE, "note": "N"},
    "mamba_d_conv": {"when": "always", "required": True, "allowed": None, "source": _GRANITE, "note": "K"},
    "mamba_expand": {"when": "always", "required": True, "allowed": None, "source": _GRANITE,
                     "note": "d_inner = mamba_expand * hidden_size; must be an integer"},
    "mamba_chunk_size": {"when": "always", "required": True, "allowed": None, "source": _MODEL_CFG,
                         "note": "ModelConfig.get_mamba_chunk_size (falls back to 'chunk_size', then 2048)"},
    "mamba_conv_bias": {"when": "always", "required": True, "allowed": (True, False), "source": _GRANITE,
                        "note": "conv1d.bias present iff True"},
    "mamba_proj_bias": {"when": "always", "required": True, "allowed": (True, False), "source": _GRANITE,
                        "note": "in_proj.bias and out_proj.bias present iff True"},
    # --- MLP ------------------------------------------------------------------------------------
    "num_local_experts": {"when": "always", "required": False, "allowed": None, "source": _GRANITE,
                          "note": "getattr(..., 0); 0 = dense, supported (no block_sparse_moe built)"},
    "shared_intermediate_size": {"when": "always", "required": False, "allowed": None, "source": _GRANITE + ", " + _SHARED,
                                 "note": "getattr(..., 0); 0 means NO MLP at all, so a dense model needs > 0"},
    "intermediate_size": {"when": "moe", "required": True, "allowed": None, "source": _GRANITE,
                          "note": "per-expert width; not read when dense"},
    "num_experts_per_tok": {"when": "moe", "required": True, "allowed": None, "source": _GRANITE,
                            "note": "router top-k; not read when dense"},
}

# Checkpoint tensors vLLM tolerates without a matching parameter (AutoWeightsLoader skips them).
VLLM_SKIPPED_SUBSTRINGS: tuple[str, ...] = ("rotary_emb.inv_freq", "rotary_emb.cos_cached", "rotary_emb.sin_cached")

# Renames vLLM applies to checkpoint names before looking up its parameters.
VLLM_NAME_REMAP: tuple[tuple[str, str], ...] = (
    ("A_log", "A"),  # loaded as -exp(A_log)
    (".q_proj", ".qkv_proj"),  # shard "q"
    (".k_proj", ".qkv_proj"),  # shard "k"
    (".v_proj", ".qkv_proj"),  # shard "v"
)

# The vLLM triton causal-conv kernels unroll kernel widths 2..5 (vllm/model_executor/layers/mamba/ops/causal_conv1d.py).
VLLM_CONV_WIDTHS: tuple[int, ...] = (2, 3, 4, 5)


# ---- helpers ------------------------------------------------------------------------------------
def _get(config: Any, key: str, default: Any = None) -> Any:
    if isinstance(config, Mapping):
        return config.get(key, default)
    return getattr(config, key, default)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _as_float(v: Any) -> float | None:
    """JSON numbers, and transformers 5's {"__float__": "Infinity"} encoding."""
    if isinstance(v, Mapping) and "__float__" in v:
        v = v["__float__"]
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _mamba_d_head(config: Any) -> Any:
    d_head = _get(config, "mamba_d_head")
    if d_head == "auto":  # resolved by GraniteMoeHybridConfig the same way in 4.x and 5.x
        return (_get(config, "mamba_expand") * _get(config, "hidden_size")) // _get(config, "mamba_n_heads")
    return d_head


def _vllm_layer_kind(layer_type: Any) -> str | None:
    """'mamba' / 'attention' for either spelling, None for anything else."""
    if layer_type in VLLM_LAYER_TYPES:
        return layer_type
    return TRANSFORMERS5_LAYER_TYPES.get(layer_type)


def _layer_kinds(config: Any) -> list[str | None]:
    types = _get(config, "layer_types")
    if types is None:  # GraniteMoeHybridConfig's own default: all Mamba
        return [VLLM_MAMBA] * int(_get(config, "num_hidden_layers", 0) or 0)
    return [_vllm_layer_kind(t) for t in types]


def vllm_param_name(checkpoint_name: str) -> str:
    """The vLLM parameter a checkpoint tensor is loaded into (stacked q/k/v share qkv_proj)."""
    name = checkpoint_name
    for old, new in VLLM_NAME_REMAP:
        if old in name:
            name = name.replace(old, new)
    return name


def vllm_gated_norm_group_size(config: Any) -> int:
    """Channels per RMS group in vLLM's Mixer2RMSNormGated: d_inner // mamba_n_groups."""
    return (_get(config, "mamba_expand") * _get(config, "hidden_size")) // _get(config, "mamba_n_groups")


# ---- expected tensors -----------------------------------------------------------------------------
def expected_vllm_tensor_shapes(config: Any) -> dict[str, tuple[int, ...]]:
    """Checkpoint tensor name -> shape that vLLM's GraniteMoeHybrid loader consumes.

    Names are the checkpoint (Hugging Face) names; `vllm_param_name` gives the parameter each
    lands in. `config` is a config.json dict or a config object.
    """
    hidden = int(_get(config, "hidden_size"))
    vocab = int(_get(config, "vocab_size"))
    out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,)}
    if not _get(config, "tie_word_embeddings", False):
        out["lm_head.weight"] = (vocab, hidden)

    n_experts = int(_get(config, "num_local_experts", 0) or 0)
    shared = int(_get(config, "shared_intermediate_size", 0) or 0)

    heads = _get(config, "num_attention_heads")
    kv_heads = _get(config, "num_key_value_heads") or heads
    head_dim = hidden // heads if heads else 0
    attn_bias = bool(_get(config, "attention_bias", False))

    expand = _get(config, "mamba_expand")
    d_inner = int(expand * hidden) if expand is not None else 0
    n_heads = _get(config, "mamba_n_heads") or 0
    groups = _get(config, "mamba_n_groups") or 0
    d_state = _get(config, "mamba_d_state") or 0
    d_conv = _get(config, "mamba_d_conv") or 0
    gn = groups * d_state
    conv_dim = d_inner + 2 * gn
    proj_bias = bool(_get(config, "mamba_proj_bias", False))
    conv_bias = bool(_get(config, "mamba_conv_bias", True))

    for i, kind in enumerate(_layer_kinds(config)):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = (hidden,)
        out[p + "post_attention_layernorm.weight"] = (hidden,)
        if kind == VLLM_MAMBA:
            m = p + "mamba."
            out[m + "in_proj.weight"] = (2 * d_inner + 2 * gn + n_heads, hidden)
            if proj_bias:
                out[m + "in_proj.bias"] = (2 * d_inner + 2 * gn + n_heads,)
            out[m + "conv1d.weight"] = (conv_dim, 1, d_conv)
            if conv_bias:
                out[m + "conv1d.bias"] = (conv_dim,)
            out[m + "A_log"] = (n_heads,)
            out[m + "D"] = (n_heads,)
            out[m + "dt_bias"] = (n_heads,)
            out[m + "norm.weight"] = (d_inner,)
            out[m + "out_proj.weight"] = (hidden, d_inner)
            if proj_bias:
                out[m + "out_proj.bias"] = (hidden,)
        elif kind == VLLM_ATTENTION:
            a = p + "self_attn."
            out[a + "q_proj.weight"] = (heads * head_dim, hidden)
            out[a + "k_proj.weight"] = (kv_heads * head_dim, hidden)
            out[a + "v_proj.weight"] = (kv_heads * head_dim, hidden)
            out[a + "o_proj.weight"] = (hidden, heads * head_dim)
            if attn_bias:
                out[a + "q_proj.bias"] = (heads * head_dim,)
                out[a + "k_proj.bias"] = (kv_heads * head_dim,)
                out[a + "v_proj.bias"] = (kv_heads * head_dim,)
                out[a + "o_proj.bias"] = (hidden,)
        # else: unknown layer type; check_vllm_compat reports it, no tensors can be predicted.
        if shared > 0:
            out[p + "shared_mlp.input_linear.weight"] = (2 * shared, hidden)
            out[p + "shared_mlp.output_linear.weight"] = (hidden, shared)
        if n_experts > 0:
            inter = int(_get(config, "intermediate_size"))
            out[p + "block_sparse_moe.input_linear.weight"] = (n_experts, 2 * inter, hidden)
            out[p + "block_sparse_moe.output_linear.weight"] = (n_experts, hidden, inter)
            out[p + "block_sparse_moe.router.layer.weight"] = (n_experts, hidden)
    return out


def expected_vllm_tensor_names(config: Any) -> set[str]:
    """The checkpoint tensor names vLLM's GraniteMoeHybrid loader needs, exactly.

    vLLM raises on a checkpoint name it has no parameter for (after its renames: A_log -> A,
    q/k/v_proj -> qkv_proj) and, for unquantized models, on a parameter left unloaded; so a
    compatible checkpoint holds exactly this set (plus skippable rotary caches).
    """
    return set(expected_vllm_tensor_shapes(config))


# ---- config fix-up ----------------------------------------------------------------------------------
def vllm_safe_config_dict(config_dict: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of config.json that every vLLM release and transformers 4.x/5.x read the same way.

    Writes legacy layer-type strings, and mirrors rope_parameters into top-level rope_theta and
    (for a non-default rope type) a legacy rope_scaling. Other keys are left alone.
    """
    d = dict(config_dict)
    if d.get("layer_types") is not None:
        d["layer_types"] = [_vllm_layer_kind(t) or t for t in d["layer_types"]]
    rope = d.get("rope_parameters")
    if isinstance(rope, Mapping):
        if "rope_theta" in rope:
            d["rope_theta"] = rope["rope_theta"]
        if rope.get("rope_type", "default") != "default":
            d["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    return d


# ---- the check ------------------------------------------------------------------------------------------
def _config_problems(cfg: Mapping[str, Any], tp: int) -> list[str]:
    problems: list[str] = []

    def missing(key: str) -> bool:
        return key not in cfg or cfg[key] is None

    archs = cfg.get("architectures") or []
    if ARCHITECTURE not in archs:
        problems.append(f"architectures: must contain {ARCHITECTURE!r} (vLLM picks the model class from it), got {archs!r}")
    if cfg.get("model_type") != MODEL_TYPE:
        problems.append(f"model_type: must be {MODEL_TYPE!r}, got {cfg.get('model_type')!r}")

    n_experts = cfg.get("num_local_experts", 0) or 0
    for key, spec in VLLM_REQUIRED_CONFIG_KEYS.items():
        if key in ("architectures", "model_type") or not spec["required"]:
            continue
        if spec["when"] == "moe" and n_experts <= 0:
            continue
        if key == "position_embedding_type":
            if key not in cfg:
                problems.append(f"{key}: missing (vLLM applies RoPE only when it is 'rope')")
            continue
        if missing(key):
            problems.append(f"{key}: missing; vLLM reads config.{key} ({spec['source']})")

    # layer types
    n_layers = cfg.get("num_hidden_layers")
    types = cfg.get("layer_types")
    if isinstance(types, list):
        if _is_int(n_layers) and len(types) != n_layers:
            problems.append(f"layer_types: has {len(types)} entries but num_hidden_layers={n_layers}")
        for i, t in enumerate(types):
            if t in VLLM_LAYER_TYPES:
                continue
            if t in TRANSFORMERS5_LAYER_TYPES:
                problems.append(
                    f"layer_types[{i}]: {t!r} is the transformers>=5 spelling; vLLM <= v0.25.1 (KeyError in "
                    f"ALL_DECODER_LAYER_TYPES) and transformers 4.x (ValueError) accept only 'mamba'/'attention'; "
                    f"write {TRANSFORMERS5_LAYER_TYPES[t]!r}"
                )
            else:
                problems.append(f"layer_types[{i}]: {t!r} is not a GraniteMoeHybrid layer type; use 'mamba' or 'attention'")
    elif "layer_types" in cfg:
        problems.append(f"layer_types: must be a list, got {types!r}")

    kinds = [_vllm_layer_kind(t) for t in types] if isinstance(types, list) else []
    has_mamba = VLLM_MAMBA in kinds
    has_attn = VLLM_ATTENTION in kinds

    if cfg.get("hidden_act") not in (None, "silu"):
        problems.append(f"hidden_act: vLLM's GraniteMoeSharedMLP supports only 'silu', got {cfg['hidden_act']!r}")

    ls = cfg.get("logits_scaling")
    if ls is not None and _as_float(ls) == 0.0:
        problems.append("logits_scaling: must be non-zero (vLLM scales logits by 1/logits_scaling)")

    # MLP
    shared = cfg.get("shared_intermediate_size", 0) or 0
    if n_experts == 0 and not (_is_int(shared) and shared > 0):
        problems.append(
            "shared_intermediate_size: a dense model (num_local_experts=0) needs shared_intermediate_size > 0; "
            "with 0 vLLM builds no MLP at all while transformers still builds shared_mlp"
        )

    hidden = cfg.get("hidden_size")
    # attention
    heads, kv = cfg.get("num_attention_heads"), cfg.get("num_key_value_heads")
    if _is_int(hidden) and _is_int(heads) and heads > 0:
        if hidden % heads:
            problems.append(f"num_attention_heads: {heads} does not divide hidden_size={hidden} (vLLM uses head_dim = hidden_size // heads)")
        head_dim = cfg.get("head_dim")
        if head_dim is not None and head_dim != hidden // heads:
            problems.append(
                f"head_dim: {head_dim} != hidden_size // num_attention_heads = {hidden // heads}; vLLM's "
                "GraniteMoeHybrid attention ignores head_dim but its KV-cache sizing reads it"
            )
        if _is_int(kv) and kv > 0 and heads % kv:
            problems.append(f"num_key_value_heads: {kv} does not divide num_attention_heads={heads}")
    if "position_embedding_type" in cfg:
        pet = cfg.get("position_embedding_type")
        if pet not in ("rope", None):
            problems.append(f"position_embedding_type: {pet!r} is neither 'rope' nor null; vLLM would silently use no RoPE")
    if cfg.get("position_embedding_type") == "rope":
        problems.extend(_rope_problems(cfg))

    # Mamba
    if has_mamba or not isinstance(types, list):
        problems.extend(_mamba_problems(cfg))

    # time_step_limit: vLLM hard-codes dt_limit=(0, inf)
    tsl = cfg.get("time_step_limit")
    if tsl is not None:
        lim = [_as_float(v) for v in tsl] if isinstance(tsl, (list, tuple)) else None
        if lim is None or len(lim) != 2 or lim[0] != 0.0 or lim[1] != math.inf:
            problems.append(f"time_step_limit: vLLM always uses dt_limit=(0, inf) and ignores this; got {tsl!r}")

    if tp != 1:
        problems.extend(_tp_problems(cfg, tp, has_mamba, has_attn))
    return problems


def _rope_problems(cfg: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    rope = cfg.get("rope_parameters")
    top_theta = cfg.get("rope_theta")
    if isinstance(rope, Mapping):
        theta = rope.get("rope_theta")
        if theta is not None and top_theta is None and _as_float(theta) != 10000.0:
            problems.append(
                f"rope_theta: rope_parameters has rope_theta={theta} but there is no top-level rope_theta; under "
                "transformers 4.x (vLLM's pin) vLLM would use the 4.x default 10000.0 instead"
            )
        if theta is not None and top_theta is not None and _as_float(theta) != _as_float(top_theta):
            problems.append(f"rope_theta: top-level {top_theta} disagrees with rope_parameters['rope_theta']={theta}")
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type != "default":
            legacy = cfg.get("rope_scaling")
            if not isinstance(legacy, Mapping):
                problems.append(
                    f"rope_scaling: rope type {rope_type!r} also needs a legacy rope_scaling dict; with transformers "
                    "4.x vLLM rebuilds rope_parameters from rope_scaling/rope_theta only"
                )
            else:
                for k, v in rope.items():
                    if k != "rope_theta" and k in legacy and legacy[k] != v:
                        problems.append(f"rope_scaling[{k!r}]={legacy[k]!r} disagrees with rope_parameters[{k!r}]={v!r}")
    elif rope is not None:
        problems.append(f"rope_parameters: must be a dict, got {rope!r}")
    # rope_parameters absent: every reader falls back to rope_theta / rope_scaling (default theta 10000).
    return problems


def _mamba_problems(cfg: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    hidden = cfg.get("hidden_size")
    expand = cfg.get("mamba_expand")
    n_heads = cfg.get("mamba_n_heads")
    groups = cfg.get("mamba_n_groups")
    for key in ("mamba_n_heads", "mamba_n_groups", "mamba_d_state", "mamba_d_conv", "mamba_chunk_size", "mamba_expand"):
        v = cfg.get(key)
        if v is not None and not (_is_int(v) and v > 0):
            problems.append(f"{key}: must be a positive integer, got {v!r}")
    d_head = cfg.get("mamba_d_head")
    if d_head is not None and d_head != "auto" and not (_is_int(d_head) and d_head > 0):
        problems.append(f"mamba_d_head: must be a positive integer (or 'auto'), got {d_head!r}")
    if not all(_is_int(v) and v > 0 for v in (hidden, expand, n_heads)):
        return problems
    d_inner = expand * hidden
    d_head_val = _mamba_d_head(cfg)
    if _is_int(d_head_val) and n_heads * d_head_val != d_inner:
        problems.append(
            f"mamba_d_head: mamba_n_heads * mamba_d_head = {n_heads * d_head_val} != mamba_expand * hidden_size = {d_inner} "
            "(vLLM sizes in_proj/norm/out_proj from the latter and the SSM output from the former)"
        )
    if _is_int(groups) and groups > 0:
        if n_heads % groups:
            problems.append(f"mamba_n_groups: {groups} does not divide mamba_n_heads={n_heads}")
        if d_inner % groups:
            problems.append(f"mamba_n_groups: {groups} does not divide d_inner={d_inner} (gated-norm group size)")
    k = cfg.get("mamba_d_conv")
    if _is_int(k) and k not in VLLM_CONV_WIDTHS:
        problems.append(f"mamba_d_conv: {k} is outside the widths vLLM's causal-conv kernels unroll {VLLM_CONV_WIDTHS}")
    return problems


def _tp_problems(cfg: Mapping[str, Any], tp: int, has_mamba: bool, has_attn: bool) -> list[str]:
    problems: list[str] = []
    heads, kv = cfg.get("num_attention_heads"), cfg.get("num_key_value_heads")
    if has_attn and _is_int(heads) and _is_int(kv):
        if heads % tp:
            problems.append(f"tp={tp}: num_attention_heads={heads} is not divisible by the TP size")
        if kv >= tp and kv % tp:
            problems.append(f"tp={tp}: num_key_value_heads={kv} is not divisible by the TP size")
        if kv < tp and tp % kv:
            problems.append(f"tp={tp}: TP size is not a multiple of num_key_value_heads={kv}")
    if has_mamba:
        n_heads, groups = cfg.get("mamba_n_heads"), cfg.get("mamba_n_groups")
        if _is_int(n_heads) and n_heads % tp:
            problems.append(f"tp={tp}: mamba_n_heads={n_heads} is not divisible by the TP size")
        if _is_int(groups) and groups % tp and groups != 1:
            problems.append(f"tp={tp}: mamba_n_groups={groups} must be divisible by the TP size or equal 1")
        hidden, expand = cfg.get("hidden_size"), cfg.get("mamba_expand")
        if _is_int(hidden) and _is_int(expand) and (hidden * expand) % tp:
            problems.append(f"tp={tp}: d_inner={hidden * expand} is not divisible by the TP size")
    shared = cfg.get("shared_intermediate_size") or 0
    if _is_int(shared) and shared % tp:
        problems.append(f"tp={tp}: shared_intermediate_size={shared} is not divisible by the TP size")
    return problems


def check_vllm_compat(
    config_dict: Mapping[str, Any],
    tensor_names: Iterable[str],
    *,
    tensor_shapes: Mapping[str, Sequence[int]] | None = None,
    tensor_parallel_size: int = 1,
) -> list[str]:
    """Human-readable reasons vLLM's GraniteMoeHybrid loader would reject or misread a checkpoint.

    `config_dict` is the parsed config.json, `tensor_names` the safetensors key names. Optional
    `tensor_shapes` (name -> shape) adds shape checks; `tensor_parallel_size` adds vLLM's TP
    divisibility asserts. An empty list means no problem was found.
    """
    cfg = dict(config_dict)
    problems = _config_problems(cfg, int(tensor_parallel_size))

    try:
        expected_shapes = expected_vllm_tensor_shapes(cfg)
    except (TypeError, ValueError, ZeroDivisionError) as e:  # config too broken to predict tensors
        problems.append(f"cannot predict tensor names from this config: {e}")
        return problems

    present = set(tensor_names)
    expected = set(expected_shapes)
    tolerated = {n for n in present if any(s in n for s in VLLM_SKIPPED_SUBSTRINGS)}
    missing = sorted(expected - present)
    unexpected = sorted(present - expected - tolerated)

    tied = bool(cfg.get("tie_word_embeddings", False))
    for name in missing:
        hint = ""
        if name.endswith(".A_log") and name[: -len("A_log")] + "A" in present:
            hint = " (found '...mamba.A': store A_log; vLLM loads A = -exp(A_log))"
        elif name == "lm_head.weight":
            hint = " (tie_word_embeddings is false, so vLLM needs its own lm_head)"
        elif ".mamba." in name and name.replace(".mamba.", ".mixer.") in present:
            hint = " (found '.mixer.': GraniteMoeHybrid names the Mamba module 'mamba')"
        problems.append(f"missing tensor {name}: vLLM would leave its parameter uninitialised and refuse to load{hint}")
    for name in unexpected:
        if name == "lm_head.weight" and tied:
            problems.append(
                "unexpected tensor lm_head.weight: tie_word_embeddings is true, so vLLM loads it into the shared "
                "embedding matrix (overwriting embed_tokens); drop it or set tie_word_embeddings=false"
            )
        else:
            problems.append(f"unexpected tensor {name}: vLLM has no parameter for it and raises at load")

    if tensor_shapes is not None:
        for name in sorted(expected & present):
            if name not in tensor_shapes:
                continue
            got = tuple(int(x) for x in tensor_shapes[name])
            want = expected_shapes[name]
            if got != want:
                problems.append(f"shape of {name}: vLLM expects {want}, checkpoint has {got}")
    return problems


__all__ = [
    "ARCHITECTURE",
    "MODEL_TYPE",
    "TRANSFORMERS5_LAYER_TYPES",
    "VLLM_ATTENTION",
    "VLLM_CONV_WIDTHS",
    "VLLM_LAYER_TYPES",
    "VLLM_MAMBA",
    "VLLM_NAME_REMAP",
    "VLLM_REQUIRED_CONFIG_KEYS",
    "VLLM_SKIPPED_SUBSTRINGS",
    "check_vllm_compat",
    "expected_vllm_tensor_names",
    "expected_vllm_tensor_shapes",
    "vllm_gated_norm_group_size",
    "vllm_param_name",
    "vllm_safe_config_dict",
]
