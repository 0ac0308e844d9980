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
MAX_RATIO_PARTS = 8  # a ratio a:b:c:... with more parts is taken for garbage (compared as a string)
_RATIO_CHAIN = re.compile(r"^\s*[\w.\\{}]+(?:\s*:\s*[\w.\\{}]+){%d,}\s*$" % MAX_RATIO_PARTS)  # the whole answer is such a chain


def _last_boxed(text: str) -> str | None:
    """Content of the \\boxed{}/\\fbox{} that closes last (see `_last_boxed_span`)."""
    span = _last_boxed_span(text)
    return None if span is None else span[0]


def _last_boxed_span(text: str) -> tuple[str, int] | None:
    """(content, end offset) of the \\boxed{}/\\fbox{} that closes last, in one pass over `text`.

    One forward scan with a stack keeps this linear however the braces nest or fail to
    balance; a boxed group that never closes (a truncated completion) is skipped. Boxes
    that stand side by side, joined only by "and", commas or spacing (`\\boxed{-2} and
    \\boxed{1}`, `\\boxed{(2, 2)} \\quad \\text{and} \\quad \\boxed{(6, 2)}`), are one answer in
    several boxes: their contents are joined as a list (`-2, 1`).
    """
    stack: list[tuple[int, int] | None] = []  # per open brace: (box token start, content start) if it opened a box
    boxes: list[tuple[int, int, int]] = []  # closed boxes outside any other box: (token start, content start, close)
    open_boxes = 0
    innermost: tuple[int, int] | None = None  # the last box closed at any depth: (content start, close)
    for m in _BRACE_TOKENS.finditer(text):
        tok = m.group()
        if tok[0] == "\\" and len(tok) == 2:  # \{ or \}
            continue
        if tok == "}":
            if stack:
                box = stack.pop()
                if box is not None:
                    open_boxes -= 1
                    innermost = (box[1], m.start())
                    if open_boxes == 0:
                        boxes.append((box[0], box[1], m.start()))
        elif tok == "{":
            stack.append(None)
        else:
            stack.append((m.start(), m.end()))
            open_boxes += 1
    bare = None
    for bare in _BOXED_BARE.finditer(text):
        pass
    if bare is not None and (not boxes or bare.start() > boxes[-1][2]):
        return bare.group(1), bare.end()
    if innermost is not None and (not boxes or innermost[1] > boxes[-1][2]):
        return text[innermost[0] : innermost[1]], innermost[1] + 1  # inside a box that never closes
    if not boxes:
        return None
    group = [boxes[-1]]  # built backwards from the last box
    for prev in reversed(boxes[-MAX_JOINED_BOXES:-1]):
        if not _BOX_JOINER.fullmatch(text[prev[2] + 1 : group[-1][0]]):
            break
        group.append(prev)
    parts: list[str] = []
    for _, start, close in reversed(group):
        part = text[start:close].strip()
        if not parts or part != parts[-1]:
            parts.append(part)
    return ", ".join(parts), boxes[-1][2] + 1


# At most this many side-by-side boxes make one answer (a list of solutions, a tuple's parts).
MAX_JOINED_BOXES = 32
# What may stand between boxes that hold one answer together: spacing, commas, "and"/"or".
_BOX_JOINER = re.compile(
    r"(?:\s|[,;$&]|\\[()\[\]]|\\\\|\\q?quad|\\[,;:! ]|\\text\s*\{\s*(?:and|or|,)?\s*\}|\b(?:and|or)\b){0,12}")


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
    r"|^\W*(?:final\s+)?answer\s*(?=\$|\\[(\[])"
    r"|^\W*final\s+answer\W*$"
    r"|####",
    re.I,
)
_STEP_A = re.compile(r"^A:")
_DELIMITERS = re.compile(r"\$+|\\[()\[\]]|\*\*")
_MATH_SPAN = re.compile(r"(?<!\\)\$\$(.+?)(?<!\\)\$\$|(?<!\\)\$(.+?)(?<!\\)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]")
# Between two math spans of one answer ("$12$ and $13$", "$-2$, $1$").
_SPAN_JOINER = re.compile(r"\s*(?:,\s*(?:and\s+)?|and\s+|or\s+)", re.I)
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


