"""Shared fixtures for the training stages: a tiny task teacher, its hybrid, and data files.

The teacher is trained once per session on the m1.tasks arithmetic task (a few seconds on
CPU): realistic token statistics and a real chat template, small enough for every test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from m1.tasks import make_split, messages_record, prompt_record, write_jsonl


@pytest.fixture(scope="session")
def task_dir(tmp_path_factory) -> Path:
    """Tokenizer, teacher (Llama, GQA), converted hybrid, and train/held-out JSONL files."""
    from transformers import AutoTokenizer

    from m1.convert import convert_from_transformer
    from m1.tasks.teacher import TeacherConfig, build_teacher, train_teacher
    from m1.tasks.tokenizer import train_tokenizer

    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("task")
    train = make_split("easy", 600, seed=0, split="train")
    held = make_split("easy", 64, seed=0, split="test")
    write_jsonl(root / "train.jsonl", map(messages_record, train))
    write_jsonl(root / "heldout.jsonl", map(messages_record, held))
    write_jsonl(root / "prompts.jsonl", map(prompt_record, train[:64]))
    tok = train_tokenizer([p.prompt for p in train] + [p.solution for p in train])
    cfg = TeacherConfig(hidden_size=64, intermediate_size=128, num_layers=4, num_heads=4, num_kv_heads=2,
                        steps=40, batch_size=16, hard_fraction=0.0, lr=3e-3, warmup_steps=5, log_every=100)
    teacher = build_teacher(cfg, tok)
    train_teacher(teacher, tok, {"easy": train}, cfg)
    teacher.save_pretrained(root / "teacher")
    tok.save_pretrained(root / "teacher")
    hybrid = convert_from_transformer(teacher, attention_layers=[3], mamba_heads=4, mamba_head_dim=16, mamba_groups=4, state_size=16)
    hybrid.save_pretrained(root / "student")
    AutoTokenizer.from_pretrained(root / "teacher").save_pretrained(root / "student")
    return root


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(l + "\n" for l in lines))
    return path


def jsonl(path: Path, records: list[dict]) -> Path:
    return write_lines(path, [json.dumps(r) for r in records])


def distill_argv(task_dir, out, steps, *extra):
    """`m1 distill` on the task fixture: the argv the recipe tests and the DDP test share."""
    return ["distill", "--teacher", str(task_dir / "teacher"), "--student", str(task_dir / "student"),
            "--data", str(task_dir / "train.jsonl"), "--out", str(out), "--max-steps", str(steps),
            "--per-device-batch-size", "4", "--learning-rate", "1e-3", "--lr-scheduler", "constant",
            "--max-length", "128", "--num-threads", "2", "--report-to", *extra]
