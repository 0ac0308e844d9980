"""Issue 20's reasoning workload from pieces run apart (`studies/device_reasoning.sh`): one table, one ratio, one plot.

A comparison too long for one device call runs as pieces (a model, a KV policy, some slot counts), each in its
own process and folder. This reads every `reasoning_*.json` under the folders given, checks that the pieces ran
the same workload (run_id, requests, prompt length, drawn lengths, memory), prints `m1 bench`'s table and ratios
with each (model, policy) at its best slot count, draws the slot-sweep plot and writes the records together:

    python studies/reasoning_combine.py /tmp/reasoning/ --out studies/results/reasoning_<date>/
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from m1.bench.reasoning import plot_slot_sweep, print_reasoning  # noqa: E402

SAME = ("run_id", "requests", "prompt_len", "memory_gb")


def load(folders: list[Path]) -> list[dict]:
    records = []
    for folder in folders:
        for f in sorted(folder.rglob("reasoning_*.json")):
            records += json.loads(f.read_text())
    if not records:
        raise SystemExit(f"no reasoning_*.json under {', '.join(map(str, folders))}")
    for key in SAME:
        seen = {r[key] for r in records}
        if len(seen) > 1:
            try:
                shown = sorted(seen)
            except TypeError:  # None beside numbers
                shown = sorted(seen, key=str)
            raise SystemExit(f"the pieces ran different workloads: {key} is {shown}")
    drawn = {json.dumps(r["gen_len"], sort_keys=True) for r in records}
    if len(drawn) > 1:
        raise SystemExit("the pieces drew different completion lengths (gen_len differs)")
    keys = [(r["model"], r["kv_policy"], r["batch"]) for r in records]
    if len(keys) != len(set(keys)):
        raise SystemExit(f"a (model, policy, slots) point ran twice: {sorted(k for k in keys if keys.count(k) > 1)}")
    return sorted(records, key=lambda r: (r["model"], r["kv_policy"], r["batch"]))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("folders", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    records = load(a.folders)
    print_reasoning(records)
    run_id = records[0]["run_id"]
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"reasoning_{run_id}.json").write_text(json.dumps(records, indent=1) + "\n")
    print(f"slot sweep plot: {plot_slot_sweep(records, a.out / f'reasoning_slots_{run_id}.png')}")


if __name__ == "__main__":
    main()
