import json

import pytest

from m1 import HybridConfig
from m1.config import ConfigError


def test_named_shapes():
    llama = HybridConfig.from_name("llama-3.2-3b")
    assert llama.attention_layers == list(range(28)) and llama.mamba_layers == []
    assert (llama.vocab_size, llama.hidden_size, llama.shared_intermediate_size) == (128256, 3072, 8192)
    assert (llama.num_attention_heads, llama.num_key_value_heads) == (24, 8)
    assert llama.rope_parameters["rope_type"] == "llama3" and llama.tie_word_embeddings
    m1 = HybridConfig.from_name("m1-3b")
    assert m1.attention_layers == [3, 8, 13, 18, 23, 27]
    assert (m1.mamba_n_heads, m1.mamba_d_head, m1.mamba_n_groups, m1.mamba_d_state) == (192, 16, 192, 16)
    assert m1.mamba_inner * m1.mamba_d_state == 3072 * 16  # M1's state budget
    s128 = HybridConfig.from_name("m1-3b-s128")
    assert (s128.mamba_n_heads, s128.mamba_d_head, s128.mamba_n_groups, s128.mamba_d_state) == (24, 128, 24, 128)
    assert abs(m1.attention_multiplier - 128**-0.5) < 1e-12
    assert (m1.embedding_multiplier, m1.residual_multiplier, m1.logits_scaling) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(attention_layers=[28]), "attention_layers"),
        (dict(attention_layers=[-1]), "attention_layers"),
        (dict(attention_layers=[3, 3]), "attention_layers"),
        (dict(mamba_groups=7), "mamba_n_groups"),
        (dict(mamba_heads=100, mamba_head_dim=16), "mamba_heads"),
        (dict(num_key_value_heads=5), "num_key_value_heads"),
        (dict(num_attention_heads=7), "num_attention_heads"),
    ],
)
def test_bad_values_name_the_field(overrides, field):
    with pytest.raises(ConfigError) as e:
        HybridConfig.from_name("m1-3b", **overrides)
    assert e.value.field_name == field and str(e.value).startswith(field)


def test_unknown_name():
    with pytest.raises(ConfigError, match="name"):
        HybridConfig.from_name("gpt-5")


def test_round_trip_and_legacy_spelling(tmp_path):
    c = HybridConfig.from_name("m1-3b")
    c.save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    assert set(raw["layer_types"]) == {"mamba", "attention"}
    assert raw["rope_theta"] == 500000.0 and raw["rope_scaling"]["rope_type"] == "llama3"
    back = HybridConfig.from_pretrained(tmp_path)
    assert back.attention_layers == c.attention_layers
    assert back.mamba_d_state == 16
