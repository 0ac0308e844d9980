"""Build the distillation study's training text (`train_text.jsonl.gz`) from ../shared/data.

One JSON object a line, ``{"text": ...}``, in one fixed shuffled order (``random.Random(seed)``),
gzip-compressed; `m1 distill --data-format text` packs it into rows, EOS between documents.
Never MATH500 (the held-out set) and never a MATH500 completion:

- GSM8K train: ``question + "\\n\\n" + answer`` (7,473);
- AIME 1983-2023: ``problem + "\\n\\n" + solution`` (975);
- MATH train: ``problem + "\\n\\nAnswer: " + answer`` (7,472; the 2 rows with no answer are skipped);
- labelled model completions on the other benchmarks in grader/labeled_answers.jsonl
  (GSM8K test, OlympiadBench, Minerva, AMC23, AIME24): ``question + "\\n\\n" + completion`` (7,380).

23,300 texts; with SmolLM2's tokenizer 6.00M tokens, 11,722 rows of 512 (the count the
study of docs/distill_study.md reports; its builder was not committed, this one rebuilds it).

    python studies/build_train_text.py --data ../shared/data --out .devcarry/data/train_text.jsonl.gz
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import random
from pathlib import Path


def build(data: Path) -> list[str]:
    gsm = [json.loads(l) for l in open(data / "train" / "gsm8k_train.jsonl")]
    aime = json.load(open(data / "train" / "aime_1983_2023.json"))
    math = json.load(open(data / "train" / "math_train.json"))
    graded = [json.loads(l) for l in open(data / "grader" / "labeled_answers.jsonl")]
    texts = [r["question"] + "\n\n" + r["answer"] for r in gsm]
    texts += [r["problem"] + "\n\n" + r["solution"] for r in aime if r.get("solution")]
    texts += [r["problem"] + "\n\nAnswer: " + str(r["answer"]) for r in math if r.get("answer") is not None]
    texts += [r["question"] + "\n\n" + r["completion"] for r in graded if r["benchmark"] != "math500"]
    return texts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path(os.environ.get("M1_SHARED_DATA", "../shared/data")))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    texts = build(a.data)
    random.Random(a.seed).shuffle(texts)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(json.dumps({"text": t}) + "\n" for t in texts).encode()
    with open(a.out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:  # mtime 0: same bytes every run
        f.write(body)
    print(f"{a.out}: {len(texts)} texts, {len(body) / 1e6:.1f} MB of JSONL, sha256 of JSONL {hashlib.sha256(body).hexdigest()[:16]}")


if __name__ == "__main__":
    main()
