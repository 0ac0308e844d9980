"""Calibrated initialisation (m1.convert.calibrate, .capture, .calibration_data) and measured placement (issue 11)."""

import math

import pytest
import torch

from m1.convert.calibrate import CalibrationConfig, calibrate, set_decay_from_distance
from m1.convert.calibration_data import calibration_ids_from_file
from m1.convert.capture import attention_distance, record_attention_io
from m1.convert.fidelity import token_kl
from m1.convert.mapping import convert_from_transformer
from tests.helpers import tiny_llama

SHAPE = dict(mamba_heads=8, mamba_head_dim=8, mamba_groups=8, state_size=8)  # 4 attention heads x 16 -> 2 sub-heads each


def test_hooked_targets_equal_the_teachers_attention_outputs():
    teacher = tiny_llama()
    ids = torch.randint(0, 97, (2, 24), generator=torch.Generator().manual_seed(1))
    out = teacher(ids, output_hidden_states=True)
    with torch.no_grad(), record_attention_io(teacher, [1, 2]) as got:
        teacher.model(input_ids=ids)
    pos = torch.arange(24).expand(2, 24)
    for i in (1, 2):
        layer = teacher.model.layers[i]
        h = layer.input_layernorm(out.hidden_states[i])
        cos_sin = teacher.model.rotary_emb(h, pos)
        want = layer.self_attn(hidden_states=h, position_embeddings=cos_sin, attention_mask=None)[0]
        torch.testing.assert_close(got[i][0], h, rtol=0, atol=1e-6)
        torch.testing.assert_close(got[i][1], want, rtol=1e-5, atol=1e-6)


def test_calibrated_decay_matches_a_known_attention_distance():
    # q = 0 makes every query attend uniformly to its causal prefix: mean distance t/2 at
    # position t, so (L - 1) / 4 on average over positions 0..L-1, in every head.
    teacher = tiny_llama()
    attn = teacher.model.layers[0].self_attn
    with torch.no_grad():
        attn.q_proj.weight.zero_()
    L = 41
    ids = torch.randint(0, 97, (3, L))
    h = teacher.model.layers[0].input_layernorm(teacher.model.embed_tokens(ids))
    cos, sin = teacher.model.rotary_emb(h, torch.arange(L).expand(3, L))
    d = attention_distance(attn, h, cos, sin, None)
    dist = (d[:-1] / d[-1]).tolist()
    assert dist == pytest.approx([(L - 1) / 4] * 4, rel=1e-5)
    student = convert_from_transformer(teacher, [1], **SHAPE)
    mixer = student.model.layers[0].mamba
    set_decay_from_distance(mixer, [5.0, 10.0, 20.0, 40.0], student.config.head_dim)
    A = mixer.A_log.exp()
    want = torch.tensor([math.log1p(1 / d) for d in (5.0, 5.0, 10.0, 10.0, 20.0, 20.0, 40.0, 40.0)])
    torch.testing.assert_close(A, want)
    dt = torch.nn.functional.softplus(mixer.dt_bias)
    torch.testing.assert_close(dt, torch.ones(8))
    a = torch.exp(-dt * A)  # per-step decay: an exponential window of mean distance a / (1 - a) = d
    torch.testing.assert_close(a / (1 - a), torch.tensor([5.0, 5.0, 10.0, 10.0, 20.0, 20.0, 40.0, 40.0]), rtol=1e-4, atol=0)


def _calibration_case():
    """A tiny teacher, calibration and held-out rows, and two attention-copy hybrids (one stays the copy)."""
    teacher = tiny_llama()
    g = torch.Generator().manual_seed(0)
    calib = torch.randint(0, 97, (8, 48), generator=g)
    held = torch.randint(0, 97, (4, 48), generator=g)
    copy = convert_from_transformer(teacher, [1], **SHAPE).eval()
    student = convert_from_transformer(teacher, [1], **SHAPE).eval()
    return teacher, calib, held, copy, student


