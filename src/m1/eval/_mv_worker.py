"""math-verify worker: run as a script by `m1.eval.grader_pool`, one JSON request per line.

It imports only math-verify and sympy (not m1, torch or transformers), so a replacement
starts in well under a second. math-verify's own SIGALRM limits are off; the parent
enforces the time limit by killing this process. As a second line of defence, against
being orphaned mid-computation, each request arms SIGALRM with its *default* action, which
makes the kernel end the process even while sympy is stuck inside C code holding the GIL.

On top of math-verify's `verify` this adds three checks, each for a failure seen in the
labelled data (docs/grader.md): equations compared as lhs - rhs up to sign (math-verify
solves them, which is slow and accepts any rescaling), unit stripping tried both ways
(`\\frac{37}{4}m` is 37m/4, not 37/4), and a numeric identity test at random points for
expressions sympy cannot simplify to each other (`\\sinh(at)/a` vs `(e^{at}-e^{-at})/(2a)`).
Three more rules decide before math-verify: a plain-number gold against a prediction that
evaluates to a number (an integer gold needs that exact integer; other golds accept closed
forms in e, pi and i within the decimal tolerance), and an inequality chain in one variable
against interval notation, compared as sets.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import signal
import sys

ORPHAN_LIMIT_S = 30
_POINTS = (0.731, -1.317, 1.913, -0.463, 2.271, -2.089, 7.413, -11.59)

_SUB_CMD = re.compile(r"_\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}")


def _sanitize(text: str) -> str:
    """Subscripts become plain names (`L_{\\odot}` -> `L_{odot}`), which the LaTeX parser accepts."""

    def clean(m: re.Match) -> str:
        inner = re.sub(r"\\(?:text|mathrm|mathit|rm)\s*\{([^{}]*)\}", r"\1", m.group(1))
        inner = re.sub(r"[\\\s{}]", "", inner)
        return "_{" + inner + "}"

    return _SUB_CMD.sub(clean, text)


@functools.lru_cache(maxsize=4096)
def _parse_cached(text: str, units: bool) -> tuple:
    return tuple(_parse_uncached(text, units))


def _parse(text: str, units: bool) -> list:
    """math-verify's parse of `text`, memoised per worker. Why: maj@k's groups compare each new answer with
    every group found so far, so one answer meets many others; parsing (LaTeX to sympy) is most of a
    comparison's cost, and a looping model's 64 samples can hold 30+ distinct answers a problem. Parsed
    sympy objects are immutable; each caller gets its own list."""
    return list(_parse_cached(text, units))


def _parse_uncached(text: str, units: bool) -> list:
    from latex2sympy2_extended import NormalizationConfig
    from math_verify import LatexExtractionConfig, parse

    norm = NormalizationConfig(basic_latex=True, units=units, malformed_operators=True, nits=True, boxed="all")
    return parse("$" + _sanitize(text) + "$", extraction_config=[LatexExtractionConfig(normalization_config=norm)],
                 fallback_mode="no_fallback", parsing_timeout=None)


def _split_equation(text: str) -> tuple[str, str] | None:
    if re.search(r"\\(?:le|ge|leq|geq|ne|neq|approx)(?![a-zA-Z])|[<>]", text):
        return None
    depth, cut = 0, []
    for i, ch in enumerate(text):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "=" and depth == 0:
            cut.append(i)
    if len(cut) != 1:
        return None
    return text[: cut[0]].strip(), text[cut[0] + 1 :].strip()


def _verify(g: list, p: list) -> bool:
    from math_verify import verify

    return bool(g and p and verify(g, p, timeout_seconds=None))


def _equations_equal(gold: tuple[str, str], pred: tuple[str, str]) -> bool:
    """`a = b` equals `c = d` when a - b equals c - d or d - c (the same equation, same scale)."""
    g = f"({gold[0]}) - ({gold[1]})"
    for p in (f"({pred[0]}) - ({pred[1]})", f"({pred[1]}) - ({pred[0]})"):
        if _verify(_parse(g, False), _parse(p, False)) or _numeric_identity(_parse(g, False), _parse(p, False)):
            return True
    return False


def _numeric_identity(g: list, p: list, trials: int = 6) -> bool:
    """Equal values at a few random points: catches identities sympy's simplify misses.

    Only for scalar expressions in the same free symbols; three agreeing random points make
    a false positive astronomically unlikely for the elementary functions in answers.
    """
    import sympy

    _NON_SMOOTH = (sympy.floor, sympy.ceiling, sympy.frac, sympy.Mod, sympy.Piecewise, sympy.sign, sympy.Abs,
                   sympy.Min, sympy.Max, sympy.factorial, sympy.binomial, sympy.gamma)
    if not g or not p or not isinstance(g[0], sympy.Expr) or not isinstance(p[0], sympy.Expr):
        return False
    a, b = g[0], p[0]
    syms = sorted(a.free_symbols | b.free_symbols, key=str)
    if a.free_symbols != b.free_symbols or not syms or a.has(sympy.Float) != b.has(sympy.Float):
        return False
    if any(e.has(f) for e in (a, b) for f in _NON_SMOOTH):
        return False  # piecewise-constant or kinked: a few points cannot tell floor(n/2) from floor((2n-1)/5)
    for t in range(trials):  # fixed points of both signs: |x| vs x must fail
        point = {s: sympy.Float(_POINTS[(t + 2 * i) % len(_POINTS)]) for i, s in enumerate(syms)}
        try:
            va, vb = complex(a.evalf(30, subs=point)), complex(b.evalf(30, subs=point))
        except (TypeError, ValueError, ZeroDivisionError, OverflowError):
            return False  # not numeric at this point (unevaluated functions, derivatives)
        if abs(va - vb) > 1e-9 * max(1.0, abs(va), abs(vb)):
            return False
    return True


_REL_TOL = 1e-4  # as m1.eval.answer.REL_TOL, for a non-integer numeric gold


def _closed_form_value(expr):
    """The value of a closed form with no free symbols (`e` and `i` read as the constants), else None."""
    import sympy

    if not isinstance(expr, sympy.Expr):
        return None
    subs = {s: sympy.E for s in expr.free_symbols if s.name == "e"}
    subs.update({s: sympy.I for s in expr.free_symbols if s.name == "i"})
    value = expr.subs(subs) if subs else expr
    if value.free_symbols:
        return None
    try:
        re_, im_ = (sympy.N(part, 50) for part in value.as_real_imag())
        return complex(re_), (re_, im_)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError, AttributeError):
        return None


def _numeric_gold_verdict(g: list, p: list) -> bool | None:
    """For a plain-number gold and a prediction that evaluates to a number: the verdict, else None.

    An integer gold needs exactly that integer (`10!`, `2^{10}`, `e^{i\\pi}+2` pass; 9999.857
    does not pass for 10000); any other numeric gold accepts a closed form (`\\frac{1}{\\pi}`,
    `4e^2`, `i^2`) within the relative tolerance of plain decimals.
    """
    import sympy

    if not g or not p or not isinstance(g[0], sympy.Number) or g[0] in (sympy.oo, -sympy.oo, sympy.nan):
        return None
    got = _closed_form_value(p[0])
    if got is None:
        return None
    _, (re_, im_) = got
    if not (re_.is_finite and im_.is_finite):
        return False  # oo, zoo, nan: never a finite gold
    gold = g[0]
    scale = max(1, abs(gold))
    if isinstance(gold, sympy.Integer):
        return bool(abs(re_ - gold) <= sympy.Float(10) ** -30 * scale and abs(im_) <= sympy.Float(10) ** -30 * scale)
    if abs(im_) > 1e-12 * scale:
        return False
    return bool(abs(re_ - gold) <= _REL_TOL * max(abs(gold), abs(re_)))


def _as_set(obj):
    """An inequality (chain) in one variable as the set it describes; an interval or union as itself."""
    import sympy

    if isinstance(obj, sympy.Set) and not isinstance(obj, sympy.FiniteSet):
        return obj
    if isinstance(obj, sympy.FiniteSet) and obj.args and all(isinstance(a, sympy.Rel) for a in obj.args):
        obj = sympy.Or(*obj.args)  # "x < -1 or x > 2" parses as a set of relations
    if isinstance(obj, (sympy.Rel, sympy.And, sympy.Or)) and not isinstance(obj, (sympy.Eq, sympy.Ne)):
        syms = obj.free_symbols
        if len(syms) == 1:
            return obj.as_set()
    return None


def _is_relation(obj) -> bool:
    import sympy

    if isinstance(obj, sympy.FiniteSet):
        return bool(obj.args) and all(isinstance(a, sympy.Rel) for a in obj.args)
    return isinstance(obj, (sympy.Rel, sympy.And, sympy.Or))


def _interval_verdict(g: list, p: list) -> bool | None:
    """Inequality chains against interval notation (`2 < x \\le 5` is `(2, 5]`); None if neither is one."""
    import sympy

    if not g or not p:
        return None
    a, b = _as_set(g[0]), _as_set(p[0])
    if a is None or b is None or not (_is_relation(g[0]) or _is_relation(p[0])):
        return None  # two intervals: math-verify compares them
    return bool(a == b or a.symmetric_difference(b) == sympy.S.EmptySet)


def equivalent(gold: str, pred: str) -> bool:
    """math-verify's verdict on two extracted answers, plus the checks in the module docstring."""
    ge, pe = _split_equation(gold), _split_equation(pred)
    if ge and pe:
        return _equations_equal(ge, pe)
    g0, p0 = _parse(gold, False), _parse(pred, False)
    numeric = _numeric_gold_verdict(g0, p0)
    if numeric is not None:
        return numeric
    interval = _interval_verdict(g0, p0)
    if interval is not None:
        return interval
    if _verify(g0, p0):
        return True
    g1, p1 = _parse(gold, True), _parse(pred, True)
    if (g1, p1) != (g0, p0) and _verify(g1, p1):
        return True
    return _numeric_identity(g0, p0)


def main() -> None:
    logging.disable(logging.WARNING)  # math-verify warns that its own timeout is off
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    equivalent("1", "1")  # warm sympy's and the LaTeX parser's caches before the first request
    out = sys.stdout
    out.write(json.dumps({"ready": True}) + "\n")  # the parent never kills a worker still starting up
    out.flush()
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
