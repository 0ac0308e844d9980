"""The engine's memory budget: what can never be allocated is refused with one clear line, before any pool is filled."""

import os
import sys

import pytest
import torch

import m1.engine.cache as C
from m1.engine import Engine
from m1.errors import UserError
from tests.engine.conftest import make_model


def test_a_budget_above_the_machines_memory_is_a_user_error(monkeypatch):
    monkeypatch.setattr(C, "device_memory_bytes", lambda device: 2**30)
    allocated = []
    monkeypatch.setattr(C.EngineCache, "__init__", lambda self, *a, **k: allocated.append(1))
    with pytest.raises(UserError, match=r"^memory_budget_gb: 2\.00 GiB is more than this machine's available memory \(1\.00 GiB\)"):
        Engine(make_model("hybrid"), max_batch_size=2, max_model_len=64, memory_budget_gb=2)
    assert allocated == []


def test_a_budget_within_the_machines_memory_is_taken(monkeypatch):
    monkeypatch.setattr(C, "device_memory_bytes", lambda device: 2**30)
    eng = Engine(make_model("hybrid"), max_batch_size=2, max_model_len=64, memory_budget_gb=0.01)
    assert eng.layout.kv_bytes + eng.layout.state_bytes <= 0.01 * 2**30


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/meminfo")
def test_the_cpus_available_memory_is_read():
    got = C.device_memory_bytes(torch.device("cpu"))
    assert got is not None and 2**20 < got <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def test_slot_states_over_the_budget_are_a_user_error():
    with pytest.raises(UserError, match="^memory_budget_gb: the Mamba states of 4096 slots need"):
        Engine(make_model("mamba"), max_batch_size=4096, max_model_len=64, memory_budget_gb=1e-4)
