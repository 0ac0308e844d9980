import pytest
import torch

from m1 import HybridForCausalLM, convert_from_transformer
from m1.config import ConfigError
from m1.convert.cli import cli_main
from m1.convert.mapping import _expand_kv, check_attention_mapping
from tests.helpers import tiny_llama, tiny_qwen2


def test_all_attention_llama_reproduces_teacher():
    teacher = tiny_llama()
    ids = torch.randint(0, 97, (2, 40))
    student = convert_from_transformer(teacher, attention_layers=range(4)).eval()
    assert student.config.tie_word_embeddings
    assert (teacher(ids).logits - student(ids).logits).abs().max() <= 1e-5


def test_all_attention_qwen2_with_biases_reproduces_teacher():
    teacher = tiny_qwen2()
    assert teacher.model.layers[0].self_attn.q_proj.bias.abs().sum() > 0
    ids = torch.randint(0, 97, (2, 40))
    student = convert_from_transformer(teacher, attention_layers=range(3)).eval()
    assert student.model.layers[0].self_attn.o_proj.bias.abs().sum() == 0
    assert (teacher(ids).logits - student(ids).logits).abs().max() <= 1e-5


def test_mamba_weights_come_from_attention():
    teacher = tiny_qwen2()
    s = convert_from_transformer(teacher, attention_layers=[0])
    mix, att = s.model.layers[1].mamba, teacher.model.layers[1].self_attn
    inner, gn = mix.inner, mix.n_groups * mix.state_size
    W, b = mix.in_proj.weight, mix.in_proj.bias
    assert torch.equal(W[:inner], torch.zeros_like(W[:inner]))  # z weights zero ...
    assert (b[:inner] > 0).all()  # ... and a positive constant gate bias
    assert torch.equal(W[inner : 2 * inner], _expand_kv(att.v_proj.weight, 2, 4))
    assert torch.equal(W[2 * inner : 2 * inner + gn], _expand_kv(att.k_proj.weight, 2, 4))
    assert torch.equal(W[2 * inner + gn : 2 * inner + 2 * gn], att.q_proj.weight)
    assert torch.equal(b[2 * inner + gn : 2 * inner + 2 * gn], att.q_proj.bias)
    assert torch.equal(mix.out_proj.weight, att.o_proj.weight)
    conv = mix.conv1d.weight[:, 0]
    assert torch.equal(conv[:, -1], torch.ones_like(conv[:, -1])) and conv[:, :-1].abs().sum() == 0


def test_kv_expansion_repeats_each_kv_head_for_its_query_heads():
    w = torch.arange(2 * 3 * 5, dtype=torch.float32).reshape(6, 5)  # 2 kv heads of dim 3
    e = _expand_kv(w, 2, 4)
    assert torch.equal(e[0:3], w[0:3]) and torch.equal(e[3:6], w[0:3])
    assert torch.equal(e[6:9], w[3:6]) and torch.equal(e[9:12], w[3:6])


def test_m1_sixteen_state_mapping_cuts_heads_into_groups():
    """M1's 16-state shape: head h of 16 channels uses q/k/v slice h of 16 rows."""
    teacher = tiny_llama()  # 4 heads x 16 dims
    s = convert_from_transformer(teacher, attention_layers=[0], mamba_heads=16, mamba_head_dim=4, mamba_groups=16, state_size=4)
    mix, att = s.model.layers[2].mamba, teacher.model.layers[2].self_attn
    inner, gn = mix.inner, 16 * 4
    C = mix.in_proj.weight[2 * inner + gn :]
    B = mix.in_proj.weight[2 * inner : 2 * inner + gn]
    for g in range(16):
        q_head = (g * 4) // 16
        assert torch.equal(C[g * 4 : (g + 1) * 4], att.q_proj.weight[g * 4 : (g + 1) * 4])
        kv = q_head // 2
        assert torch.equal(B[g * 4 : (g + 1) * 4], att.k_proj.weight[kv * 16 + (g * 4) % 16 : kv * 16 + (g * 4) % 16 + 4])


def test_inconsistent_shape_is_rejected_with_field_name():
    teacher = tiny_llama()
    with pytest.raises(ConfigError, match="state_size"):
        convert_from_transformer(teacher, attention_layers=[0], mamba_heads=4, mamba_head_dim=16, mamba_groups=4, state_size=8)
    with pytest.raises(ConfigError, match="mamba_groups"):
        convert_from_transformer(teacher, attention_layers=[0], mamba_heads=8, mamba_head_dim=8, mamba_groups=1, state_size=64)
    # random init does not need the mapping
    s = convert_from_transformer(teacher, attention_layers=[0], mamba_heads=4, mamba_head_dim=16, mamba_groups=2, state_size=8, init="random")
    assert s.config.mamba_n_groups == 2


def test_unsupported_teacher_is_rejected():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50))
    with pytest.raises(ConfigError, match="model_type"):
        convert_from_transformer(gpt, attention_layers=[0])


def test_check_attention_mapping_accepts_named_m1_shapes():
    from m1 import HybridConfig

    for name in ("m1-3b", "m1-3b-s128"):
        check_attention_mapping(HybridConfig.from_name(name))


def test_cli_converts_a_local_checkpoint(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    teacher = tiny_llama()
    teacher.save_pretrained(tmp_path / "teacher")
    vocab = {f"t{i}": i for i in range(97)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="t0").save_pretrained(tmp_path / "teacher")
    args = ["--attention-layers", "1,3", "--calibration-sequences", "4", "--calibration-length", "32", "--calibration-seconds", "2"]
    assert cli_main([str(tmp_path / "teacher"), str(tmp_path / "hyb"), *args]) == 0  # calibrated, text sampled from the teacher
    files = {p.name for p in (tmp_path / "hyb").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "calibration.json"} <= files
    m = HybridForCausalLM.from_pretrained(tmp_path / "hyb")
    assert m.config.attention_layers == [1, 3]
    assert cli_main([str(tmp_path / "teacher"), str(tmp_path / "hyb2"), "--attention-layers", "none", "--init", "attention"]) == 0
    assert HybridForCausalLM.from_pretrained(tmp_path / "hyb2").config.attention_layers == []


@pytest.mark.parametrize("make, dtype", [(tiny_llama, torch.float32), (tiny_qwen2, torch.float32), (tiny_llama, torch.bfloat16)])
def test_attention_init_built_uninitialised_equals_a_fully_initialised_build(make, dtype, monkeypatch):
    """The attention init skips the student's random draws (`uninitialised_student`): every parameter and buffer
    must still equal what a fully initialised build converts to, bit for bit, and tied weights stay tied."""
    import m1.convert.mapping as mapping

    teacher = make().to(dtype)
    fast = convert_from_transformer(teacher, attention_layers=[1])
    monkeypatch.setattr(mapping, "uninitialised_student", lambda cfg, dt: HybridForCausalLM(cfg).to(dt))
    full = convert_from_transformer(teacher, attention_layers=[1])
    a, b = fast.state_dict(), full.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype == dtype and torch.equal(a[k], b[k]), k
    buffers = dict(fast.named_buffers()), dict(full.named_buffers())
    assert buffers[0].keys() == buffers[1].keys() and all(torch.equal(buffers[0][k], buffers[1][k]) for k in buffers[0])
    if fast.config.tie_word_embeddings:
        assert fast.lm_head.weight.data_ptr() == fast.model.embed_tokens.weight.data_ptr()
