"""Checkpoint layout vs. what vLLM's GraniteMoeHybrid loader reads (see tests/vllm_layout.py).

A tiny dense GraniteMoeHybrid model is written by transformers' own `save_pretrained`; its
config.json and safetensors keys are then checked against the vLLM layout recorded in
`tests.vllm_layout`.
"""

from __future__ import annotations

import copy
import json
import math

import pytest

transformers = pytest.importorskip("transformers")
safetensors = pytest.importorskip("safetensors")

from tests.vllm_layout import (  # noqa: E402
    TRANSFORMERS5_LAYER_TYPES,
    VLLM_LAYER_TYPES,
    VLLM_REQUIRED_CONFIG_KEYS,
    check_vllm_compat,
    expected_vllm_tensor_names,
    expected_vllm_tensor_shapes,
    vllm_gated_norm_group_size,
    vllm_param_name,
    vllm_safe_config_dict,
)

LAYERS = ["mamba", "mamba", "attention", "mamba", "attention"]

VARIANTS = {
    # tied embeddings, no biases, several B/C groups
    "tied-grouped": dict(
        tie_word_embeddings=True, attention_bias=False, mamba_proj_bias=False, mamba_conv_bias=True,
        mamba_n_heads=8, mamba_d_head=16, mamba_n_groups=2, num_key_value_heads=2,
    ),
    # untied lm_head, every bias on, one group (vLLM's other sharding path)
    "untied-biased": dict(
        tie_word_embeddings=False, attention_bias=True, mamba_proj_bias=True, mamba_conv_bias=True,
        mamba_n_heads=4, mamba_d_head=32, mamba_n_groups=1, num_key_value_heads=4,
    ),
}


