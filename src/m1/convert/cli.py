"""`m1 convert`: teacher checkpoint -> hybrid checkpoint.

`--attention-layers` is a list, `auto:K` (measured placement, `m1.convert.placement`) or
`none`; `--init` is one of `INIT_MODES` (calibrated by default: `m1.convert.calibrate`).
Everything that can be checked is checked before any weights load.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from m1.config import ConfigError
from m1.convert.calibrate import CalibrationConfig, convert_with_report
from m1.convert.calibration_data import calibration_text
from m1.convert.mapping import INIT_MODES, load_transformer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerSpec:
    """`--attention-layers`: an explicit list (possibly empty: all Mamba), or `auto:K` (measured placement)."""

    layers: tuple[int, ...] | None = None
    auto_k: int | None = None


def parse_attention_layers(text: str, num_layers: int | None = None) -> LayerSpec:
    """Parse `i,j,...`, `auto:K` or `none`; anything else is a `ConfigError` naming the option.

    An empty value is an error on the command line (an all-Mamba model is asked for with
    `none`), although the Python API accepts `attention_layers=[]`.
    """
    field_name = "--attention-layers"
    t = text.strip()
    if not t:
        raise ConfigError(field_name, "empty value; give indices like 3,8,13, 'auto:K', or 'none' for an all-Mamba model")
    if t == "none":
        return LayerSpec(layers=())
    if t.startswith("auto:"):
        k = t[5:]
        if not k.isdigit() or int(k) < 1:
            raise ConfigError(field_name, f"{text!r}: auto:K needs a positive integer K")
        if num_layers is not None and int(k) > num_layers:
            raise ConfigError(field_name, f"{text!r}: K={k} exceeds the teacher's {num_layers} layers")
        return LayerSpec(auto_k=int(k))
    try:
        layers = tuple(int(x) for x in t.split(","))
    except ValueError:
        raise ConfigError(field_name, f"{text!r}: expected comma-separated layer indices, 'auto:K' or 'none'") from None
    if len(set(layers)) != len(layers):
        raise ConfigError(field_name, f"{text!r}: a layer is listed twice")
    if num_layers is not None:
        bad = [i for i in layers if not 0 <= i < num_layers]
        if bad:
            raise ConfigError(field_name, f"{text!r}: layer {bad[0]} is out of range for a {num_layers}-layer teacher (0..{num_layers - 1})")
    return LayerSpec(layers=tuple(sorted(layers)))


def _teacher_num_layers(source: str) -> int | None:
    """The teacher's layer count from its config alone (a local directory), to validate before loading weights."""
    cfg = Path(source) / "config.json"
    if cfg.is_file():
        return json.loads(cfg.read_text()).get("num_hidden_layers")
    return None