def test_calibration_beats_the_plain_copy_and_touches_only_mixers():
    teacher, calib, held, copy, student = _calibration_case()
    # step-bound (a time limit the step cap always reaches first): under load a 5 s budget left too few steps
    report = calibrate(student, teacher, calib, None, CalibrationConfig(fit_seconds=1e9, fit_max_steps=60, fit_batch=4), progress=False)
    assert [r.layer for r in report.layers] == [0, 2, 3]
    assert all(r.rel_mse_fit < r.rel_mse_copy for r in report.layers)
    assert token_kl(teacher, student, held) < token_kl(teacher, copy, held)
    before, after = dict(copy.named_parameters()), dict(student.named_parameters())
    changed = {n for n in after if not torch.equal(before[n], after[n])}
    assert changed and all(".mamba." in n for n in changed)


def test_random_init_is_mamba2s_reference():
    student = convert_from_transformer(tiny_llama(), [1], init="random", seed=3, **SHAPE)
    for i in (0, 2, 3):
        m = student.model.layers[i].mamba
        torch.testing.assert_close(m.A_log, torch.log(torch.arange(1, 9, dtype=torch.float32)))
        torch.testing.assert_close(m.D, torch.ones(8))
        dt = torch.nn.functional.softplus(m.dt_bias)
        assert bool(((dt >= 1e-3 - 1e-7) & (dt <= 1e-1 + 1e-7)).all())
        torch.testing.assert_close(m.norm.weight, torch.ones_like(m.norm.weight))


def test_calibration_file_errors_name_the_line(tmp_path):
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers

    from m1.errors import UserError

    tk = Tokenizer(models.WordLevel({f"t{i}": i for i in range(97)}, unk_token="t0"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="t0")
    good = tmp_path / "c.jsonl"
    good.write_text('{"text": "t1 t2 t3 t4"}\n{"text": "t5 t6 t7 t8 t9"}\n')
    assert calibration_ids_from_file(good, tok, 2, 4).shape == (2, 4)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "t1 t2"}\n{"text": ""}\n')
    with pytest.raises(UserError, match=r"bad.jsonl:2: 'text' must be a non-empty string"):
        calibration_ids_from_file(bad, tok, 2, 4)
    with pytest.raises(UserError, match="does not exist"):
        calibration_ids_from_file(tmp_path / "missing.jsonl", tok, 2, 4)


