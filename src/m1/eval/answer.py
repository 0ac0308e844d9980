"""Answer extraction and cheap normalisation, in pure Python with linear-time scans.

Everything here must stay fast and safe on hostile model output (200k characters, ten
thousand nested braces, unbalanced LaTeX): it runs in the caller's process for every
sample, before the expensive, sandboxed math-verify comparison in `m1.eval.grader_pool`.
"""

from __future__ import annotations

import re
from fractions import Fraction

# `\boxed{`, `\fbox{`, an escaped (non-grouping) LaTeX brace, or a grouping brace.
_BRACE_TOKENS = re.compile(r"\\(?:boxed|fbox)\s*\{|\\[{}]|[{}]")
# `\boxed 5` (no braces) is valid LaTeX and some models write it.
_BOXED_BARE = re.compile(r"\\boxed[ \t]+([^\s{}$]+)")
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


# How many non-empty closing lines a final-answer statement or `#### x` may stand in. A
# statement further up is a mid-text mention ("I recall that the correct answer is 1/2").
CLOSING_LINES = 3
# Chat sign-offs after the answer ("Let me know if ...") are not closing lines.
_SIGN_OFF = re.compile(
    r"^\W*(?:let me know|i hope (?:this|it|that)|hope this helps|feel free|please let me know|if you have any)", re.I)
# A final-answer statement: "the (final) answer is x", "Final answer: x", "Answer: x", GSM8K's "#### x",
# and the few-shot "A: x" (accepted on the very last line only, where it is not a step label).
_STATEMENT = re.compile(
    r"(?:^|(?<=[\s*(]))(?:the\s+)?(?:final\s+)?answer\s+is\b\s*:?"
    r"|^\W*(?:final\s+)?answer\W*:"
    r"|^\W*final\s+answer\W*$"
    r"|####",
    re.I,
)
_STEP_A = re.compile(r"^A:")
_DELIMITERS = re.compile(r"\$+|\\[()\[\]]|\*\*")
_MATH_SPAN = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]")
_SENTENCE_END = re.compile(r"\.(?:\s|$)|;|\s(?:because|since|which|so|as|and\s+(?:this|that|we|the))\s", re.I)
# Words that may appear in a stated answer; any other word of two or more lower-case letters
# means the "answer" is prose ("correct", "add 8: ...", "less than 90 degrees").
_MATH_WORDS = frozenset(
    "and or sin cos tan cot sec csc arcsin arccos arctan sinh cosh tanh log ln lg exp sqrt pi mod gcd lcm "
    "max min inf infty infinity deg degrees".split())
_WORD = re.compile(r"[A-Za-z]{2,}")
_COMMAND_OR_TEXT = re.compile(r"\\(?:text|mathrm|mbox|textbf|operatorname)\s*\{[^{}]*\}|\\[A-Za-z]+")


def _closing_lines(text: str) -> list[str]:
    """The last CLOSING_LINES non-empty lines, sign-offs ("Let me know ...") dropped."""
    lines = [ln.strip() for ln in text[-4000:].splitlines()]
    lines = [ln for ln in lines if ln and not _SIGN_OFF.match(ln)]
    return lines[-CLOSING_LINES:]


def _looks_mathematical(ans: str) -> bool:
    """A stated value, not prose: a number, an expression, a letter, a tuple; no ordinary words.

    `5 cm` and `35.06 g/mol` pass (units after a number are normalised away); upper-case
    names (`AB`, `BC^2`) pass as variables; `correct`, `add 8: 30+8=38` and `n!` prose do not.
    """
    if not ans or len(ans) > 300:
        return False
    if _NUM_UNIT.match(ans):
        return True
    bare = _COMMAND_OR_TEXT.sub(" ", ans)
    if ":" in bare and not re.search(r"\d\s*:\s*\d", bare):
        return False  # a label ("Step 2: ..."), not a value
    for w in _WORD.findall(bare):
        if w.lower() not in _MATH_WORDS and not w.isupper():
            return False
    return bool(re.search(r"[0-9A-Za-z\\]", ans))