def _write_checkpoint(tmp_path, **kw):
    cfg = transformers.GraniteMoeHybridConfig(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=0,
        shared_intermediate_size=80,
        num_hidden_layers=len(LAYERS),
        num_attention_heads=4,
        num_local_experts=0,
        num_experts_per_tok=0,
        position_embedding_type="rope",
        layer_types=list(LAYERS),
        mamba_d_state=16,
        mamba_d_conv=4,
        mamba_expand=2,
        mamba_chunk_size=32,
        max_position_embeddings=256,
        attention_multiplier=0.125,
        **kw,
    )
    model = transformers.GraniteMoeHybridForCausalLM(cfg)
    model.save_pretrained(tmp_path)
    config_json = json.loads((tmp_path / "config.json").read_text())
    shapes = {}
    for f in sorted(tmp_path.glob("*.safetensors")):
        with safetensors.safe_open(str(f), "pt") as st:
            for k in st.keys():
                shapes[k] = tuple(st.get_slice(k).get_shape())
    return config_json, shapes


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def written(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    config_json, shapes = _write_checkpoint(path, **VARIANTS[request.param])
    return request.param, path, config_json, shapes


# ---- a transformers-written checkpoint against vLLM's layout ------------------------------------------
def test_tensor_names_match_vllm_exactly(written):
    _, _, config_json, shapes = written
    assert expected_vllm_tensor_names(config_json) == set(shapes)
    assert expected_vllm_tensor_shapes(config_json) == shapes


def test_vllm_safe_config_has_no_problems(written):
    _, _, config_json, shapes = written
    fixed = vllm_safe_config_dict(config_json)
    assert check_vllm_compat(fixed, set(shapes)) == []
    assert check_vllm_compat(fixed, shapes.keys(), tensor_shapes=shapes) == []


def test_transformers5_layer_type_spelling_is_the_only_problem(written):
    """transformers 5 saves 'linear_attention'/'full_attention', which vLLM <= 0.25.1 cannot read."""
    _, _, config_json, shapes = written
    assert set(config_json["layer_types"]) <= set(TRANSFORMERS5_LAYER_TYPES)
    problems = check_vllm_compat(config_json, set(shapes))
    assert len(problems) == len(LAYERS)
    assert all(p.startswith("layer_types[") and "'mamba'/'attention'" in p for p in problems)


def test_legacy_layer_types_load_in_transformers5(written):
    """The strings vLLM reads are also accepted by transformers 5 (remapped on load)."""
    _, path, config_json, _ = written
    fixed = vllm_safe_config_dict(config_json)
    assert fixed["layer_types"] == LAYERS
    (path / "config.json").write_text(json.dumps(fixed))
    loaded = transformers.AutoConfig.from_pretrained(path)
    assert [TRANSFORMERS5_LAYER_TYPES[t] for t in loaded.layer_types] == LAYERS
    assert loaded.rope_parameters["rope_theta"] == fixed["rope_theta"]


def test_tied_checkpoint_has_no_lm_head(written):
    name, _, config_json, shapes = written
    assert ("lm_head.weight" in shapes) == (not VARIANTS[name]["tie_word_embeddings"])


def test_gated_norm_group_size(written):
    name, _, config_json, _ = written
    v = VARIANTS[name]
    assert vllm_gated_norm_group_size(config_json) == 2 * 64 // v["mamba_n_groups"]


# ---- plain data --------------------------------------------------------------------------------------
def test_required_keys_are_in_a_transformers_config(written):
    _, _, config_json, _ = written
    always = [k for k, s in VLLM_REQUIRED_CONFIG_KEYS.items() if s["required"] and s["when"] == "always"]
    assert not [k for k in always if k not in config_json]
    assert VLLM_REQUIRED_CONFIG_KEYS["layer_types"]["allowed"] == VLLM_LAYER_TYPES == ("mamba", "attention")
    assert VLLM_REQUIRED_CONFIG_KEYS["hidden_act"]["allowed"] == ("silu",)


def test_param_name_remap():
    assert vllm_param_name("model.layers.0.mamba.A_log") == "model.layers.0.mamba.A"
    assert vllm_param_name("model.layers.2.self_attn.k_proj.weight") == "model.layers.2.self_attn.qkv_proj.weight"
    assert vllm_param_name("model.layers.2.self_attn.o_proj.weight") == "model.layers.2.self_attn.o_proj.weight"


# ---- the check catches what vLLM would trip on ---------------------------------------------------------
@pytest.fixture(scope="module")
def good(tmp_path_factory):
    config_json, shapes = _write_checkpoint(tmp_path_factory.mktemp("good"), **VARIANTS["tied-grouped"])
    return vllm_safe_config_dict(config_json), shapes


def _one(problems, needle):
    assert any(needle in p for p in problems), problems


def test_A_instead_of_A_log(good):
    cfg, shapes = good
    names = {n.replace("mamba.A_log", "mamba.A") for n in shapes}
    problems = check_vllm_compat(cfg, names)
    _one(problems, "store A_log")
    _one(problems, "unexpected tensor model.layers.0.mamba.A")


def test_mixer_module_name(good):
    cfg, shapes = good
    problems = check_vllm_compat(cfg, {n.replace(".mamba.", ".mixer.") for n in shapes})
    _one(problems, "names the Mamba module 'mamba'")


def test_lm_head_with_tied_embeddings(good):
    cfg, shapes = good
    _one(check_vllm_compat(cfg, set(shapes) | {"lm_head.weight"}), "overwriting embed_tokens")
    untied = dict(cfg, tie_word_embeddings=False)
    _one(check_vllm_compat(untied, set(shapes)), "missing tensor lm_head.weight")


def test_rotary_caches_are_tolerated(good):
    cfg, shapes = good
    assert check_vllm_compat(cfg, set(shapes) | {"model.layers.2.self_attn.rotary_emb.inv_freq"}) == []


def test_shape_mismatch(good):
    cfg, shapes = good
    bad = dict(shapes)
    bad["model.layers.0.mamba.in_proj.weight"] = (999, 64)
    _one(check_vllm_compat(cfg, shapes.keys(), tensor_shapes=bad), "shape of model.layers.0.mamba.in_proj.weight")


def test_rope_theta_needs_top_level_copy(good):
    cfg, shapes = good
    cfg = copy.deepcopy(cfg)
    cfg.pop("rope_theta", None)
    cfg["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e7}
    _one(check_vllm_compat(cfg, set(shapes)), "4.x default 10000.0")
    assert check_vllm_compat(vllm_safe_config_dict(cfg), set(shapes)) == []
    cfg["rope_theta"] = 5e5
    _one(check_vllm_compat(cfg, set(shapes)), "disagrees")


def test_scaled_rope_needs_legacy_rope_scaling(good):
    cfg, shapes = good
    cfg = copy.deepcopy(cfg)
    cfg["rope_parameters"] = {
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192,
    }
    cfg["rope_theta"] = 500000.0
    cfg.pop("rope_scaling", None)
    _one(check_vllm_compat(cfg, set(shapes)), "legacy rope_scaling")
    fixed = vllm_safe_config_dict(cfg)
    assert fixed["rope_scaling"]["rope_type"] == "llama3"
    assert check_vllm_compat(fixed, set(shapes)) == []


@pytest.mark.parametrize(
    "override, needle",
    [
        ({"shared_intermediate_size": 0}, "needs shared_intermediate_size > 0"),
        ({"hidden_act": "gelu"}, "only 'silu'"),
        ({"mamba_expand": 1.5}, "mamba_expand: must be a positive integer"),
        ({"mamba_d_head": 8}, "mamba_n_heads * mamba_d_head"),
        ({"mamba_n_groups": 3}, "does not divide mamba_n_heads"),
        ({"position_embedding_type": "absolute"}, "no RoPE"),
        ({"time_step_limit": [0.001, 100.0]}, "dt_limit=(0, inf)"),
        ({"head_dim": 32}, "head_dim: 32"),
        ({"architectures": ["HybridForCausalLM"]}, "GraniteMoeHybridForCausalLM"),
        ({"logits_scaling": 0}, "non-zero"),
        ({"layer_types": ["mamba", "mamba", "attention", "mamba"]}, "has 4 entries"),
        ({"layer_types": ["mamba", "moe", "attention", "mamba", "attention"]}, "'moe' is not"),
    ],
)
def test_config_problems(good, override, needle):
    cfg, shapes = good
    _one(check_vllm_compat(dict(cfg, **override), set(shapes)), needle)


def test_transformers_time_step_limit_encoding_is_fine(good):
    cfg, shapes = good
    assert check_vllm_compat(dict(cfg, time_step_limit=[0.0, {"__float__": "Infinity"}]), set(shapes)) == []
    assert check_vllm_compat(dict(cfg, time_step_limit=[0.0, math.inf]), set(shapes)) == []


def test_tensor_parallel_constraints(good):
    cfg, shapes = good  # mamba_n_heads=8, mamba_n_groups=2, heads=4, kv=2
    assert check_vllm_compat(cfg, set(shapes), tensor_parallel_size=2) == []
    problems = check_vllm_compat(cfg, set(shapes), tensor_parallel_size=4)
    _one(problems, "mamba_n_groups=2 must be divisible by the TP size or equal 1")
    assert check_vllm_compat(dict(cfg, mamba_n_groups=1), set(shapes), tensor_parallel_size=4) == []
    _one(check_vllm_compat(cfg, set(shapes), tensor_parallel_size=3), "num_attention_heads=4")
