"""Re-grade an `m1 eval` run's samples with another answer extraction, without regenerating.

`m1 eval` refuses to mix extraction modes in one run directory, so a second reading of the same
texts goes to a new directory: samples.jsonl with `answer`, `correct` and `extraction` recomputed
from each row's text and gold, summary.json (the run's config with the new mode) and report.md.
Used in issue 19 for SmolLM2-135M-Instruct, which often states its answer without boxing it.

    python studies/regrade.py RUN_DIR OUT_DIR --extraction lenient
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tqdm import tqdm  # noqa: E402

from m1.eval.grader import answers_equivalent, final_answer, warm_up  # noqa: E402
from m1.eval.report import write_report  # noqa: E402
from m1.eval.samples import read_samples, summarize_samples  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--extraction", choices=["strict", "lenient"], default="lenient")
    a = p.parse_args()
    rows = read_samples(a.run / "samples.jsonl")
    if not rows:
        raise SystemExit(f"{a.run / 'samples.jsonl'}: no samples")
    summary = json.loads((a.run / "summary.json").read_text()) if (a.run / "summary.json").exists() else {}
    config = summary.get("config", {})
    n = config.get("n") or max(r["sample"] for r in rows) + 1
    warm_up()
    lenient = a.extraction == "lenient"
    a.out.mkdir(parents=True, exist_ok=True)
    changed = 0
    with open(a.out / "samples.jsonl", "w") as f:
        for r in tqdm(rows, desc=f"regrade ({a.extraction})"):
            ans = final_answer(r["text"], r["gold"], lenient=lenient)
            new = dict(r, answer=ans, correct=answers_equivalent(r["gold"], ans), extraction=a.extraction)
            changed += new["correct"] != r["correct"]
            f.write(json.dumps(new) + "\n")
    rows = read_samples(a.out / "samples.jsonl")
    benches = list(dict.fromkeys(r["benchmark"] for r in rows))
    summaries = {b: summarize_samples([r for r in rows if r["benchmark"] == b], n) for b in benches}
    config = dict(config, extraction=a.extraction, out=str(a.out))
    (a.out / "summary.json").write_text(json.dumps({"config": config, "extraction": a.extraction, "regraded_from": str(a.run),
                                                    "verdicts_changed": changed, "benchmarks": summaries}, indent=2))
    write_report(summaries, a.out, f"{config.get('model', a.run)} regraded ({a.extraction})")
    print(f"{len(rows)} samples, {changed} verdicts changed; " +
          ", ".join(f"{b}: pass@1 {s['pass@1']['mean']:.4f}" for b, s in summaries.items()))


if __name__ == "__main__":
    main()
