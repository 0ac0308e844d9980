"""Distillation on a raw text corpus (`--data-format text`, .jsonl.gz), warm-up as a share of
the steps, and `--max-seconds`: a run paused at its limit resumes to the uninterrupted losses."""

from __future__ import annotations

import gzip
import json

import pytest
import torch

from m1.cli import main as m1_main
from m1.data import MAPPINGS, DataError, conversation, resolve_mapping
from m1.errors import EXIT_PAUSED
from m1.train.config import DistillConfig
from m1.train.data import load_texts, pack_texts
from m1.train.runs import complete_checkpoints, read_metrics, warmup_steps
from tests.train.conftest import distill_argv


def write_gz(path, records):
    with gzip.open(path, "wt") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return path


@pytest.fixture()
def corpus(task_dir, tmp_path):
    """The task's problems and solutions as plain text documents, gzip-compressed."""
    texts = []
    for line in (task_dir / "train.jsonl").read_text().splitlines()[:120]:
        msgs = json.loads(line)["messages"]
        texts.append(msgs[0]["content"] + "\n" + msgs[-1]["content"])
    return write_gz(tmp_path / "corpus.jsonl.gz", [{"text": t} for t in texts]), texts


def test_text_mapping_is_guessed_and_refused_by_sft():
    assert resolve_mapping("auto", {"text": "x"}) is MAPPINGS["text"]
    assert resolve_mapping("auto", {"text": "x", "question": "q", "answer": "a"}).name == "gsm8k"  # conversations win
    with pytest.raises(DataError, match="raw text.*SFT and GRPO need conversations"):
        conversation("f:1", {"text": "x"}, MAPPINGS["text"])


def test_gz_corpus_reads_and_bad_lines_name_file_and_line(tmp_path):
    p = write_gz(tmp_path / "c.jsonl.gz", [{"text": "a b"}, {"text": "c"}])
    assert load_texts(str(p)) == ["a b", "c"]
    assert load_texts(str(tmp_path)) == ["a b", "c"]  # a directory of .jsonl.gz files
    with gzip.open(tmp_path / "bad.jsonl.gz", "wt") as f:
        f.write('{"text": "ok"}\n{"text": \n')
    with pytest.raises(DataError, match=r"bad\.jsonl\.gz:2:\d+: malformed JSON"):
        load_texts(str(tmp_path / "bad.jsonl.gz"))
    (tmp_path / "fake.jsonl.gz").write_text('{"text": "not compressed"}\n')
    with pytest.raises(DataError, match=r"fake\.jsonl\.gz: cannot read \(gzip"):
        load_texts(str(tmp_path / "fake.jsonl.gz"))
    assert load_texts(str(write_gz(tmp_path / "q.jsonl.gz", [{"question": "q", "answer": "a"}]))) is None


def test_pack_texts_joins_with_eos_and_drops_the_tail(task_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(task_dir / "teacher")
    texts = ["3 + 4 = 7", "12 - 5 = 7", "2 * 3 = 6"]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    stream = [i for doc in ids for i in doc + [tok.eos_token_id]]
    length = 5
    ds = pack_texts(tok, texts, length)
    assert len(ds) == len(stream) // length
    got = [i for row in ds["input_ids"] for i in row]
    assert got == stream[: len(ds) * length]
    assert ds["labels"] == ds["input_ids"]
    with pytest.raises(DataError, match="fewer than one row"):
        pack_texts(tok, ["1"], 10_000)


def test_warmup_share_is_of_the_stage_steps():
    assert warmup_steps(DistillConfig(max_steps=1221, warmup_steps=0.05)) == 61
    assert warmup_steps(DistillConfig(max_steps=10, warmup_steps=3)) == 3
    assert warmup_steps(DistillConfig(max_steps=10, warmup_steps=0.01)) == 1  # a share never rounds to none
    assert warmup_steps(DistillConfig(max_steps=10, warmup_steps=0)) == 0


def test_distill_on_a_text_corpus_staged(corpus, task_dir, tmp_path):
    path, texts = corpus
    out = tmp_path / "run"
    argv = distill_argv(task_dir, out, 4, "--save-steps", "100", "--stages", "align,kl", "--align-fraction", "0.5",
                        "--loss", "forward_kl", "--warmup-steps", "0.5", "--adam-beta2", "0.95")
    argv[argv.index("--data") + 1] = str(path)
    argv[argv.index("--max-length") + 1] = "32"
    assert m1_main(argv) == 0
    align = [r for r in read_metrics(out / "align") if "align_rel_mse" in r]
    kl = [r for r in read_metrics(out) if "forward_kl_per_token" in r]
    assert len(align) == 2 and len(kl) == 2
    assert all(0 < r["forward_kl_per_token"] < 20 for r in kl)
    assert (out / "final" / "model.safetensors").exists()


def test_max_seconds_pauses_with_a_checkpoint_and_resume_matches(task_dir, tmp_path):
    steps = 4
    assert m1_main(distill_argv(task_dir, tmp_path / "full", steps, "--save-steps", "100")) == 0
    reference = [r["loss"] for r in read_metrics(tmp_path / "full") if "loss" in r]

    # a limit shorter than one step: the first step ends past it, so the run pauses at step 1
    paused = distill_argv(task_dir, tmp_path / "paused", steps, "--save-steps", "100", "--max-seconds", "0.001")
    assert m1_main(paused) == EXIT_PAUSED
    assert [p.name for p in complete_checkpoints(tmp_path / "paused")] == ["checkpoint-1"]
    assert not (tmp_path / "paused" / "final").exists()
    assert m1_main(distill_argv(task_dir, tmp_path / "paused", steps, "--save-steps", "100", "--resume")) == 0
    resumed = [r["loss"] for r in read_metrics(tmp_path / "paused") if "loss" in r]
    assert len(resumed) == steps
    assert torch.allclose(torch.tensor(resumed), torch.tensor(reference), atol=1e-4), (resumed, reference)
