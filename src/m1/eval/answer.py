"""Answer extraction and cheap normalisation, in pure Python with linear-time scans.

Everything here must stay fast and safe on hostile model output (200k characters, ten
thousand nested braces, unbalanced LaTeX): it runs in the caller's process for every
sample, before the expensive, sandboxed math-verify comparison in `m1.eval.verify_pool`.
"""

from __future__ import annotations

import re
from fractions import Fraction

# `\boxed{`, `\fbox{`, an escaped (non-grouping) LaTeX brace, or a grouping brace.
_BRACE_TOKENS = re.compile(r"\\(?:boxed|fbox)\s*\{|\\[{}]|[{}]")
# `\boxed 5` (no braces) is valid LaTeX and some models write it.
_BOXED_BARE = re.compile(r"\\boxed[ \t]+([^\s{}$]+)")
_GSM8K = re.compile(r"####\s*([^\n]*)")
_ANSWER_IS = re.compile(r"(?:final answer is|answer is|^A:)\s*:?\s*([^\n]*)", re.IGNORECASE | re.MULTILINE)

# Longest answer we normalise and compare; anything longer is not a final answer.
MAX_ANSWER_CHARS = 2000


def _last_boxed(text: str) -> str | None:
    """Content of the \\boxed{}/\\fbox{} that closes last, in one pass over `text`.

    One forward scan with a stack keeps this linear however the braces nest or fail to
    balance; a boxed group that never closes (a truncated completion) is skipped.
    """
    stack: list[int] = []  # for each open brace: content start if it opened a box, else -1
    best: tuple[int, int] | None = None
    for m in _BRACE_TOKENS.finditer(text):
        tok = m.group()
        if tok[0] == "\\" and len(tok) == 2:  # \{ or \}
            continue
        if tok == "}":
            if stack:
                start = stack.pop()
                if start >= 0:
                    best = (start, m.start())
        elif tok == "{":
            stack.append(-1)
        else:
            stack.append(m.end())
    bare = None
    for bare in _BOXED_BARE.finditer(text):
        pass
    if bare is not None and (best is None or bare.start() > best[1]):
        return bare.group(1)
    if best is None:
        return None
    return text[best[0] : best[1]]


_BOLD = re.compile(r"\*\*([^*\n]{1,80})\*\*")


def _fallback_answer(text: str) -> str | None:
    """Without a box: `#### x` (GSM8K), the last "answer is x" / "A: x" line, or a final **bold** answer.

    The bold form is how some chat models (gemma-2) state the result when they ignore the
    boxed instruction; only a short bold span near the end that looks like a value counts,
    so bold section headings are never taken for answers.
    """
    found = None
    for found in _GSM8K.finditer(text):
        pass
    if found is None:
        for found in _ANSWER_IS.finditer(text):
            pass
    if found is None:
        tail_start = max(0, len(text) - 400)
        for m in _BOLD.finditer(text, tail_start):
            body = m.group(1).strip()
            if ":" not in body and not re.match(r"^\d+\.\s", body) and re.search(r"[\d\\]", body):
                found = m
    if found is None:
        return None
    ans = found.group(1).strip()
    ans = re.sub(r"^\$+|\$+$", "", ans.rstrip(".").strip()).strip()
    return ans or None


def extract_answer(text: str | None) -> str | None:
    """The final answer of a completion, normalised; None when there is none.

    The last closed `\\boxed{...}` or `\\fbox{...}` wins; without one, a GSM8K-style
    `#### x` or a trailing "The answer is x" line is used. The result goes through
    `normalize_answer`, so AIME's `025` reads `25` and AMC's `27.0` reads `27`.
    """
    if not text:
        return None
    ans = _last_boxed(text)
    if ans is None:
        ans = _fallback_answer(text)
    if ans is None:
        return None
    ans = normalize_answer(ans)
    return ans or None


def gold_answer(gold: object) -> str:
    """A benchmark's gold in the form `extract_answer` gives: boxed, `####` and floats accepted."""
    if isinstance(gold, float) and gold.is_integer():
        gold = int(gold)
    text = str(gold)
    if "\\boxed" in text or "\\fbox" in text or "####" in text:
        return extract_answer(text) or ""
    return normalize_answer(text)


# Unicode that models write in place of LaTeX.
_UNICODE = {"²": "^2", "³": "^3", "π": "\\pi ", "√": "\\sqrt", "×": "\\times ", "·": "\\cdot ", "−": "-",
            "–": "-", "≤": "\\le ", "≥": "\\ge ", "∞": "\\infty ", "≠": "\\ne ", "÷": "\\div ", "\u00a0": " "}
