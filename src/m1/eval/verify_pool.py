"""A hard time limit for math-verify: persistent worker processes, killed on timeout.

Why processes: math-verify's own limit is SIGALRM, which only works on the main thread,
and a thread cannot be stopped at all while sympy sits in a long C computation holding the
GIL (`9^{9^{9^9}}` does exactly that). A separate process can always be killed, from any
thread of any process (including daemonic multiprocessing workers, which may not use
`multiprocessing` children but may use `subprocess`).

Workers are plain `subprocess.Popen` children speaking JSON lines. They are started lazily,
reused across calls (a request costs a pipe round trip, ~0.1 ms), one per concurrently
grading thread. On timeout the worker is killed and a replacement is started at once in
the background, so the next call finds a warm one. A forked child never touches its
parent's workers; it starts its own.
"""

from __future__ import annotations

import atexit
import itertools
import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

logger = logging.getLogger(__name__)

_WORKER_SCRIPT = str(Path(__file__).with_name("_mv_worker.py"))


class _Worker:
    """One math-verify child process and its half-read reply buffer."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, _WORKER_SCRIPT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            bufsize=0,
            close_fds=True,
        )
        self.buf = b""
        self.ids = itertools.count()

    def request(self, payload: dict, deadline: float) -> dict | None:
        """Send one request and wait for its reply until `deadline`; None on timeout or death."""
        rid = next(self.ids)
        data = (json.dumps({"id": rid, **payload}) + "\n").encode()
        try:
            self.proc.stdin.write(data)
        except (BrokenPipeError, OSError):
            return None
        fd = self.proc.stdout.fileno()
        while True:
            nl = self.buf.find(b"\n")
            if nl >= 0:
                line, self.buf = self.buf[:nl], self.buf[nl + 1 :]
                reply = json.loads(line)
                if reply.get("id") == rid:
                    return reply
                continue  # a stale reply (cannot happen with one request in flight, but be safe)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:  # the worker died
                return None
            self.buf += chunk

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass

    def close_fds_only(self) -> None:
        """In a forked child: drop the parent's pipe ends without signalling its worker."""
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                os.close(f.fileno())
            except (OSError, ValueError):
                pass


class VerifyPool:
    """Idle math-verify workers of this process; `compare` borrows one per call."""

    def __init__(self, max_idle: int | None = None) -> None:
        self.max_idle = max_idle or max(2, os.cpu_count() or 2)
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self.timeouts = 0
        self.requests = 0

    def _take(self) -> _Worker:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return _Worker()

    def _give(self, w: _Worker) -> None:
        with self._lock:
            if len(self._idle) < self.max_idle:
                self._idle.append(w)
                return
        w.kill()

    def spawn_spare(self) -> None:
        """Start a worker in the background (Popen returns at once; it imports on its own)."""
        self._give(_Worker())

    def compare(self, gold: str, pred: str, timeout: float) -> bool | None:
        """math-verify's verdict, or None if it did not finish within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        w = self._take()
        reply = w.request({"gold": gold, "pred": pred}, deadline)
        with self._lock:
            self.requests += 1
        if reply is None:
            w.kill()
            with self._lock:
                self.timeouts += 1
            logger.warning("math-verify gave no verdict within %.1fs (gold=%.80r pred=%.80r); graded False", timeout, gold, pred)
            self.spawn_spare()
            return None
        self._give(w)
        return bool(reply["ok"])

    def warm_up(self, n: int = 1, timeout: float = 30.0) -> None:
        """Start `n` workers and wait until they answer, so no later call pays the start-up."""
        workers = [self._take() for _ in range(n)]
        deadline = time.monotonic() + timeout
        for w in workers:
            if w.request({"ping": True}, deadline) is None:
                w.kill()
                raise RuntimeError(f"math-verify worker did not start within {timeout}s")
        for w in workers:
            self._give(w)

    def close(self) -> None:
        with self._lock:
            workers, self._idle = self._idle, []
        for w in workers:
            w.kill()

    def _forget_after_fork(self) -> None:
        for w in self._idle:
            w.close_fds_only()
        self._idle = []
        self._lock = threading.Lock()


_POOL: VerifyPool | None = None
_POOL_LOCK = threading.Lock()


def get_pool() -> VerifyPool:
    """This process's pool (created on first use, replaced in forked children)."""
    global _POOL
    if _POOL is None:
        with _POOL_LOCK:
            if _POOL is None:
                _POOL = VerifyPool()
                _POOL.spawn_spare()
    return _POOL


def _after_fork_in_child() -> None:
    global _POOL, _POOL_LOCK
    if _POOL is not None:
        _POOL._forget_after_fork()
    _POOL = None
    _POOL_LOCK = threading.Lock()


def _shutdown() -> None:
    if _POOL is not None:
        _POOL.close()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_shutdown)