def _clean_statement(rest: str) -> str:
    """The value a statement gives: its first math span, else its first clause; markup stripped."""
    rest = rest.replace("**", " ").strip()
    m = _MATH_SPAN.search(rest)
    if m:
        return next(g for g in m.groups() if g is not None).strip()
    cut = _SENTENCE_END.search(rest)
    if cut:
        rest = rest[: cut.start()]
    return re.sub(r"^\$+|\$+$", "", rest.strip(" \t*_:.,")).strip()


def _stated_answer(text: str) -> str | None:
    """Without a box: the last `#### x` or final-answer statement in the closing lines.

    Only the closing lines count, so a mention mid-way through the reasoning is never the
    answer; the value must look mathematical, so prose ("the answer is correct") and step
    labels are not answers; bold text alone is not a statement (many models bold
    intermediate results). A statement whose value is on the next line ("Final Answer:" then
    `$$42$$`) reads that line.
    """
    lines = _closing_lines(text)
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i]
        starts = [m for m in _STATEMENT.finditer(line)]
        if i == len(lines) - 1 and _STEP_A.match(line):
            starts.append(_STEP_A.match(line))
        for m in sorted(starts, key=lambda m: m.start(), reverse=True):
            rest = line[m.end():]
            if not rest.strip(" \t*_:$") and i + 1 < len(lines):
                rest = lines[i + 1]  # the value on a line of its own, not prose that mentions $S$
                if not _looks_mathematical(_DELIMITERS.sub(" ", rest).strip(" .")):
                    continue
            ans = _clean_statement(rest)
            if _looks_mathematical(ans):
                return ans
    return None


_STEP_LABEL = re.compile(r"^\W*(?:step\s*)?\w{1,8}\s*[:.)]\s*[A-Za-z][^:\n]*:", re.I)
_LAST_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:,\d{3})*(?:\.\d+)?(?:\s*/\s*\d+)?(?![\w.]*\d)")


def _last_number_of_final_line(text: str) -> str | None:
    """Lenient mode: the last number on the final (non sign-off) line, for models that do not box."""
    lines = _closing_lines(text)
    if not lines or _STEP_LABEL.match(lines[-1]):
        return None  # a truncated completion that stopped inside a step ("A: add 8: 30+8=38")
    found = None
    for found in _LAST_NUMBER.finditer(lines[-1]):
        pass
    return found.group().strip() if found else None


def extract_answer(text: str | None, lenient: bool = False) -> str | None:
    """The final answer of a completion, normalised; None when there is none.

    Strict (the default): the last closed `\\boxed{...}` / `\\fbox{...}`; without one, a
    `#### x` or a final-answer statement ("the answer is x", "Final answer: x", a last-line
    "A: x") in the closing lines. Never a mid-text mention, a prose word, a step label or
    bold text. `lenient=True` adds, when nothing else is found, the last number of the final
    line (for models that do not box; `grade` uses it only for a numeric gold). The result
    goes through `normalize_answer`, so AIME's `025` reads `25` and AMC's `27.0` reads `27`.
    """
    if not text:
        return None
    ans = _last_boxed(text)
    if ans is None:
        ans = _stated_answer(text)
    if ans is None and lenient:
        ans = _last_number_of_final_line(text)
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


# Relative tolerance for a non-integer gold: a decimal is accepted when it agrees to about
# four significant figures (85.71 for 600/7). An integer gold is exact: a prediction whose
# value is not that integer is wrong, however close (9999.857 is not 10000, 6630.65 is not
# 6630, 102019 is not 102018). This reverses an earlier choice that accepted 6630.65 for a
# gold of 6630 (a gold rounded by the benchmark): on real completions that tolerance passed
# wrong answers (a non-integer for an integer-valued AIME-style question) far more often
# than it rescued rounded golds, and integer-answer benchmarks ask for the integer.
# `\frac{9}{3}`, `2^{10}` and `10!` still equal their integers: they evaluate to them exactly.
REL_TOL = Fraction(1, 10_000)


def numbers_equal(gold: Fraction, pred: Fraction) -> bool:
    """Gold first: an integer gold needs the exact integer; otherwise a relative tolerance."""
    if gold == pred:
        return True
    if gold.denominator == 1:
        return False
    return abs(gold - pred) <= REL_TOL * max(abs(gold), abs(pred))


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
