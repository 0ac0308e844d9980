"""How often replies loop: word 4-gram repetition (rep-4 = 1 - distinct 4-grams / 4-grams, the seq-rep-4 of Welleck
et al. 2019, "Neural Text Generation with Unlikelihood Training") over the second half of each reply, for `m1 eval` samples or the
on-policy stage's logged replies (`m1 distill --on-policy --log-completions`).

    python studies/reply_loops.py RUN/staged_onpolicy/add_greedy/samples.jsonl RUN/onpolicy_completions/

One line a source: replies, mean words, mean rep-4, and the share of replies whose rep-4 is above 0.5 (half of the
second half's 4-grams seen before in it: a loop). For scale: GSM8K's 7,473 gold training solutions have mean rep-4
0.004, none above 0.5, the highest 0.25. For a folder of parquet files (one a logging step), one line a file, so the
trend over training shows.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def rep4(text: str) -> float:
    """1 - distinct / all word 4-grams of the reply's second half (0 for fewer than 8 words there)."""
    words = text.split()
    half = words[len(words) // 2:]
    grams = [tuple(half[i:i + 4]) for i in range(len(half) - 3)]
    if len(grams) < 8:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def texts_of(path: Path) -> list[str]:
    if path.suffix == ".parquet":
        import pandas as pd

        return [str(t) for t in pd.read_parquet(path)["completion"]]
    with open(path) as f:
        return [json.loads(line)["text"] or "" for line in f if line.strip()]


def line(name: str, texts: list[str]) -> str:
    if not texts:
        return f"{name}: no replies"
    reps = [rep4(t) for t in texts]
    words = sum(len(t.split()) for t in texts) / len(texts)
    loops = sum(r > 0.5 for r in reps) / len(reps)
    return f"{name}: {len(texts)} replies, {words:.0f} words, rep-4 {sum(reps) / len(reps):.3f}, looping {100 * loops:.1f}%"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sources", nargs="+", type=Path, help="samples.jsonl files, parquet files, or folders of parquet files")
    args = ap.parse_args(argv)
    for src in args.sources:
        files = sorted(src.glob("*.parquet")) if src.is_dir() else [src]
        if not files:
            print(f"{src}: no parquet files", file=sys.stderr)
            return 1
        for f in files:
            print(line(str(f), texts_of(f)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
