"""The `m1` command line.

Each subcommand lives in the module that owns its stage and builds its own argparse
parser there, so `m1 <command> --help` documents exactly that stage's options. This file
only routes: modules are imported lazily so `m1 --help` stays fast and a stage's heavy
imports are paid only when that stage runs.
"""

from __future__ import annotations

import importlib
import os
import sys

from m1.errors import EXIT_PAUSED, RunPaused, UserError
from m1.logs import setup_logging

# command -> (module, function taking argv, one-line summary)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "convert": ("m1.convert.cli", "cli_main", "hybrid from a Llama/Qwen2 checkpoint (calibrated attention init by default)"),
    "distill": ("m1.train.distill", "cli_main", "stage 1: distil the hybrid from its teacher (KL on logits)"),
    "sft": ("m1.train.sft", "cli_main", "stage 2: supervised fine-tuning on reasoning traces"),
    "grpo": ("m1.train.grpo", "cli_main", "stage 3: GRPO on problems with verifiable answers"),
    "eval": ("m1.eval.cli", "eval_main", "pass@k, maj@k and verify@k on math benchmarks"),
    "regrade": ("m1.eval.cli", "regrade_main", "grade finished m1 eval runs again with this version's grader"),
    "scaling": ("m1.eval.cli", "scaling_main", "accuracy against samples and wall-clock budget"),
    "compare": ("m1.eval.compare", "cli_main", "what a model keeps of a reference's accuracy (two m1 eval runs)"),
    "bench": ("m1.bench.cli", "cli_main", "decode throughput against a same-size transformer"),
    "demo": ("m1.demo", "cli_main", "every stage end to end on a tiny synthetic task, on CPU"),
}


def _usage() -> str:
    lines = ["usage: m1 <command> [options]", "", "commands:"]
    for name, (_, _, summary) in COMMANDS.items():
        lines.append(f"  {name:<9} {summary}")
    lines.append("")
    lines.append("Run `m1 <command> --help` for the options of one command.")
    lines.append("`m1 --debug <command> ...` shows the traceback of a user error (one line otherwise).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Route to a subcommand. A `UserError` prints one line and exits 2 (`--debug`: traceback too);
    a run stopped at its ``--max-seconds`` limit prints one line and exits 75."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("M1_DEBUG", "") not in ("", "0")
    if argv and argv[0] == "--debug":
        debug, argv = True, argv[1:]
    if "--debug" in argv:  # also accepted after the command: no subcommand has an option of that name
        debug = True
        argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"m1: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    setup_logging()
    module_name, func_name, _ = COMMANDS[name]
    func = getattr(importlib.import_module(module_name), func_name)
    try:
        result = func(rest)
    except UserError as e:
        if debug:
            raise
        print(f"m1 {name}: error: {e}", file=sys.stderr)
        return 2
    except RunPaused as e:
        print(f"m1 {name}: paused: {e}", file=sys.stderr)
        return EXIT_PAUSED
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
