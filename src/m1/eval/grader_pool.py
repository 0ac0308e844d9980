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
START_LIMIT_S = 60.0  # how long a request waits for a worker to import math-verify before its own time limit starts


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
        self.ready = False  # set once the child has imported math-verify and said so

    def _lines(self):
        while (nl := self.buf.find(b"\n")) >= 0:
            line, self.buf = self.buf[:nl], self.buf[nl + 1 :]
            msg = json.loads(line)
            if msg.get("ready"):
                self.ready = True
                continue
            yield msg

    def poll_ready(self) -> bool:
        """Read whatever the child has written, without blocking; True once it is ready."""
        if not self.ready:
            fd = self.proc.stdout.fileno()
            while select.select([fd], [], [], 0)[0]:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                self.buf += chunk
            for _ in self._lines():
                pass  # only stale replies can be here; drop them
        return self.ready

    def wait_ready(self, deadline: float) -> bool:
        """Block until the child has imported math-verify (or died, or `deadline` passed); True if ready."""
        fd = self.proc.stdout.fileno()
        while not self.poll_ready():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.proc.poll() is not None:
                return False
            select.select([fd], [], [], min(remaining, 0.5))
        return True

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
            for reply in self._lines():
                if reply.get("id") == rid:
                    return reply
                # else: the reply to a request that timed out while this worker was starting
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
        """A ready idle worker if there is one, else one still starting, else a new one."""
        with self._lock:
            for i in range(len(self._idle) - 1, -1, -1):
                if self._idle[i].poll_ready():
                    return self._idle.pop(i)
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
        """math-verify's verdict, or None if it did not finish within `timeout` seconds.

        The time limit starts once the worker is ready: a worker still importing math-verify (a
        loaded machine, or just after a kill) is waited for, up to `START_LIMIT_S`. Before, a
        request that met a starting worker was graded False after `timeout`: on a busy 2-core
        machine every timeout made the next few verdicts False whatever the answers (2026-12-07).
        """
        w = self._take()
        if not w.wait_ready(time.monotonic() + START_LIMIT_S):
            w.kill()
            logger.warning("math-verify worker did not start within %.0fs; graded False (gold=%.80r pred=%.80r)", START_LIMIT_S, gold, pred)
            return None
        reply = w.request({"gold": gold, "pred": pred}, time.monotonic() + timeout)
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
            if w.request({"ping": True}, deadline) is None:  # the ready line comes first
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
