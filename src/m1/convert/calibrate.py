"""Calibrated initialisation: set each Mamba mixer from its teacher attention layer's measured behaviour.

Copying Q/K/V/O into C/B/x/out_proj (`m1.convert.mapping`) fixes what the mixer reads, but leaves
its dynamics (how fast each head forgets, dt, A) and its output scale arbitrary. Linear
attention without the softmax is also a poor stand-in for softmax attention, so the copy
alone starts barely better than random on a real model. Calibration measures the teacher
on calibration text and sets the mixer from what it sees, in three steps (the ideas of
Taylor-Calibrate and of MOHAWK's/RADLADS' layer-wise alignment, written for m1's mixer):

1. **Decay from attention distance.** Each query head's mean attention distance d (tokens
   back, weighted by the teacher's attention probabilities) sets its Mamba heads' decay
   so that an exponential window has the same mean distance: a = d / (1 + d) per step,
   i.e. A = log(1 + 1/d) at dt = 1.
2. **Output scale, in closed form.** m1's gate sits before the norm (norm(y * silu(z))),
   so a constant gate is normalised away; the levers are the norm weight and out_proj.
   The norm weight is set per channel to the RMS of the teacher's pre-o_proj attention
   output, and out_proj to the ridge least-squares map from the mixer's normalised
   features to the teacher's attention output (one linear solve per layer).
3. **Per-layer fitting.** Each mixer alone, teacher-forced (its input is the teacher's
   hidden state at that layer), learns by Adam to reproduce its attention layer's output
   (MSE relative to the target's power). Layers are independent, so the teacher runs
   once and its activations are cached; the step count follows a wall-clock budget.

Only the Mamba mixers change; everything else keeps the teacher's weights.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field

import torch

from m1.config import ConfigError
from m1.convert.capture import capture_attention_io
from m1.convert.mapping import convert_from_transformer, load_transformer
from m1.layers.mamba2 import inv_softplus
from m1.modeling import decoder_of

log = logging.getLogger(__name__)


@dataclass
class CalibrationConfig:
    """How calibration runs. Defaults fit SmolLM2-135M in about 4 minutes on 2 CPU cores."""

    num_sequences: int = 32  # calibration sequences (teacher activations are cached for all of them)
    seq_len: int = 512  # tokens per calibration sequence
    decay: bool = True  # step 1: per-head decay from the teacher's attention distance
    distance_rows: int | None = None  # rows the attention distance is measured on (None: all)
    closed_form: bool = True  # step 2: norm weight and out_proj from a least-squares fit
    fit_seconds: float = 180.0  # step 3: wall-clock budget of the per-layer fitting, all layers together
    fit_max_steps: int = 400  # per layer, whatever the budget
    fit_batch: int = 4  # sequences per fitting step
    fit_seq_len: int | None = None  # tokens per fitted sequence: a random window of each row (None: whole rows)
    fit_lr: float = 1e-3
    ridge: float = 1e-3  # ridge strength, relative to the mean feature power
    inputs: str = "teacher"  # what each mixer reads while fitted: "teacher" (teacher-forced) or "student" (its own stream; measured worse on SmolLM2)
    seed: int = 0
    warm_up: bool | None = None  # run the fit's kernels once before its clock starts (None: on CUDA, where Triton compiles them on first use)

    @classmethod
    def for_device(cls, device, **overrides) -> "CalibrationConfig":
        """The defaults for calibrating on `device` (a torch.device or its name), then `overrides` (None values ignored).

        CUDA (and anything not a CPU) gets the dataclass defaults above. A CPU gets `CPU_DEFAULTS`:
        on 2 cores the dataclass defaults spend minutes sampling and capturing text that the
        fitting then has no time to use (about 20 Adam steps a layer), so the CPU samples fewer
        rows, measures the attention distances on fewer of them, and fits on 128-token windows
        (4x the steps) at a higher learning rate (measured on SmolLM2-135M: docs/distill_study.md,
        "Zero-shot").
        """
        base = CPU_DEFAULTS if torch.device(device).type == "cpu" else {}
        return cls(**{**base, **{k: v for k, v in overrides.items() if v is not None}})


# `CalibrationConfig.for_device("cpu")`: what `m1 convert` uses on a CPU. Measured on SmolLM2-135M, 2 cores,
# state-16 shape, 16 MATH500 rows held out, 120 s of fitting on 16 sampled rows (docs/distill_study.md):
# closed form only KL 4.06; Adam on whole rows, batch 4, lr 1e-3: 4.04 (22 steps/layer); windows of
# 128 tokens, batch 4: 3.78 (lr 1e-3, 87 steps), 3.27 (lr 1e-2), 3.07 (lr 3e-2). With ~100 steps a
# layer, the learning rate is the lever; the GPU's 350+ steps keep the dataclass defaults. Batch 2 for 200 s
# (more, smaller steps) met issue 19's zero-shot targets on a 2-core AMD EPYC (docs/distill_study.md, "Two
# windows a step"); on tiny models it ended worse than the copy on held-out rows until `fit_mixer` kept its
# best held-out state, which it now does.
CPU_DEFAULTS: dict = dict(num_sequences=16, distance_rows=4, fit_seconds=200.0, fit_batch=2, fit_seq_len=128, fit_lr=3e-2)


@dataclass
class LayerReport:
    layer: int
    mean_attention_distance: list[float]  # per query head of the teacher
    rel_mse_copy: float  # relative MSE of the plain Q/K/V/O copy against the attention output
    rel_mse_closed_form: float
    rel_mse_fit: float
    fit_steps: int
    fit_kept_step: int = -1  # the fit step whose state was kept (best on the held-out rows; 0: the closed form's); -1: not recorded


@dataclass
class CalibrationReport:
    config: dict
    tokens: int
    seconds: dict = field(default_factory=dict)
    layers: list[LayerReport] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- the three steps


@torch.no_grad()
def set_decay_from_distance(mixer, distances: list[float], head_dim: int) -> None:
    """Step 1: Mamba head h forgets like its attention head's mean distance (dt = 1, A = log(1 + 1/d))."""
    mixer.in_proj.weight[-mixer.num_heads :].zero_()  # dt from the bias alone
    if mixer.in_proj.bias is not None:
        mixer.in_proj.bias[-mixer.num_heads :].zero_()
    mixer.dt_bias.fill_(inv_softplus(1.0))
    A = torch.empty(mixer.num_heads)
    for h in range(mixer.num_heads):
        d = max(distances[(h * mixer.head_dim) // head_dim], 0.5)
        A[h] = math.log1p(1.0 / d)
    mixer.A_log.copy_(torch.log(A))


def mixer_features(mixer, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """What the mixer feeds its out_proj (the gated, normalised, weighted SSD output)."""
    got = []
    h = mixer.out_proj.register_forward_hook(lambda mod, args, out: got.append(args[0]))
    try:
        mixer(x, token_mask=mask)
    finally:
        h.remove()
    return got[0]


def _rel_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((pred.float() - target.float()) ** 2).mean() / (target.float() ** 2).mean().clamp(min=1e-12)


@torch.no_grad()
def fit_output_closed_form(mixer, x: torch.Tensor, y: torch.Tensor, attn_inner_rms: torch.Tensor | None, ridge: float, batch: int = 4) -> None:
    """Step 2: norm weight per channel = the RMS of attention's pre-o_proj output; out_proj by ridge regression."""
    if attn_inner_rms is not None:
        mixer.norm.weight.copy_(attn_inner_rms.to(mixer.norm.weight.dtype))
    d_in = mixer.out_proj.in_features
    has_bias = mixer.out_proj.bias is not None
    n_feat = d_in + (1 if has_bias else 0)
    ftf = torch.zeros(n_feat, n_feat, dtype=torch.float64)
    fty = torch.zeros(n_feat, y.shape[-1], dtype=torch.float64)
    for s in range(0, x.shape[0], batch):
        f = mixer_features(mixer, x[s : s + batch].to(_device(mixer))).reshape(-1, d_in).double().cpu()
        if has_bias:
            f = torch.cat([f, torch.ones(f.shape[0], 1, dtype=f.dtype)], 1)
        t = y[s : s + batch].reshape(-1, y.shape[-1]).double().cpu()
        ftf += f.T @ f
        fty += f.T @ t
    lam = ridge * torch.diagonal(ftf).mean()
    w = torch.linalg.solve(ftf + lam * torch.eye(n_feat, dtype=ftf.dtype), fty)  # (n_feat, d_out)
    mixer.out_proj.weight.copy_(w[:d_in].T.to(mixer.out_proj.weight.dtype))
    if has_bias:
        mixer.out_proj.bias.copy_(w[d_in].to(mixer.out_proj.bias.dtype))


REPLAN_EVERY = 10  # steps between two timings of a fit's plan against its seconds


def fit_mixer(mixer, x: torch.Tensor, y: torch.Tensor, steps: int, batch: int, lr: float, seed: int, seconds: float | None = None,
              seq_len: int | None = None, held: tuple[torch.Tensor, torch.Tensor] | None = None, checks: int = 3,
              held_score: float | None = None, held_seconds: float | None = None) -> tuple[int, int, float | None]:
    """Step 3: Adam on the relative MSE between the mixer's output and the attention output.

    The step count is `steps`, or fewer when `seconds` is given: the first steps are timed
    and the plan shrinks to what fits. The learning rate warms up over the first tenth of
    the plan and decays linearly to zero at its end (full-size Adam steps straight away
    were measured to undo the closed-form fit).

    The plan is timed again every `REPLAN_EVERY` steps and shrinks if steps have slowed down, so a
    layer keeps to its seconds: the per-layer budgets share one total, and a layer that overran
    would take its time from the layers after it. (On a 2-core VM under 25% hypervisor steal, the
    last three of 24 layers got 3 to 8 steps where the first ones got 180, 2026-12-07.)

    With `held` (rows the fit does not train on), the mixer is scored on them before the fit
    and at `checks` evenly spaced points of the plan, and ends in the best-scoring state: a fit
    that overshoots (a high learning rate on few rows, as on a CPU) can never leave the mixer
    worse on unseen rows than it found it. A caller that has already scored the starting state
    passes `held_score` (and `held_seconds`, what that scoring took) so it is not paid twice:
    on a 2-core CPU each check costs about 8 Adam steps of the head-sized shape. Returns (steps
    run, the step whose state was kept with 0 the starting state, the kept state's held score).
    """
    params = [p for p in mixer.parameters()]
    was = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    # fused Adam: one kernel over all parameters (on 2 CPU cores a step is ~10% faster than the per-tensor loop)
    opt = torch.optim.Adam(params, lr=lr, fused=_device(mixer).type in ("cpu", "cuda"))
    g = torch.Generator().manual_seed(seed)
    plan = steps
    start = time.monotonic()
    done = 0
    best_step, best_score, best_state = 0, None, None
    check_s = 0.0  # the time budget pays for the checks too
    if held is not None:
        if held_score is None:
            held_score = _eval_rel_mse(mixer, *held)
            held_seconds = time.monotonic() - start
        best_score, best_state = held_score, _snapshot(mixer)
        check_s = held_seconds or 0.0
        start = time.monotonic()
    checks = max(1, checks)

    def marks_for(plan: int) -> set[int]:  # at j/checks of the plan, the last at its end
        return {max(1, round(plan * j / checks)) for j in range(1, checks + 1)}

    marks = marks_for(plan)
    t_mark, done_mark = start, 0  # where the steps' pace is timed from (after the last check)
    while done < plan:
        warm = max(1, plan // 10)
        for group in opt.param_groups:
            group["lr"] = lr * min((done + 1) / warm, max(0.0, (plan - done) / max(plan - warm, 1)))
        idx = torch.randint(0, x.shape[0], (batch,), generator=g)
        xb, yb = x[idx], y[idx]
        if seq_len is not None and seq_len < x.shape[1]:
            xb, yb = _windows(xb, yb, seq_len, g)
        loss = _rel_mse(mixer(xb.to(_device(mixer))), yb.to(_device(mixer)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        done += 1
        if seconds is not None and done == 3:
            per_step = (time.monotonic() - start) / done
            plan = max(done, min(steps, int((seconds - check_s * checks) / per_step)))
            marks = marks_for(plan)
            t_mark, done_mark = time.monotonic(), done
        elif seconds is not None and done > 3 and done % REPLAN_EVERY == 0 and done < plan:
            now = time.monotonic()
            recent = (now - t_mark) / (done - done_mark)  # the pace of the last steps, not the first three's
            t_mark, done_mark = now, done
            checks_left = sum(1 for m in marks if m > done) if held is not None else 0
            fits = done + int(max(0.0, seconds - (now - start) - check_s * checks_left) / recent)
            if fits < plan:
                plan = max(done, fits)
                marks = {m for m in marks if m <= done} | {m for m in marks_for(plan) if m > done} | {plan}
        if held is not None and done in marks:
            score = _eval_rel_mse(mixer, *held)
            if score < best_score:
                best_step, best_score, best_state = done, score, _snapshot(mixer)
            if done > 3:  # the check's own time is budgeted apart: the pace is timed from here
                t_mark, done_mark = time.monotonic(), done
    if best_state is not None and best_step != done:
        _restore(mixer, best_state)
    for p, w in zip(params, was):
        p.requires_grad_(w)
    return done, (best_step if held is not None else done), best_score


def _snapshot(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@torch.no_grad()
def _restore(module, state: dict[str, torch.Tensor]) -> None:
    for name, t in module.state_dict(keep_vars=True).items():
        t.copy_(state[name])


def _windows(x: torch.Tensor, y: torch.Tensor, length: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One random window of `length` positions from each row of x and y (the same window in both)."""
    start = torch.randint(0, x.shape[1] - length + 1, (x.shape[0],), generator=g)
    pos = start[:, None] + torch.arange(length)
    rows = torch.arange(x.shape[0])[:, None]
    return x[rows, pos], y[rows, pos]


def _device(module) -> torch.device:
    return next(module.parameters()).device


def warm_up_kernels(mixer, x: torch.Tensor, y: torch.Tensor, cfg: CalibrationConfig) -> float:
    """One forward and backward of `mixer` at the fit's shape and one scoring forward, untimed by the
    fit; the mixer's parameters are left exactly as they were. Returns the seconds it took.

    Why: on CUDA the first call of each kernel compiles it (Triton, fla-core's autotuning). That once
    took 57 s inside the fit's 60 s budget (an H100 shared with an eval, 2026-12-07): the first layer's
    three timed steps looked 20 s long, so every layer was planned at 3 Adam steps and the converted
    hybrid's held-out KL was 2.45 instead of about 1.6. Compiling first keeps the budget for fitting.
    Nothing random is drawn, so a warmed run fits exactly as an unwarmed one would on the same steps.
    """
    t = time.monotonic()
    dev = _device(mixer)
    params = list(mixer.parameters())
    was = [(p.requires_grad, p.grad) for p in params]
    for p in params:
        p.requires_grad_(True)
        p.grad = None
    xb, yb = x[: cfg.fit_batch], y[: cfg.fit_batch]
    if cfg.fit_seq_len is not None and cfg.fit_seq_len < x.shape[1]:
        xb, yb = xb[:, : cfg.fit_seq_len], yb[:, : cfg.fit_seq_len]
    _rel_mse(mixer(xb.to(dev)), yb.to(dev)).backward()
    for p, (req, grad) in zip(params, was):
        p.grad = grad
        p.requires_grad_(req)
    _eval_rel_mse(mixer, x[:4], y[:4])
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return time.monotonic() - t


@torch.no_grad()
def _eval_rel_mse(mixer, x, y, batch: int = 4) -> float:
    num, den = 0.0, 0.0
    dev = _device(mixer)
    for s in range(0, x.shape[0], batch):
        p, t = mixer(x[s : s + batch].to(dev)).float(), y[s : s + batch].to(dev).float()
        num += ((p - t) ** 2).sum().item()
        den += (t**2).sum().item()
    return num / max(den, 1e-12)


def _attn_inner_rms(attn, y_out: torch.Tensor) -> torch.Tensor | None:
    """RMS per channel of attention's pre-o_proj output, recovered from its output by o_proj's pseudo-inverse."""
    w = attn.o_proj.weight.float().cpu()
    t = y_out.reshape(-1, y_out.shape[-1]).float().cpu()
    if attn.o_proj.bias is not None:
        t = t - attn.o_proj.bias.float().cpu()
    inner = least_squares_rows(w, t)  # (n, inner)
    return inner.pow(2).mean(0).sqrt().clamp(min=1e-4)


def least_squares_rows(w: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The rows x with x @ w.T closest to the rows of t (least squares; minimum norm where w has
    more columns than rows), through the normal equations in float64 and `torch.linalg.solve`.

    Why not `torch.linalg.lstsq`: on the CPU its result changed from call to call on the same
    inputs (the demo's calibrated init differed between two runs of one seed, and with it every
    later number); LU solves of the small Gram matrix repeat exactly.
    """
    w64, t64 = w.double(), t.double()
    if w64.shape[0] >= w64.shape[1]:  # tall or square: (w^T w) x^T = w^T t^T
        x = torch.linalg.solve(w64.T @ w64, w64.T @ t64.T).T
    else:  # wide: minimum norm, x^T = w^T (w w^T)^-1 t^T
        x = (w64.T @ torch.linalg.solve(w64 @ w64.T, t64.T)).T
    return x.to(t.dtype)


class _StudentStream:
    """The student's own residual stream over the calibration text, advanced layer by layer.

    With `inputs="student"` each mixer is fitted on the input it will really see: the
    hidden state after the layers below it were already calibrated, so it learns to work
    on (and partly correct) the drift of the layers below, as sequential calibration does
    in post-training quantisation. The target stays the teacher's attention output.
    """

    def __init__(self, student, input_ids: torch.Tensor, batch: int = 4):
        self.model = student.model
        self.ids = input_ids
        self.batch = batch
        with torch.no_grad():
            self.hidden = self.model.embed_tokens(input_ids).float()
            pos = torch.arange(input_ids.shape[1]).expand(input_ids.shape[0], -1)
            self.rope = self.model.rotary_emb(pos, self.hidden.dtype)
        self.at = 0  # layers already applied to `hidden`

    @torch.no_grad()
    def _advance_to(self, layer: int) -> None:
        for j in range(self.at, layer):
            lay = self.model.layers[j]
            outs = []
            for s in range(0, self.hidden.shape[0], self.batch):
                rope = tuple(r[s : s + self.batch] for r in self.rope)
                outs.append(lay(self.hidden[s : s + self.batch], rope=rope, attn_mask=None, token_mask=None, cache=None, cu_seqlens=None))
            self.hidden = torch.cat(outs)
        self.at = max(self.at, layer)

    @torch.no_grad()
    def mixer_input(self, layer: int) -> torch.Tensor:
        self._advance_to(layer)
        return self.model.layers[layer].input_layernorm(self.hidden)


# ---------------------------------------------------------------- entry point


def calibrate(student, teacher, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
              config: CalibrationConfig | None = None, progress: bool = True) -> CalibrationReport:
    """Calibrate every Mamba mixer of `student` (a freshly attention-initialised hybrid) in place.

    `input_ids` (n, l) is the calibration text; the teacher is the model `student` was
    converted from. Returns what was measured per layer.
    """
    from tqdm.auto import tqdm

    cfg = config or CalibrationConfig()
    t0 = time.monotonic()
    layers = list(student.config.mamba_layers)
    report = CalibrationReport(config=asdict(cfg), tokens=int(attention_mask.sum()) if attention_mask is not None else input_ids.numel())
    if not layers:
        return report
    teacher = teacher.eval()
    tdecoder = decoder_of(teacher)
    io = capture_attention_io(teacher, input_ids, attention_mask, layers, batch=max(cfg.fit_batch, 4), distance_rows=cfg.distance_rows,
                              progress=progress)
    report.seconds["capture"] = time.monotonic() - t0
    log.info("calibration: teacher activations at %d layers over %d tokens cached in %.1fs", len(layers), report.tokens, report.seconds["capture"])

    if cfg.inputs not in ("teacher", "student"):
        raise ValueError(f"CalibrationConfig.inputs must be 'teacher' or 'student', got {cfg.inputs!r}")
    if cfg.warm_up if cfg.warm_up is not None else _device(student).type == "cuda":
        x0, y0, _ = io[layers[0]]
        report.seconds["warm_up"] = warm_up_kernels(student.model.layers[layers[0]].mamba, x0, y0, cfg)
        log.info("calibration: kernels warmed up in %.1fs (outside the %gs fitting budget)", report.seconds["warm_up"], cfg.fit_seconds)
    t1 = time.monotonic()
    head_dim = student.config.head_dim
    stream = _StudentStream(student, input_ids) if cfg.inputs == "student" else None
    n = input_ids.shape[0]
    n_hold = max(1, n // 8) if n > 1 else 0  # held-out sequences for the per-layer numbers
    fit_budget = cfg.fit_seconds
    bar = tqdm(layers, desc="calibrating Mamba layers", disable=not progress)
    for k, i in enumerate(bar):
        mixer = student.model.layers[i].mamba
        x, y, dist = io[i]
        if stream is not None:
            x = stream.mixer_input(i)
        xf, yf = (x[: n - n_hold], y[: n - n_hold]) if n_hold else (x, y)
        xh, yh = (x[n - n_hold :], y[n - n_hold :]) if n_hold else (x, y)
        rel_copy = _eval_rel_mse(mixer, xh, yh)
        if cfg.decay:
            set_decay_from_distance(mixer, dist, head_dim)
        if cfg.closed_form:
            fit_output_closed_form(mixer, xf, yf, _attn_inner_rms(tdecoder.layers[i].self_attn, yf), cfg.ridge)
        t_eval = time.monotonic()
        rel_cf = _eval_rel_mse(mixer, xh, yh)
        t_eval = time.monotonic() - t_eval
        steps = kept = 0
        rel_fit = rel_cf
        if cfg.fit_seconds > 0 and cfg.fit_max_steps > 0:
            left = len(layers) - k
            per_layer = max(0.0, t1 + fit_budget - time.monotonic()) / left
            steps, kept, score = fit_mixer(mixer, xf, yf, cfg.fit_max_steps, cfg.fit_batch, cfg.fit_lr, cfg.seed + i,
                                           None if math.isinf(per_layer) else per_layer, cfg.fit_seq_len,
                                           held=(xh, yh) if n_hold else None, held_score=rel_cf if n_hold else None,
                                           held_seconds=t_eval)
            # with held rows the kept state's score is the held-out number; without, score the (training) rows
            rel_fit = score if n_hold else _eval_rel_mse(mixer, xh, yh)
        report.layers.append(LayerReport(i, [round(v, 2) for v in dist], rel_copy, rel_cf, rel_fit, steps, kept))
        bar.set_postfix(layer=i, rel_mse=f"{rel_copy:.2f}->{rel_fit:.3f}", steps=steps, refresh=False)
        log.debug("layer %d: rel MSE copy %.3f, closed form %.3f, fitted %.3f (%d steps)", i, rel_copy, rel_cf, rel_fit, steps)
    report.seconds["fit"] = time.monotonic() - t1
    report.seconds["total"] = time.monotonic() - t0
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    log.info(
        "calibrated %d Mamba layers in %.1fs: mean relative MSE to attention %.3f (copy) -> %.3f (closed form) -> %.3f (fitted, %d steps/layer)",
        len(layers), report.seconds["total"], mean([r.rel_mse_copy for r in report.layers]), mean([r.rel_mse_closed_form for r in report.layers]),
        mean([r.rel_mse_fit for r in report.layers]), round(mean([r.fit_steps for r in report.layers])),
    )
    return report


def convert_with_report(teacher, attention_layers, init: str = "calibrated", calibration_ids=None, calibration=None, seed: int = 0, **shape):
    """`convert_from_transformer`, plus the calibrated init: (model, CalibrationReport or None).

    `init="calibrated"` converts with the attention copy and then runs `calibrate` on
    `calibration_ids` (n, l) token rows; the other inits are `convert_from_transformer`'s.
    """
    if init != "calibrated":
        return convert_from_transformer(teacher, attention_layers, init=init, seed=seed, **shape), None
    if calibration_ids is None:
        raise ConfigError("calibration_ids", "calibrated init needs calibration token rows")
    teacher = load_transformer(teacher)
    device = next(teacher.parameters()).device  # calibrate where the teacher is (a GPU if the caller put it there)
    model = convert_from_transformer(teacher, attention_layers, init="attention", seed=seed, **shape).to(device)
    report = calibrate(model, teacher, calibration_ids.to(device), None, calibration)
    return model, report