def cli_main(argv: list[str] | None = None) -> int:
    cpu, gpu = CalibrationConfig.for_device("cpu"), CalibrationConfig()
    p = argparse.ArgumentParser(
        prog="m1 convert", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Convert a Llama/Qwen2 checkpoint into a hybrid: the listed layers keep attention, the rest become "
        "Mamba-2 mixers initialised from them (calibrated on text by default).",
    )
    p.add_argument("teacher", help="teacher checkpoint: local directory, hub id, or a .gguf file (needs the gguf package)")
    p.add_argument("out", type=Path, help="output directory (HF checkpoint: config.json, safetensors, tokenizer)")
    p.add_argument("--attention-layers", required=True,
                   help="layers that keep attention: comma-separated indices (3,8,13,18,23,27), 'auto:K' (measure and keep the best K), or 'none' (all Mamba)")
    p.add_argument("--mamba-heads", type=int, default=None, help="Mamba heads (default: the teacher's query heads)")
    p.add_argument("--mamba-head-dim", type=int, default=None, help="Mamba head dim (default: query width / heads)")
    p.add_argument("--mamba-groups", type=int, default=None, help="B/C groups (default: one per head)")
    p.add_argument("--state-size", type=int, default=None, help="SSM state size per channel (default: the head dim)")
    p.add_argument("--init", choices=INIT_MODES, default=INIT_MODES[0],
                   help="Mamba initialisation: calibrated (attention copy + decay, scales and a per-layer fit measured on text), "
                   "attention (the plain Q/K/V/O copy, M1's), random (Mamba-2's own)")
    p.add_argument("--calibration-data", type=Path, default=None,
                   help="calibration text: JSONL/JSON with a 'text' field, or any training format m1 reads (default: sample it from the teacher)")
    p.add_argument("--calibration-sequences", type=int, default=None,
                   help=f"calibration rows (default: {cpu.num_sequences} on a CPU; {gpu.num_sequences} on CUDA)")
    p.add_argument("--calibration-length", type=int, default=None,
                   help=f"tokens per calibration row (default: {cpu.seq_len} on a CPU; {gpu.seq_len} on CUDA)")
    p.add_argument("--calibration-seconds", type=float, default=None,
                   help=f"wall-clock budget of the per-layer fitting (default: {cpu.fit_seconds:g} on a CPU; {gpu.fit_seconds:g} on CUDA). "
                   f"On a CPU the fit also runs on {cpu.fit_seq_len}-token windows at lr {cpu.fit_lr:g} (CUDA: whole rows at {gpu.fit_lr:g}) "
                   f"and attention distances are measured on the first {cpu.distance_rows} rows: together they keep a SmolLM2-135M "
                   "conversion under 5 minutes on 2 cores (docs/distill_study.md). The defaults in use are logged")
    p.add_argument("--device", default=None, help="where the teacher runs for sampling and calibration (default: cuda if available, else cpu)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32", help="dtype of the written weights")
    p.add_argument("--seed", type=int, default=0, help="random seed (random init, calibration sampling and fitting)")
    args = p.parse_args(argv)

    from m1.checkpoint import atomic_write_text, load_tokenizer
    from m1.errors import require_path

    # validate everything that can be checked before any weights load
    spec = parse_attention_layers(args.attention_layers, _teacher_num_layers(args.teacher))
    if args.calibration_data is not None:
        require_path(args.calibration_data, "calibration file", "--calibration-data")
        if args.init != "calibrated":
            raise ConfigError("--calibration-data", f"only used with --init calibrated (got --init {args.init})")
    if args.out.exists() and any(args.out.iterdir()):
        raise ConfigError("out", f"{args.out} exists and is not empty; choose a new directory")
    for name in ("calibration_sequences", "calibration_length"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ConfigError("--" + name.replace("_", "-"), "must be >= 1")

    t0 = time.monotonic()
    phases: dict[str, float] = {}
    teacher = load_transformer(args.teacher).to(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tok = load_tokenizer(args.teacher)
    phases["load"] = time.monotonic() - t0
    spec = parse_attention_layers(args.attention_layers, teacher.config.num_hidden_layers)
    shape = dict(mamba_heads=args.mamba_heads, mamba_head_dim=args.mamba_head_dim, mamba_groups=args.mamba_groups, state_size=args.state_size)
    device = next(teacher.parameters()).device
    ccfg = CalibrationConfig.for_device(device, num_sequences=args.calibration_sequences, seq_len=args.calibration_length,
                                        fit_seconds=args.calibration_seconds, seed=args.seed)
    calib_ids = None
    if args.init == "calibrated" or spec.auto_k:
        log.info("calibration on %s: %d x %d tokens, %gs of fitting (batch %d, windows of %s tokens), distances on %s rows",
                 device.type, ccfg.num_sequences, ccfg.seq_len, ccfg.fit_seconds, ccfg.fit_batch, ccfg.fit_seq_len or ccfg.seq_len,
                 ccfg.distance_rows or "all")
        t = time.monotonic()
        calib_ids = calibration_text(teacher, tok, args.calibration_data, ccfg).to(device)
        phases["calibration_text"] = time.monotonic() - t
    layers = list(spec.layers) if spec.layers is not None else None
    ranking = None
    if spec.auto_k:
        from m1.convert.placement import plot_ranking, rank_attention_layers

        ranking = rank_attention_layers(teacher, calib_ids, spec.auto_k, ccfg, **shape)
        layers = ranking["chosen"]
        log.info("measured placement: attention kept at %s", layers)
    model, report = convert_with_report(teacher, layers, init=args.init, calibration_ids=calib_ids, calibration=ccfg, seed=args.seed, **shape)
    model = model.to("cpu", getattr(torch, args.dtype))  # written from wherever it was calibrated
    t = time.monotonic()
    model.save_pretrained(args.out)
    tok.save_pretrained(args.out)
    if ranking is not None:  # after the checkpoint: its atomic write replaces the whole directory
        atomic_write_text(args.out / "placement.json", json.dumps(ranking, indent=2))
        plot_ranking(ranking, args.out / "placement.png")
        print(f"measured placement: attention kept at {layers} (ranking in {args.out / 'placement.json'}, plot in placement.png)")
    phases["write"] = time.monotonic() - t
    if report is not None:
        report.seconds.update(phases)
        report.seconds["command"] = time.monotonic() - t0
        atomic_write_text(args.out / "calibration.json", json.dumps(report.to_dict(), indent=2))
        print(f"calibrated {len(report.layers)} Mamba layers on {report.tokens} tokens in {report.seconds.get('total', 0):.0f}s "
              f"(relative MSE to attention {_mean(r.rel_mse_copy for r in report.layers):.3f} -> {_mean(r.rel_mse_fit for r in report.layers):.3f}); "
              f"report in {args.out / 'calibration.json'}")
    print(f"wrote {args.out} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, attention at {model.config.attention_layers}, "
          f"{args.init} init) in {time.monotonic() - t0:.0f}s")
    return 0


def _mean(values) -> float:
    v = list(values)
    return sum(v) / len(v) if v else float("nan")