@pytest.mark.parametrize("value, message", [
    ("", "--attention-layers: empty value"),
    ("1,x", "--attention-layers: '1,x': expected comma-separated layer indices"),
    ("auto:0", "--attention-layers: 'auto:0': auto:K needs a positive integer K"),
    ("1,1", "a layer is listed twice"),
    ("9", "layer 9 is out of range for a 4-layer teacher"),
])
def test_bad_attention_layers_is_one_line_before_loading(tmp_path, capsys, value, message):
    from m1 import cli

    tiny_llama().save_pretrained(tmp_path / "teacher")
    capsys.readouterr()
    assert cli.main(["convert", str(tmp_path / "teacher"), str(tmp_path / "out"), "--attention-layers", value]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("m1 convert: error: ") and message in err
    assert not (tmp_path / "out").exists()


def test_bad_calibration_file_is_one_line(tmp_path, capsys):
    from m1 import cli

    tiny_llama().save_pretrained(tmp_path / "teacher")
    capsys.readouterr()
    code = cli.main(["convert", str(tmp_path / "teacher"), str(tmp_path / "out"), "--attention-layers", "1",
                     "--calibration-data", str(tmp_path / "nope.jsonl")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--calibration-data: calibration file" in err and "does not exist" in err
    assert not (tmp_path / "out").exists()


def test_placement_ranks_every_layer(tmp_path):
    from m1.convert.placement import plot_ranking, rank_attention_layers

    teacher = tiny_llama()
    ids = torch.randint(0, 97, (8, 32), generator=torch.Generator().manual_seed(0))
    cfg = CalibrationConfig(fit_max_steps=5, fit_batch=2)
    import m1.convert.placement as P

    old = P.MIN_TOKENS_PER_CANDIDATE
    P.MIN_TOKENS_PER_CANDIDATE = 0  # the real floor (0.5M tokens) is for real models
    try:
        r = rank_attention_layers(teacher, ids, 2, cfg, **SHAPE)
    finally:
        P.MIN_TOKENS_PER_CANDIDATE = old
    assert sorted(x["layer"] for x in r["ranking"]) == [0, 1, 2, 3]
    assert r["chosen"] == sorted(x["layer"] for x in r["ranking"][:2])
    kls = [x["kl"] for x in r["ranking"]]
    assert kls == sorted(kls) and all(k > 0 for k in kls)
    plot_ranking(r, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0


def test_least_squares_rows_matches_lstsq_and_repeats_exactly():
    """`least_squares_rows` (normal equations, float64) agrees with torch's least squares on tall,
    square and wide systems, and gives bit-identical results on repeated calls (the reason it
    replaced `torch.linalg.lstsq`, whose CPU result varied between calls)."""
    import torch

    from m1.convert.calibrate import least_squares_rows

    g = torch.Generator().manual_seed(0)
    for rows, cols in ((96, 64), (64, 64), (48, 64)):
        w = torch.randn(rows, cols, generator=g, dtype=torch.float64)
        t = torch.randn(300, rows, generator=g, dtype=torch.float64)
        x = least_squares_rows(w, t)
        want = (torch.linalg.pinv(w) @ t.T).T
        assert torch.allclose(x, want, atol=1e-8, rtol=1e-6), (rows, cols)
        assert all(torch.equal(x, least_squares_rows(w.clone(), t.clone())) for _ in range(3))
    w32 = torch.randn(64, 64, generator=g)
    t32 = torch.randn(500, 64, generator=g)
    assert least_squares_rows(w32, t32).dtype == torch.float32


def test_calibration_defaults_depend_on_the_device():
    """`CalibrationConfig.for_device`: CUDA keeps the dataclass defaults (the GPU path's measured
    quality), a CPU gets `CPU_DEFAULTS`, and explicit values (not None) win over either."""
    from m1.convert.calibrate import CPU_DEFAULTS

    assert CalibrationConfig.for_device("cuda") == CalibrationConfig()
    cpu = CalibrationConfig.for_device(torch.device("cpu"))
    assert cpu == CalibrationConfig(**CPU_DEFAULTS) and cpu != CalibrationConfig()
    mixed = CalibrationConfig.for_device("cpu", num_sequences=3, fit_seconds=None, seed=7)
    assert mixed.num_sequences == 3 and mixed.seed == 7 and mixed.fit_seconds == cpu.fit_seconds


def test_fit_windows_cut_the_same_positions_from_inputs_and_targets():
    from m1.convert.calibrate import _windows

    g = torch.Generator().manual_seed(0)
    x = torch.arange(5 * 20, dtype=torch.float32).view(5, 20, 1).expand(5, 20, 3)
    y = -x[..., :2]
    xw, yw = _windows(x, y, 7, g)
    assert xw.shape == (5, 7, 3) and yw.shape == (5, 7, 2)
    torch.testing.assert_close(yw, -xw[..., :2], rtol=0, atol=0)
    for r in range(5):  # each window is 7 consecutive positions of its own row
        pos = xw[r, :, 0] - 20 * r
        assert torch.equal(pos, pos[0] + torch.arange(7.0)) and 0 <= pos[0] <= 13
    starts = {int(_windows(x, y, 7, g)[0][0, 0, 0]) for _ in range(20)}
    assert len(starts) > 1  # the windows move


def test_distances_on_fewer_rows_leave_inputs_and_outputs_unchanged():
    from m1.convert.capture import capture_attention_io

    teacher = tiny_llama()
    ids = torch.randint(0, 97, (8, 24), generator=torch.Generator().manual_seed(2))
    full = capture_attention_io(teacher, ids, None, [0, 2], batch=4)
    part = capture_attention_io(teacher, ids, None, [0, 2], batch=4, distance_rows=4)
    first = capture_attention_io(teacher, ids[:4], None, [0, 2], batch=4)
    for i in (0, 2):
        assert torch.equal(full[i][0], part[i][0]) and torch.equal(full[i][1], part[i][1])
        assert part[i][2] == pytest.approx(first[i][2], rel=1e-6)  # measured on the first batch only
        assert part[i][2] != pytest.approx(full[i][2], rel=1e-6)


def test_cpu_defaults_calibrate_with_windows_and_small_batches():
    """The CPU path (fit windows shorter than the rows, its learning rate, distances on fewer rows) still brings
    the hybrid closer to its teacher."""
    from dataclasses import replace

    teacher, calib, held, copy, student = _calibration_case()
    # step-bound (a time limit the step cap always reaches first), so the test does not depend on the machine's speed
    cfg = replace(CalibrationConfig.for_device("cpu"), num_sequences=8, seq_len=48, fit_seconds=1e9, fit_max_steps=60,
                  fit_seq_len=16, distance_rows=4)
    assert cfg.fit_batch == 2
    report = calibrate(student, teacher, calib, None, cfg, progress=False)
    assert all(r.fit_steps == 60 and r.rel_mse_fit <= r.rel_mse_closed_form for r in report.layers)  # the held-out guard
    # On average over layers, not per layer: each layer's number comes from one held-out row of 48 tokens of a random
    # tiny model, where decay + closed form can start a layer above the copy (layer 3 here) and 60 small steps
    # may not bring it back under; the model-level KL below, on 4 other rows, is the claim that matters.
    mean = lambda k: sum(getattr(r, k) for r in report.layers) / len(report.layers)  # noqa: E731
    assert mean("rel_mse_fit") < mean("rel_mse_copy")
    assert token_kl(teacher, student, held) < token_kl(teacher, copy, held)


def test_fit_keeps_its_best_state_on_held_out_rows():
    """A fit that overshoots (a learning rate far too high) ends where it scored best on rows it did not train
    on, never worse than where it started; a sane fit keeps a later state. Pinned against a plain rerun of the
    same fit without the held-out rows, which does end worse."""
    from m1.convert.calibrate import _eval_rel_mse, fit_mixer

    teacher, calib, held, copy, student = _calibration_case()
    from m1.convert.capture import capture_attention_io

    x, y, _ = capture_attention_io(teacher, calib, None, [0], batch=4, progress=False)[0]
    xf, yf, xh, yh = x[:6], y[:6], x[6:], y[6:]
    mixer = student.model.layers[0].mamba
    start = {k: v.clone() for k, v in mixer.state_dict().items()}
    before = _eval_rel_mse(mixer, xh, yh)

    steps, kept, _ = fit_mixer(mixer, xf, yf, 40, 2, 3.0, seed=0, seq_len=16)  # no held rows: the plain fit
    plain = _eval_rel_mse(mixer, xh, yh)
    assert (steps, kept) == (40, 40) and plain > before  # lr 3.0 wrecks the mixer
    mixer.load_state_dict(start)
    steps, kept, score = fit_mixer(mixer, xf, yf, 40, 2, 3.0, seed=0, seq_len=16, held=(xh, yh))
    guarded = _eval_rel_mse(mixer, xh, yh)
    assert steps == 40 and kept < 40 and guarded <= before and score == pytest.approx(guarded, rel=1e-5)
    if kept == 0:
        assert all(torch.equal(v, start[k]) for k, v in mixer.state_dict().items())

    mixer.load_state_dict(start)
    steps, kept, score = fit_mixer(mixer, xf, yf, 40, 2, 3e-2, seed=0, seq_len=16, held=(xh, yh), held_score=before)
    assert kept > 0 and _eval_rel_mse(mixer, xh, yh) == pytest.approx(score, rel=1e-5) and score < before


def test_a_fit_whose_steps_slow_down_keeps_to_its_seconds(monkeypatch):
    """Steps that take four times longer after the first 20 (a machine that slows mid-fit): the plan made from
    the first three steps is cut when it is timed again, so the fit ends within its seconds (plus one timing
    interval of slow steps) instead of running 3.4 s of a 1 s budget, and its learning rate still decays."""
    from m1.convert import calibrate as C

    teacher, calib, held, copy, student = _calibration_case()
    from m1.convert.capture import capture_attention_io

    x, y, _ = capture_attention_io(teacher, calib, None, [0], batch=4, progress=False)[0]
    mixer = student.model.layers[0].mamba
    clock = {"t": 0.0, "steps": 0}

    def tick(*_):
        clock["steps"] += 1
        clock["t"] += 0.01 if clock["steps"] <= 20 else 0.04

    monkeypatch.setattr(C.time, "monotonic", lambda: clock["t"])
    hook = mixer.register_forward_hook(tick)
    lrs = []
    real_step = torch.optim.Adam.step
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, *a, **k: (lrs.append(self.param_groups[0]["lr"]), real_step(self, *a, **k))[1])
    try:
        steps, _, _ = C.fit_mixer(mixer, x, y, 1000, 2, 1e-3, seed=0, seconds=1.0, seq_len=16)
    finally:
        hook.remove()
    assert clock["t"] <= 1.0 + C.REPLAN_EVERY * 0.04 + 1e-9, clock
    assert 30 <= steps < 100  # 100: the first plan, at 0.01 s a step
    assert lrs[-1] < 0.2 * max(lrs)  # the schedule decays to the new end


def test_sampled_calibration_text_stops_at_enough_tokens():
    """Sampling ends all samples once rows x length tokens exist (not when every sample is done) and repeats per seed."""
    from m1.convert import calibration_data as CD
    from m1.engine import Engine

    teacher = tiny_llama()

    class Tok:
        bos_token_id, eos_token_id, unk_token_id = 1, None, None

    made = []
    real_init = Engine.__init__

    def spy(self, *a, **k):
        real_init(self, *a, **k)
        made.append(self)

    Engine.__init__ = spy
    try:
        ids = CD.sample_calibration_ids(teacher, Tok(), 4, 32, seed=3, progress=False, batch=8)
        again = CD.sample_calibration_ids(teacher, Tok(), 4, 32, seed=3, progress=False, batch=8)
    finally:
        Engine.__init__ = real_init
    assert ids.shape == (4, 32) and torch.equal(ids, again)
    decoded = made[0].stats.decode_rows
    assert decoded < 8 * 32  # 8 samples at once; without the stop each would run to 32 tokens


@pytest.mark.parametrize("warm_up", [True, False])
def test_kernel_compilation_is_not_charged_to_the_fit_budget(monkeypatch, warm_up):
    """A first call that is slow (a CUDA kernel compiling) ate a 60 s budget and left every layer 3 Adam steps
    (2026-12-07). Warmed up, the slow call happens before the clock starts and every layer fits its full plan;
    not warmed up, the failure reproduces, so the test shows what the warm-up buys. The calibration reads a fake
    clock (1 ms a reading, 100 s for the slow call), so the step counts do not depend on this machine's speed.
    The warm-up leaves the mixer's weights and gradients as they were."""
    from types import SimpleNamespace

    from m1.convert import calibrate as cal
    from m1.layers.mamba2 import Mamba2Mixer

    teacher, calib, _, _, student = _calibration_case()
    clock = [0.0]

    def monotonic():
        clock[0] += 1e-3
        return clock[0]

    monkeypatch.setattr(cal, "time", SimpleNamespace(monotonic=monotonic))
    forward, calls = Mamba2Mixer.forward, []

    def slow_first_call(self, *a, **k):
        if not calls:
            clock[0] += 100.0
        calls.append(1)
        return forward(self, *a, **k)

    monkeypatch.setattr(Mamba2Mixer, "forward", slow_first_call)
    before = {n: p.detach().clone() for n, p in student.named_parameters()}
    if warm_up:  # on its own first (not the slow call): the mixer's weights and gradients are untouched
        calls.append(1)
        cal.warm_up_kernels(student.model.layers[0].mamba, torch.randn(4, 48, 64), torch.randn(4, 48, 64), CalibrationConfig())
        assert all(torch.equal(before[n], p) and p.grad is None for n, p in student.named_parameters())
        calls.clear()
    cfg = CalibrationConfig(fit_seconds=10.0, fit_max_steps=40, fit_batch=2, warm_up=warm_up)
    report = calibrate(student, teacher, calib, None, cfg, progress=False)
    steps = [r.fit_steps for r in report.layers]
    if warm_up:
        assert report.seconds["warm_up"] >= 100 and steps == [40] * len(steps)
    else:
        assert "warm_up" not in report.seconds and steps == [3] * len(steps)