# "Final Answer: The largest $n$ is 34.": the value follows the sentence's verb; the
# first math span ($n$) names what is asked.
_PROSE_SUBJECT = re.compile(r"^(?:the|our|its|this|my)\s[^.]*?\s(?:is|are|equals|=)\s+(?=\S)", re.I)


def _clean_statement(rest: str) -> str:
    """The value a statement gives: its first math span, else its first clause; markup stripped."""
    rest = rest.replace("**", " ").strip()
    subject = _PROSE_SUBJECT.match(rest)
    if subject:
        rest = rest[subject.end():]
    m = _MATH_SPAN.search(rest)
    if m:
        parts = [next(g for g in m.groups() if g is not None).strip()]
        joiner = ", "
        while True:  # "$12$ and $13$": one answer in several spans
            nxt = _MATH_SPAN.search(rest, m.end())
            between = rest[m.end() : nxt.start()] if nxt else ""
            if not nxt or not _SPAN_JOINER.fullmatch(between):
                break
            joiner = " \\text{ and } " if "and" in between and "," not in between else ", "
            parts.append(next(g for g in nxt.groups() if g is not None).strip())
            m = nxt
        return parts[0] if len(parts) == 1 else joiner.join(parts)
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
            if not _DELIMITERS.sub("", rest).strip(" \t*_:") and i + 1 < len(lines):
                rest = lines[i + 1]  # the value on a line of its own, not prose that mentions $S$
                if not _looks_mathematical(_DELIMITERS.sub(" ", rest).strip(" .")):
                    continue
            ans = _clean_statement(rest)
            if _looks_mathematical(ans):
                return ans
    return None


_STEP_LABEL = re.compile(r"^\W*(?:step\s*)?\w{1,8}\s*[:.)]\s*[A-Za-z][^:\n]*:", re.I)

# ---- lenient mode: a number that a closing statement states as the result
#
# Models that do not box still close with a statement: "Therefore, the number of trailing
# zeros in 42! is 9.", "...is indeed 90." followed by "I think that's the answer.", "so
# x = 5", "m + n = 25 + 169 = **194**". Lenient mode reads the last such statement in the
# closing lines. It never reads a number from
# - an unfinished final line (a truncated completion: `... + (1/2`, `... = \frac{1`, "and"),
#   and then nothing above it either, since the model had not concluded;
# - a mid-text mention (only the closing lines count, as in strict mode);
# - a step label or heading ("**4. Find m + n:**", "A: add 8: 30+8=38");
# - a question or a restated problem ("Find the side length ... 300.", "What is ...?"),
#   which also ends the search: a model that ends on the problem statement did not conclude;
# - a sentence that says the model did not conclude ("we need to find", "no solution",
#   "numerical methods"), at or below the statement: that ends the search too;
# - text after a chat-template marker (`<|im_start|>`): a new turn, not this answer;
# - a number that does not end its sentence ("is 9 times larger", "at least 10", "100 billion");
# - a sentence further up than the closing lines' last four (a one-line completion holds its
#   whole reasoning in one line).

# Chat-template markers: text after them is a new turn (a model that ran on), not its answer.
_TURN_MARKER = re.compile(r"<\|im_start\|>|<\|im_end\|>|<\|endoftext\|>|<\|eot_id\|>|<\|start_header_id\|>|</s>")
# A number as models write it: `-3`, `1,200`, `0.033`, `7/8`, `\frac{3}{56}`, `6 \times 10^{13}`.
_NUMBER = (
    r"[-+−]?\s*(?:\\[dt]?frac\s*\{\s*\d+\s*\}\s*\{\s*\d+\s*\}"
    r"|\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
    r"(?:\s*/\s*\d+(?!\d|\.\d))?"
    r"(?:\s*(?:\\times|\\cdot|×|x)\s*10\s*\^\s*(?:\{\s*[-+−]?\d+\s*\}|[-+−]?\d+))?"
)
# What may follow the number and still end the statement: `%`, degrees, up to three unit
# words (`m`, `g/mol`, `apples`), and one parenthetical with a word in it ("(mod 1000)").
_NOT_UNITS = frozenset(
    "times more less than of from to by and or plus minus over divided multiplied if when for which but not "
    "with is are was be as in on at per each that this the a an hundred thousand million billion trillion".split())