_UNICODE_RE = re.compile("|".join(map(re.escape, _UNICODE)))
# `\\` (a matrix row break) must survive while `\ `, `\,` and friends (spacing) go.
_REMOVE_RE = re.compile(
    r"(\\\\)"
    r"|\\displaystyle|\\left(?![a-zA-Z])|\\right(?![a-zA-Z])|\\[,!;: ]|\\q?quad(?![a-zA-Z])|~"
    r"|\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|°|\\%|%|\\\$"
    r"|\^\s*\{?\s*(?:\\(?:mathrm|text)\s*\{)?\s*(?:st|nd|rd|th)\s*\}?\s*\}?(?![a-zA-Z])"  # ordinals: 12^{\mathrm{th}}
)
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}((?:,|\{,\})\d{3})+(\.\d+)?$")
_INT_RE = re.compile(r"^([+-]?)0*(\d+)$")
_DEC_RE = re.compile(r"^([+-]?)(\d*)\.(\d+)$")
_TEXT_WRAP = re.compile(r"^\\(?:text|textbf|mathrm|mathbf|mbox)\s*\{([^{}]*)\}$")
# A number followed by unit words, in LaTeX text or plain: `5\text{ cm}`, `2.78 m`, `35.06 g/mol`.
_NUM_UNIT = re.compile(
    r"^([+-]?(?:\d+\.?\d*|\.\d+))\s*(?:\\(?:text|mathrm|mbox)\s*\{\s*[A-Za-zÅ/ .\-^0-9]*\}\s*)+$"
    r"|^([+-]?(?:\d+\.?\d*|\.\d+))\s+(?:(?:[A-Za-zÅ]{2,}|[mgsKJNWVLÅ])(?:/[A-Za-z]+)?\.?\s*){1,3}$"
)


def normalize_answer(ans: str) -> str:
    """Cheap, meaning-preserving clean-up used for exact matches and voting keys.

    Removes math-mode wrappers, spacing commands, degree, percent and ordinal marks, units
    after a bare number, thousands separators, and writes integers and terminating
    decimals canonically (`025` -> `25`, `27.0` -> `27`). One regex pass and a few string
    operations: nothing here can be slow.
    """
    if len(ans) > MAX_ANSWER_CHARS:
        return ans.strip()
    s = _UNICODE_RE.sub(lambda m: _UNICODE[m.group()], ans.strip())
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.replace("\n", " ")
    s = _REMOVE_RE.sub(lambda m: m.group(1) or "", s)
    s = s.strip().strip("$").strip()
    if s.startswith("\\(") and s.endswith("\\)"):
        s = s[2:-2].strip()
    m = _TEXT_WRAP.match(s)
    if m:
        s = m.group(1).strip()
    s = s.rstrip(".").strip()
    s = re.sub(r"\s+", " ", s)
    m = _NUM_UNIT.match(s)
    if m:
        s = m.group(1) or m.group(2)
    if _THOUSANDS.match(s):
        s = s.replace("{,}", "").replace(",", "")
    return _canonical_number(s)


def compact(s: str) -> str:
    """A spacing- and brace-insensitive key: `E_{1}, E_{2}` and `E_1,E_2` compare equal."""
    s = re.sub(r"\s+", "", s)
    return re.sub(r"([_^])\{(\w)\}", r"\1\2", s)


def _canonical_number(s: str) -> str:
    m = _INT_RE.match(s)
    if m:
        sign, digits = m.groups()
        return ("-" if sign == "-" and digits != "0" else "") + digits
    m = _DEC_RE.match(s)
    if m:
        sign, whole, frac = m.groups()
        frac = frac.rstrip("0")
        whole = whole.lstrip("0") or "0"
        if not frac:
            return ("-" if sign == "-" and whole != "0" else "") + whole
        return ("-" if sign == "-" else "") + f"{whole}.{frac}"
    return s


_FRAC_RE = re.compile(r"^([+-]?)\\frac\s*(?:\{\s*(\d+)\s*\}|(\d))\s*(?:\{\s*(\d+)\s*\}|(\d))$")
_SLASH_RE = re.compile(r"^([+-]?)(\d+)\s*/\s*(\d+)$")
_NUM_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")
_SCI_RE = re.compile(
    r"^([+-]?(?:\d+\.?\d*|\.\d+))\s*(?:[eE]\s*|\\(?:times|cdot)\s*10\s*\^\s*)\{?\s*([+-]?\d{1,3})\s*\}?$"
    r"|^()10\s*\^\s*\{?\s*([+-]?\d{1,3})\s*\}?$"
)


