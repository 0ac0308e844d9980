"""`m1 bench`: decode throughput of the hybrid shapes against a same-size transformer.

Two workloads (`--workload`): `fixed` (`m1.bench.fixed`: decode step times at each batch and
context, integrated into throughput, with end-to-end checks and transformers' baseline) and
`reasoning` (`m1.bench.reasoning`: real generate runs of lognormal completion lengths under
each KV policy). This module parses the options and hands over.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from m1.bench.common import PROMPT
from m1.bench.fixed import CONTEXTS, GENS, MODELS, fixed_main, plot
from m1.bench.reasoning import reasoning_main


def cli_main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="m1 bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=None,
                    help=f"named shapes (HybridConfig.from_name); default {' '.join(MODELS)} (fixed), llama-3.2-3b m1-3b (reasoning)")
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 16, 64, 128, 256, 512, 1024])
    ap.add_argument("--llama-batches", nargs="+", type=int, default=[1, 16, 32, 48, 64, 96, 128, 192],
                    help="batches for the all-attention shape, dense near its KV memory limits")
    ap.add_argument("--e2e-models", nargs="*", default=["llama-3.2-3b", "m1-3b"], help="shapes given the long validation run")
    ap.add_argument("--contexts", nargs="+", type=int, default=CONTEXTS)
    ap.add_argument("--gens", nargs="+", type=int, default=GENS)
    ap.add_argument("--memory-gb", type=float, default=128.0, help="total device memory each model may use (weights + cache + workspace)")
    ap.add_argument("--workspace-gb", type=float, default=12.0, help="held back for activations, logits and graphs")
    ap.add_argument("--s128-max-batch", type=int, default=512, help="slot cap for m1-3b-s128, whose state is 35 MB a slot")
    ap.add_argument("--e2e-gen", type=int, default=4096, help="generation length of the validation run (0 skips)")
    ap.add_argument("--e2e-batch", type=int, default=256, help="batch of the hybrids' validation run")
    ap.add_argument("--compare-batch", type=int, default=64, help="batch of the 256 + 256 run compared with transformers.generate (0 skips)")
    ap.add_argument("--baseline", nargs="*", default=["llama-3.2-3b", "m1-3b"], help="shapes run through transformers.generate")
    ap.add_argument("--nano-batches", type=int, default=1,
                    help="decode graphs of >= 256 rows split into this many nano-batches on CUDA streams (Engine's nano_batches)")
    ap.add_argument("--out", type=Path, default=Path("studies/results"))
    ap.add_argument("--plot-only", action="store_true", help="only redraw engine_throughput.png from the JSON in --out")
    r = ap.add_argument_group("reasoning workload (--workload reasoning)")
    r.add_argument("--workload", choices=["fixed", "reasoning"], default="fixed",
                   help="fixed: step times, integration and fixed-length runs; reasoning: lognormal completion lengths")
    r.add_argument("--kv-policies", nargs="+", choices=["on_demand", "reserve"], default=["on_demand", "reserve"],
                   help="engine KV policies to run, each in a fresh engine under the same budget")
    r.add_argument("--reasoning-batch", type=int, nargs="+", default=[1024],
                   help="the hybrids' decode slots; several values sweep them (each a fresh engine, the same requests); "
                        "requests default to 4x the largest")
    r.add_argument("--reasoning-llama-batch", type=int, nargs="+", default=None,
                   help="the all-attention model's slots, one or a sweep (default: the hybrids')")
    r.add_argument("--requests", type=int, default=None, help="requests, all arriving at t = 0 (default 4 x the largest --reasoning-batch)")
    r.add_argument("--prompt-len", type=int, default=PROMPT)
    r.add_argument("--gen-mean", type=float, default=4096.0, help="mean of the lognormal completion length (before the cap)")
    r.add_argument("--gen-sigma", type=float, default=1.0, help="sigma of the lognormal's log")
    r.add_argument("--gen-cap", type=int, default=16384, help="longest drawn completion")
    r.add_argument("--max-tokens", type=int, default=16384, help="max_tokens every request carries (the scheduler sees only this)")
    r.add_argument("--length-seed", type=int, default=0, help="seed of the drawn lengths and the prompts")
    r.add_argument("--run-id", default=None, help="shared by the records of one run across device calls (default: new)")
    r.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    r.add_argument("--tiny", action="store_true", help="tiny shapes of the named models (CPU smoke runs)")
    r.add_argument("--peak-tflops", type=float, default=797.0, help="GEMM peak of the roofline (H200 bf16 dense, measured)")
    r.add_argument("--bandwidth-tbs", type=float, default=None, help="memory bandwidth of the roofline (default: measured copy bandwidth)")
    r.add_argument("--block-size", type=int, default=None, help="KV block size (default: the engine's)")
    r.add_argument("--prefill-chunk", type=int, default=2048)
    args = ap.parse_args(argv)
    if args.plot_only:
        print(plot(args.out, args.out / "engine_throughput.png"))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.workload == "reasoning":
        args.models = args.models or ["llama-3.2-3b", "m1-3b"]
        return reasoning_main(args, ap)
    args.models = args.models or MODELS
    return fixed_main(args, ap)