_UNIT = r"(?:%|\\%|°|[€£¥$]|\^\s*\{?\s*\\circ\s*\}?|[A-Za-zµÅ][A-Za-zµÅ/²³^0-9.\-]*)"
_CLOSING_STATEMENT = re.compile(
    r"(?:(?<![A-Za-z])(?:is|are|was|were|equals?|becomes?|gives?|get|yields?|comes\s+to|totals?)(?![A-Za-z])"
    r"|(?<![A-Za-z])(?:it|that|answer|result|total)['’]s"
    r"|=|≈|≡|\\approx|\\equiv|\\cong)"
    r"\s*(?:(?:indeed|exactly|precisely|therefore|thus|then|just|simply|only|now|also|equal\s+to|approximately"
    r"|about|roughly|around|a\s+total\s+of)(?![A-Za-z])\s*,?\s*)*"
    rf"(?P<value>{_NUMBER})"
    rf"(?P<tail>(?:\s*{_UNIT}){{0,3}})"
    r"(?:\s+\((?=[^()]*[A-Za-z]{2})[^()]*\))?"
    r"\s*[.!]?\s*$",
    re.I,
)
# "Therefore, there are 12 distinct sequences ...": a count after a concluding word.
_THERE_ARE = re.compile(
    r"^(?:so|thus|therefore|hence|in\s+total|altogether|overall|finally|in\s+conclusion|in\s+all)\s*,?\s*"
    r"there\s+(?:are|is|were|was|will\s+be)\s+(?:exactly\s+|a\s+total\s+of\s+|only\s+)?"
    rf"(?P<value>{_NUMBER})(?![\d.,/])",
    re.I,
)
# A final line that is only a value: `**194**`, `$42$`, `Total: 42 apples`.
_VALUE_LINE = re.compile(rf"^(?:[A-Za-z][A-Za-z ]{{0,24}}:\s*)?(?P<value>{_NUMBER})(?:\s*{_UNIT}){{0,3}}\s*[.!]?$")
# A restated problem or an instruction ("Find ...", "Let $p$ be ...", "Calculate $m+n$."), as a sentence start.
_RESTATED = re.compile(
    r"^(?:find|compute|determine|evaluate|express|calculate|simplify|prove|show|suppose"
    r"|let(?!\s+(?:me|us)\b|'s|’s))\b(?!\s*:)",
    re.I,
)
# Words that say the model has not concluded: at or below a statement they void it.
_UNRESOLVED = re.compile(
    r"\b(?:to see which|which one satisfies|needs? to (?:find|solve|determine|calculate|compute|check)"
    r"|you(?:'ll| will)? need|(?:cannot|can ?not|can't|unable to|could ?n[o']t) (?:\w+ )?(?:determine|find|calculate"
    r"|solve|provide|compute|get)|numerical methods?|trial and error|left to you|remains to be|no (?:\w+ )?solutions?"
    r"|no (?:simple|easy|closed-form|direct|straightforward)|unfortunately|too (?:small|large|big)"
    r"|(?:must|might|may) be an error|does ?n[o']t make sense)\b",
    re.I,
)
# A one-line completion holds its whole reasoning in one line: only its last sentences close it.
CLOSING_SENTENCES = 4
# Sentences that close without stating anything ("I hope it is correct.", "I think that's the answer.").
_CLOSER = re.compile(r"^(?:i (?:hope|think|believe)|hope this|that'?s (?:it|all)|this (?:is|was) (?:the|my) (?:answer|solution)"
                     r"|let me know|feel free|good luck)\b", re.I)
