"""Chat-stage data from the teacher's own answers: an `m1 eval` run on training prompts -> m1-messages JSONL.

Why: distilling on GSM8K's gold solutions (`--data-format gsm8k`) taught the hybrid never to stop
(2026-12-07, studies/results/gen_study_2026-12-07/): forward KL copies the teacher's next-token
distribution, and after a gold solution's "#### 72" SmolLM2-135M-Instruct puts 0.3% on its end of
turn (it would go on: `studies/teacher_eot_probe.py`). On its own answers the teacher's distribution
ends where the teacher ends. This is sequence-level distillation: the teacher's sampled responses,
each with its end of turn, are the text the student is trained on, still against the teacher's logits.

Each row keeps the user turn exactly as `m1 eval` prompted it (its template and system turn) and the
teacher's text as the assistant turn. Only responses that ended by themselves (finish_reason "stop")
are kept; `--correct-only` keeps only those the grader marked right (rejection sampling).

    python studies/teacher_responses.py RUN_DIR BENCHMARK.jsonl OUT.jsonl [--correct-only]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from m1.eval.benchmarks import read_jsonl  # noqa: E402
from m1.eval.samples import read_samples  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="m1 eval output directory (samples.jsonl, summary.json)")
    p.add_argument("benchmark", type=Path, help="the JSONL the run evaluated (its problem texts)")
    p.add_argument("out", type=Path)
    p.add_argument("--correct-only", action="store_true")
    a = p.parse_args(argv)
    config = json.loads((a.run / "summary.json").read_text())["config"]
    prompt = config["prompt"]
    problems = {q.id: q for q in read_jsonl(a.benchmark)}
    kept = stopped = 0
    rows = read_samples(a.run / "samples.jsonl")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    with open(a.out, "w") as f:
        for r in rows:
            if r["finish_reason"] != "stop":
                continue
            stopped += 1
            if a.correct_only and not r["correct"]:
                continue
            q = problems[str(r["problem_id"])]
            turns = ([{"role": "system", "content": prompt["system"]}] if prompt.get("system") else [])
            turns += [{"role": "user", "content": prompt["template"].replace("{problem}", q.problem)},
                      {"role": "assistant", "content": r["text"]}]
            f.write(json.dumps({"messages": turns, "answer": q.answer}) + "\n")
            kept += 1
    print(f"{a.out}: {kept} conversations from {len(rows)} responses ({stopped} ended by themselves"
          f"{', correct ones only' if a.correct_only else ''})")
    return 0 if kept else 1


if __name__ == "__main__":
    raise SystemExit(main())
