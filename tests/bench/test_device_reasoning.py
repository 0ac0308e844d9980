"""`studies/device_reasoning.sh` and `studies/reasoning_combine.py` on a CPU with tiny shapes: pieces of one
comparison launched apart, queued on one lock, run in the background, brought back and combined (no timing
assertions: the script's job is bookkeeping)."""

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = ("--device cpu --tiny --prompt-len 16 --gen-mean 16 --gen-cap 32 --max-tokens 32 --workspace-gb 0 --block-size 16 "
        "--peak-tflops 0.1 --bandwidth-tbs 0.01")
SAME = ["--requests", "24", "--memory-gb", "0.002"]

pytestmark = pytest.mark.skipif(not (shutil.which("flock") and shutil.which("setsid")), reason="needs util-linux's flock and setsid")


def _script(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "OUT": str(out), "M1_REASONING_WORK": str(tmp_path / "work"), "M1_REASONING_EXTRA": TINY,
           "RUN_ID": "pieces", "M1_COMMIT": "abc1234", "POLL_SECONDS": "0", "PYTHON": sys.executable}

    def run(*args):
        return subprocess.run(["bash", "studies/device_reasoning.sh", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=600)
    return run, out


def test_pieces_run_in_the_background_and_combine_into_one_comparison(tmp_path):
    run, out = _script(tmp_path)
    assert run("launch", "m1_od", "m1-3b", "on_demand", "2", "6", "--", *SAME).returncode == 0
    assert run("launch", "ll_od", "llama-3.2-3b", "on_demand", "3", "--", *SAME).returncode == 0
    polled = run("poll", "300")
    assert "pieces left: 0" in polled.stdout, polled.stdout + polled.stderr
    assert polled.stdout.count("done (rc 0)") == 2, polled.stdout
    with tarfile.open(out / "reasoning.tgz") as tar:
        tar.extractall(tmp_path / "back", filter="data")
        assert not [n for n in tar.getnames() if "/code/" in n]  # the code copies stay on the machine
    combined = subprocess.run([sys.executable, "studies/reasoning_combine.py", str(tmp_path / "back"), "--out", str(tmp_path / "res")],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert combined.returncode == 0, combined.stderr
    assert "ratio m1-3b/llama-3.2-3b (on_demand, each at the best of the slot counts run (2 / 1)" in combined.stdout
    recs = json.loads((tmp_path / "res" / "reasoning_pieces.json").read_text())
    assert sorted((r["model"], r["batch"]) for r in recs) == [("llama-3.2-3b", 3), ("m1-3b", 2), ("m1-3b", 6)]
    assert {r["commit"] for r in recs} == {"abc1234"} and {r["requests"] for r in recs} == {24}
    assert (tmp_path / "res" / "reasoning_slots_pieces.png").stat().st_size > 0


def test_a_piece_waits_for_every_piece_launched_before_it(tmp_path):
    """An earlier piece that has not taken the GPU lock yet still goes first: the later one waits for its `done`."""
    run, _ = _script(tmp_path)
    earlier = tmp_path / "work" / "earlier"
    earlier.mkdir(parents=True)
    (earlier / "seq").write_text("0\n")
    (earlier / "launched").touch()
    (tmp_path / "work" / "next_seq").write_text("1\n")
    assert run("launch", "later", "m1-3b", "on_demand", "2", "--", *SAME).returncode == 0
    waiting = run("poll", "4")
    assert "== later: queued" in waiting.stdout, waiting.stdout
    (earlier / "rc").write_text("0\n")
    (earlier / "done").touch()
    polled = run("poll", "300")
    assert "pieces left: 0" in polled.stdout and "== later: done (rc 0)" in polled.stdout, polled.stdout + polled.stderr


def test_bad_launches_say_why_in_one_line(tmp_path):
    run, _ = _script(tmp_path)
    no_requests = run("launch", "a", "m1-3b", "on_demand", "2")
    assert no_requests.returncode == 2 and "--requests" in no_requests.stdout
    assert not (tmp_path / "work" / "a").exists()  # nothing left behind that would block a corrected launch
    bad_name = run("launch", "a/b", "m1-3b", "on_demand", "2", "--", *SAME)
    assert bad_name.returncode == 2 and "NAME" in bad_name.stdout


def test_combine_refuses_pieces_of_different_workloads(tmp_path):
    rec = {"run_id": "r", "requests": 8, "prompt_len": 16, "memory_gb": 1.0, "gen_len": {"drawn_mean": 10.0}, "model": "m1-3b",
           "kv_policy": "on_demand", "batch": 2}
    for i, requests in enumerate((8, 16)):
        d = tmp_path / f"p{i}" / "records"
        d.mkdir(parents=True)
        (d / "reasoning_m1-3b.json").write_text(json.dumps([{**rec, "requests": requests, "batch": 2 + i}]))
    got = subprocess.run([sys.executable, "studies/reasoning_combine.py", str(tmp_path), "--out", str(tmp_path / "res")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert got.returncode != 0 and "requests is [8, 16]" in got.stderr