# A final-answer heading followed by prose that strict mode refuses; lenient takes its one number.
_FINAL_PROSE = re.compile(r"^(?:final\s+)?answer\s*:\s*(.+)$", re.I)
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|(?<=[.!?])(?=\*\*)")
# Markup that is not part of a value: bold/italic stars, underscores used as emphasis,
# math delimiters, `\text{...}` wrappers (their content kept), list bullets.
_MARKUP = re.compile(r"\*+|(?<![\\\w])_+(?=\w)|(?<=\w)_+(?![\w{])|\$+|\\[()\[\]]|\\(?:displaystyle|quad|qquad|,|;|!)")
_TEXT_CMD = re.compile(r"\\(?:text|textbf|mathrm|mbox|mathbf)\s*\{([^{}]*)\}")
# A line cut off mid-way: it ends on an operator, an opening bracket, a comma, a colon
# (the value that should follow is missing), an operator command or a connective word.
_ENDS_OPEN = re.compile(
    r"(?:[-+*/=^_,(\[{<>:≤≥≈×−]|\\\\"
    r"|\\(?:cdot|times|div|[dt]?frac|sqrt|left|pm|mp|le|ge|leq|geq|ne|neq|approx|equiv|to|implies|Rightarrow"
    r"|rightarrow|Longrightarrow|iff|quad|qquad|sum|prod|int|binom|cup|cap|in|subset|begin)"
    r"|(?<![A-Za-z])(?:and|or|the|a|an|of|to|by|is|are|was|be|with|then|that|we|so|if|for|from|in|on|at|as"
    r"|which|where|plus|minus|times|than|get|gives))\s*$",
    re.I,
)
_OPENERS = {"(": ")", "[": "]", "{": "}"}
_CURRENCY = re.compile(r"(?<![\w$\\])\$\d")  # "$18", not a math delimiter
_LIST_MARKER = re.compile(r"^(?:step\s*)?\d{1,2}[.)]\s+(?=\D)", re.I)


def _plain(line: str) -> str:
    """A closing line without markup: `**194**` -> `194`, `$x = 5$.` -> `x = 5.`, `\text{ cm}` -> ` cm`."""
    line = _TEXT_CMD.sub(r" \1", line)
    line = _MARKUP.sub(" ", line)
    return re.sub(r"\s+", " ", line).strip(" \t-•")


def _unfinished(line: str) -> bool:
    """Whether a (final) line was cut off: unbalanced brackets or math, or an open ending."""
    if line.count("\\[") > line.count("\\]") or line.count("\\(") > line.count("\\)"):
        return True
    if len(re.findall(r"(?<!\\)\$\$?", line)) % 2 and not _CURRENCY.search(line):
        return True
    depth = 0
    for ch in re.sub(r"\\[{}()\[\]]|\\(?:left|right)\s*[()\[\]|.]", "", line):
        if ch in _OPENERS:
            depth += 1
        elif ch in ")]}":
            depth = max(0, depth - 1)
    if depth > 0:
        return True
    if line.rstrip().endswith("."):
        return False  # a sentence that ends
    return bool(_ENDS_OPEN.search(_plain(line)))


def _closing_value(sentence: str) -> str | None:
    """The number a closing sentence states as its result, else None."""
    m = _CLOSING_STATEMENT.search(sentence)
    if m and not any(w.lower().strip(".") in _NOT_UNITS for w in m.group("tail").split()):
        return m.group("value")
    m = _THERE_ARE.match(sentence)
    if m:
        return m.group("value")
    m = _FINAL_PROSE.match(sentence)  # "Final Answer: Jane started growing Sphere 3 hours ago."
    if m:
        numbers = re.findall(rf"(?<![\w.^_]){_NUMBER}(?![\w.]*\d)", m.group(1))
        return numbers[0] if len(numbers) == 1 else None
    return None


