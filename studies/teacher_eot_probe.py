"""How much the teacher puts on its end-of-turn token right after a gold GSM8K solution ("... #### 72").

Why: a chat stage of forward-KL distillation on GSM8K's gold solutions left the SmolLM2 hybrid unable to
stop (every sample ran to the token limit; studies/results/gen_study_2026-12-07/). The loss there is the
teacher's distribution, not the gold token: if the teacher itself would not end its turn after a gold
solution, the student learns not to. Measured 2026-12-07 on a 2-core CPU: mean 0.003 over the first 40
training rows (the teacher puts 0.99 on a newline).

    python studies/teacher_eot_probe.py TEACHER(.gguf|dir) ../shared/data/train/gsm8k_train.jsonl --rows 40
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from m1.checkpoint import load_causal_lm, load_tokenizer  # noqa: E402
from m1.data import MAPPINGS, conversation  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("teacher")
    p.add_argument("data", type=Path)
    p.add_argument("--rows", type=int, default=40)
    a = p.parse_args()
    tok, model = load_tokenizer(a.teacher), load_causal_lm(a.teacher).eval()
    eot = tok.eos_token_id
    probs = []
    with open(a.data) as f:
        rows = [json.loads(line) for _, line in zip(range(a.rows), f)]
    for i, r in enumerate(rows):
        prompt, completion = conversation(f"{a.data}:{i + 1}", r, MAPPINGS["gsm8k"])
        ids = list(tok.apply_chat_template(prompt + completion, tokenize=True, return_dict=False))
        end = max(j for j, t in enumerate(ids) if t == eot)  # the assistant turn's end
        with torch.no_grad():
            logits = model(torch.tensor([ids[:end]])).logits[0, -1].float()
        probs.append(torch.softmax(logits, -1)[eot].item())
    probs.sort()
    print(json.dumps({"teacher": str(a.teacher), "rows": len(probs), "eot_token": tok.convert_ids_to_tokens(eot),
                      "mean_p_eot": sum(probs) / len(probs), "median_p_eot": probs[len(probs) // 2]}))


if __name__ == "__main__":
    main()
