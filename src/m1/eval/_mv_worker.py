"""math-verify worker: run as a script by `m1.eval.verify_pool`, one JSON request per line.

It imports only math-verify (not m1, torch or transformers), so a replacement starts in
well under a second. math-verify's own SIGALRM limits are off; the parent enforces the
time limit by killing this process. As a second line of defence, against being orphaned
mid-computation, each request arms SIGALRM with its *default* action, which makes the
kernel end the process even while sympy is stuck inside C code holding the GIL.
"""

from __future__ import annotations

import json
import logging
import signal
import sys

ORPHAN_LIMIT_S = 30


def _parse(text: str):
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    return parse(
        "\\boxed{" + text + "}",
        extraction_config=[LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()],
        parsing_timeout=None,
    )


def equivalent(gold: str, pred: str) -> bool:
    """math-verify's verdict on two extracted answers (gold first: verify is asymmetric)."""
    from math_verify import verify

    g, p = _parse(gold), _parse(pred)
    if not g or not p:
        return False
    return bool(verify(g, p, timeout_seconds=None))


def main() -> None:
    logging.disable(logging.WARNING)  # math-verify warns that its own timeout is off
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    equivalent("1", "1")  # warm sympy's and the LaTeX parser's caches before the first request
    out = sys.stdout
    for line in sys.stdin:
        req = json.loads(line)
        if "ping" in req:
            out.write(json.dumps({"id": req["id"], "ok": True}) + "\n")
            out.flush()
            continue
        signal.alarm(ORPHAN_LIMIT_S)
        try:
            ok = equivalent(req["gold"], req["pred"])
        except Exception:  # noqa: BLE001 - any parse/compare failure means "not shown equal"
            ok = False
        signal.alarm(0)
        out.write(json.dumps({"id": req["id"], "ok": ok}) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