def as_number(s: str) -> Fraction | None:
    """The exact rational value of a plain number, else None.

    Plain means `-3`, `0.25`, `\\frac12`, `7/8`, `1e-5`, `1.3\\times10^{-5}`, `10^{3}`.
    """
    s = s.strip()
    if len(s) > 60:
        return None
    if _NUM_RE.match(s):
        return Fraction(s)
    m = _FRAC_RE.match(s) or _SLASH_RE.match(s)
    if m:
        groups = [g for g in m.groups()[1:] if g is not None]
        num, den = int(groups[0]), int(groups[1])
        if den == 0:
            return None
        value = Fraction(num, den)
        return -value if m.group(1) == "-" else value
    m = _SCI_RE.match(s)
    if m:
        mant, exp = (m.group(1), m.group(2)) if m.group(2) is not None else ("1", m.group(4))
        return Fraction(mant) * Fraction(10) ** int(exp)
    return None


# Relative tolerance when either side is not an integer: a decimal is accepted when it
# agrees to about four significant figures (85.71 for 600/7, 6630.65 for a gold of 6630).
# Integers are compared exactly, so 102019 never passes for 102018.
REL_TOL = Fraction(1, 10_000)


def numbers_equal(a: Fraction, b: Fraction) -> bool:
    if a == b:
        return True
    if a.denominator == 1 and b.denominator == 1:
        return False
    return abs(a - b) <= REL_TOL * max(abs(a), abs(b))


def split_top_level(s: str, sep: str = ",") -> list[str]:
    """Split on `sep` outside any (), [], {} nesting; `\\{`-style escapes count as brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(s):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(s[start:i].strip())
            start = i + 1
    parts.append(s[start:].strip())
    return parts


def strip_outer_parens(s: str) -> str:
    """`(a, b)` -> `a, b` when the parentheses enclose the whole string."""
    if s.startswith("(") and s.endswith(")"):
        inner = s[1:-1]
        depth = 0
        for ch in inner:
            depth += ch in "([{"
            depth -= ch in ")]}"
            if depth < 0:
                return s
        return inner.strip()
    return s


def last_equation_side(s: str) -> str | None:
    """`x = 3` -> `3`; `\\omega(r) = a = b` -> `b`; None without a top-level `=` (or with `\\le`-style relations)."""
    if "=" not in s or re.search(r"\\(?:le|ge|leq|geq|ne|neq)(?![a-zA-Z])|[<>]", s):
        return None
    parts = split_top_level(s, "=")
    if len(parts) < 2 or not parts[-1]:
        return None
    return parts[-1]


# Constructs whose sympy evaluation can run in C for minutes while holding the GIL.
_POW_EXP = re.compile(r"\^\s*(\{|\\?[A-Za-z0-9.]+)")
_BIG_INT = re.compile(r"\d{7,}")
_FACT_ARG = re.compile(r"(\d+)\s*!")


def is_pathological(s: str) -> bool:
    """True for answers that should never reach sympy: huge, deeply nested or explosive.

    This is an optimisation, not the safety net (the sandbox's kill is): each caught case
    saves a worker restart. Power towers, exponents or factorials of big numbers, and
    very long or deeply nested strings are screened out; they are compared as strings.
    """
    if len(s) > MAX_ANSWER_CHARS or s.count("{") > 200:
        return True
    depth = 0
    for ch in s:
        if ch == "{":
            depth += 1
            if depth > 40:
                return True
        elif ch == "}":
            depth -= 1
    if _BIG_INT.search(s) and ("^" in s or "!" in s or "\\binom" in s or "choose" in s):
        return True
    for m in _FACT_ARG.finditer(s):
        if int(m.group(1)) > 5000:
            return True
    for m in _POW_EXP.finditer(s):
        exp = _group_at(s, m.start(1)) if m.group(1) == "{" else m.group(1)
        if "^" in exp or "!" in exp or "**" in exp:
            return True
        if any(int(d) > 100_000 for d in re.findall(r"\d+", exp) if len(d) < 12) or re.search(r"\d{12,}", exp):
            return True
    return False


def _group_at(s: str, i: int) -> str:
    """The braced group starting at s[i] == '{' (to the end if unbalanced)."""
    depth = 0
    for j in range(i, len(s)):
        if s[j] == "{":
            depth += 1
        elif s[j] == "}":
            depth -= 1
            if depth == 0:
                return s[i + 1 : j]
    return s[i + 1 :]