def _stated_number(text: str) -> str | None:
    """Lenient mode: the number the closing lines state as the result (see the notes above)."""
    turn = _TURN_MARKER.search(text)
    if turn:
        text = text[: turn.start()]
    lines = _closing_lines(text)
    while lines and _DELIMITER_LINE.match(lines[-1]) and not _OPENING_LINE.match(lines[-1]):
        lines.pop()  # the `\]` or `$$` that closes a display: the line above is the last one
    if not lines or _unfinished(lines[-1]) or _STEP_LABEL.match(lines[-1]):
        return None  # a truncated completion, or one that stopped inside a step ("A: add 8: 30+8=38")
    budget = CLOSING_SENTENCES
    for i, line in enumerate(reversed(lines)):
        if _STEP_LABEL.match(line):
            continue  # a heading ("**4. Find m + n:**") states nothing
        plain = _LIST_MARKER.sub("", _plain(line))  # "3. Calculate: ...": the 3 is not a value
        value_line = _VALUE_LINE.match(plain) if i == 0 else None  # a value alone: only as the final line
        if value_line:
            return _clean_number(value_line.group("value"))
        for sentence in reversed([s.strip() for s in _SENTENCE_SPLIT.split(plain) if s.strip()]):
            if sentence.endswith("?") or _RESTATED.match(sentence) or _UNRESOLVED.search(sentence):
                return None  # a question, the problem restated or an open end: the model did not conclude
            value = _closing_value(sentence)
            if value is not None:
                return _clean_number(value)
            if not _CLOSER.match(sentence):
                budget -= 1
                if budget == 0:
                    return None  # further up is the reasoning, not its conclusion
    return None


def _clean_number(value: str) -> str:
    """`6 x 10^13` -> `6 \times 10^13` (a plain-text times sign), spacing and unicode minus tidied."""
    value = re.sub(r"\s*(?:×|(?<![A-Za-z])[xX])\s*(?=10\s*\^)", r" \\times ", value)
    return re.sub(r"\s+", " ", value).replace("−", "-").strip()


_DELIMITER_LINE = re.compile(r"^(?:\$\$|\\\]|\\\[|\\\)|```\w*|\\end\{\w+\*?\}|\\begin\{\w+\*?\})$")
_OPENING_LINE = re.compile(r"^(?:\\\[|\\begin\{\w+\*?\})$")


def extract_answer(text: str | None, lenient: bool = False) -> str | None:
    """The final answer of a completion, normalised; None when there is none.

    Strict (the default): the last closed `\\boxed{...}` / `\\fbox{...}`; without one, a
    `#### x` or a final-answer statement ("the answer is x", "Final answer: x", a last-line
    "A: x") in the closing lines. Never a mid-text mention, a prose word, a step label or
    bold text. `lenient=True` adds, when nothing else is found, a number that a closing
    statement states ("... is indeed 90.", "so x = 5", "= **194**"; see `_stated_number`),
    for models that do not box; `grade` uses it only for a numeric gold. The result goes
    through `normalize_answer`, so AIME's `025` reads `25` and AMC's `27.0` reads `27`.
    """
    if not text:
        return None
    boxed = _last_boxed_span(text)
    if boxed is None:
        ans = _stated_answer(text)
    else:
        # A final-answer statement after the last box wins: models box intermediate results
        # and then close with "Final Answer: The final answer is $10,455$."
        ans = _stated_answer(text[boxed[1]:]) or boxed[0]
    if ans is None and lenient:
        ans = _stated_number(text)
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
    s = re.sub(r",\\!\s*", ",", s)  # `11,\! 111,\! 100`: a thousands separator with a negative space
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


# Plain numbers joined by +, -, ×, ·, *: a sum or product left unevaluated ("15 + 43", "3 \\times 4").
_ARITH_OPERAND = r"(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
_ARITH_OPERATOR = r"(?:[-+*×·−]|\\times|\\cdot)"
_UNEVALUATED = re.compile(rf"^[-+−]?\s*{_ARITH_OPERAND}(?:\s*{_ARITH_OPERATOR}\s*{_ARITH_OPERAND})+$")


def is_unevaluated_arithmetic(s: str) -> bool:
    """Whether an answer is plain numbers joined by arithmetic operators, with no result.

    Such an answer restates the computation instead of doing it: a model that answers
    "What is 15 + 43?" with "The answer is 15 + 43" has not added. Symbolic comparison
    (math-verify) evaluates the sum and calls it equal to 58, so the grader asks this first
    wherever the gold is a number. Fractions, roots and powers are not caught: `\\frac{6}{3}`
    or `2^{3}` is a value written in closed form, which a grader that accepts closed forms
    must keep accepting.
    """
    return bool(_UNEVALUATED.match(s.strip()))


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
    if _RATIO_CHAIN.match(s):  # a looping model's "1:1:1:...": math-verify spends its whole time limit on one
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
