import multiprocessing as mp
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from m1.eval import answers_equivalent, extract_answer, grade
from m1.eval.grader_pool import get_pool

NO_HANG_LIMIT_S = 2.0  # the issue's bound for any single grade call

# ---------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    "text, want",
    [
        ("so \\boxed{5}.", "5"),
        ("first \\boxed{1} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{\\sqrt{2}}{2}"),
        ("\\fbox{42}", "42"),
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),  # escaped braces do not close the box
        ("\\boxed{025}", "25"),  # AIME leading zeros
        ("\\boxed{27.0}", "27"),  # AMC floats
        ("\\boxed{1,000}", "1000"),
        ("\\boxed{90^\\circ}", "90"),
        ("\\boxed{ \\dfrac{3}{4} }", "\\frac{3}{4}"),
        ("\\boxed 7", "7"),
        ("she makes\n#### 18", "18"),
        ("The answer is $12$.", "12"),
        ("\\boxed{5} and later \\boxed{6", "5"),  # an unclosed box is skipped
        ("no answer here", None),
        ("\\boxed{}", None),
        ("", None),
    ],
)
def test_extract_answer(text, want):
    assert extract_answer(text) == want


LONG_REASONING = "We expand the product and collect terms.\n" * 30


@pytest.mark.parametrize(
    "text, want",
    [
        # a final-answer statement in the closing lines
        (LONG_REASONING + "Thus the final answer is $\\frac{1}{2}$. I hope it is correct.", "\\frac{1}{2}"),
        (LONG_REASONING + "Final Answer: The final answer is $5$. I hope it is correct.", "5"),
        (LONG_REASONING + "**Final Answer:**\n$$42$$", "42"),
        (LONG_REASONING + "### Final Answer\n\\[ 7 \\]", "7"),
        (LONG_REASONING + "The answer is: \\( \\frac{3}{4} \\)", "\\frac{3}{4}"),
        (LONG_REASONING + "Therefore, the answer is 5 apples.", "5"),
        (LONG_REASONING + "So the answer is **17**.", "17"),  # bold inside a statement is markup
        (LONG_REASONING + "The answer is -5, 7.", "-5, 7"),
        (LONG_REASONING + "the answer is AB = 5", "AB = 5"),  # upper-case names are variables
        (LONG_REASONING + "Answer: (C)", "(C)"),
        (LONG_REASONING + "The answer is 12.\n\nLet me know if you have any other questions!", "12"),  # sign-off skipped
        ("Janet sells 13 eggs.\nA: 26", "26"),  # the few-shot "A: x" on the last line
        # never a mid-text mention
        ("Step 1.\nI recall that the correct answer is 1/2.\n" + LONG_REASONING + "So we get 3 things.", None),
        # never a non-mathematical word
        (LONG_REASONING + "The answer is correct.", None),
        (LONG_REASONING + "The answer is less than 90 degrees.", None),
        (LONG_REASONING + "**Final Answer:**\nDue to the complexity, I cannot give $S$ here.", None),
        # never a step label
        ("Q: Tom has 30 apples and buys 8.\nA: add 8: 30+8=38", None),
        ("#### Step 2: compute\nwe get 4", None),  # a markdown heading is not GSM8K's ####
        # never bold text on its own
        (LONG_REASONING + "m + n = 25 + 169 = **194**", None),
        (LONG_REASONING + "The midpoint is **(-1, 6)**.", None),
    ],
)
def test_extract_statement(text, want):
    assert extract_answer(text) == want


@pytest.mark.parametrize(
    "text, want",
    [
        # one answer in several boxes, joined only by "and", commas or spacing (issue 21)
        ("Therefore, the possible values are \\boxed{7} and \\boxed{-5}.", "7, -5"),
        ("$$\\boxed{(2, 2)} \\quad \\text{and} \\quad \\boxed{(6, 2)}$$", "(2, 2), (6, 2)"),
        ("\\boxed{1}\\boxed{2}", "1, 2"),
        ("\\boxed{5}\n\\boxed{5}", "5"),  # a repeated box is one answer
        ("\\boxed{1} papers and \\boxed{2} bins", "2"),  # words between boxes: the last box
        ("we had \\boxed{3} earlier. So a = \\boxed{4}", "4"),
        ("a \\boxed{ \\boxed{5}", "5"),  # a box inside one that never closes
        # a final-answer statement after the last box wins over boxed intermediate results
        ("$0.04 \\cdot 10,000 = \\boxed{200}$ and $\\boxed{255}$. Final Answer: The final answer is $10,455$. "
         "I hope it is correct.", "10455"),
        ("The answer is \\boxed{5}.", "5"),
        # the value of a "Final Answer: The ... is V" sentence, not the name in its first math span
        ("Final Answer: The largest $n$ is 34.", "34"),
        ("Final Answer: The volume of $ABCDEFGH$ is 120. I hope it is correct.", "120"),
        # "Answer $9$", spans joined by "and", a thousands separator written `,\\!`
        ("Answer $ 9 $", "9"),
        ("Answer \\[ 9 \\]", "9"),
        ('Final Answer: The final answer is "$12 $ and $13 $". I hope it is correct.', "12 \\text{ and } 13"),
        ("is $\\boxed{11,\\! 111,\\! 111,\\! 100}$", "11111111100"),
        ("Answer $ \\frac{1}{2} \\$ = \\frac{10}{9} $", "\\frac{1}{2} = \\frac{10}{9}"),  # an escaped \\$ closes nothing
    ],
)
def test_extract_boxes_and_statements_issue21(text, want):
    assert extract_answer(text) == want


def test_equation_chains_match_on_their_last_side():
    assert grade("\\boxed{x = 5+5+1 = 7 =11}", "$x = 11$")
    assert not grade("\\boxed{x = 5+5+1 = 7 =12}", "x = 11")
    assert not grade("\\boxed{y = 1 = 11}", "x = 11")  # another left side
    assert not grade("\\boxed{f(x) = x + 1}", "f(x)=-1,f(x)=x+1")  # a list of equations is not a chain


@pytest.mark.parametrize(
    "text, want",
    [
        # a closing statement that is not the final line (the held-out misses of issue 21)
        (LONG_REASONING + "So the total number of different combinations is indeed 90.\nI think that's the answer.", "90"),
        (LONG_REASONING + "Therefore, the number of trailing zeros in 42! is 9.\n\nThat matches the pattern.\nI hope it helps.",
         "9"),
        (LONG_REASONING + "The result is 23.", "23"),
        (LONG_REASONING + "so x = 5", "5"),
        (LONG_REASONING + "m + n = 25 + 169 = **194**", "194"),
        (LONG_REASONING + "v/c = z = **0.033**\n\nLet me know if you have any other questions!", "0.033"),
        (LONG_REASONING + "14.01 g/mol + 5.05 g/mol + 16.00 g/mol = **35.06 g/mol**", "35.06"),
        (LONG_REASONING + "so the total is 1,200 dollars", "1200"),
        (LONG_REASONING + "Therefore, 997⁻¹ ≡ **333** (mod 1000).", "333"),  # not the 1000 of "(mod 1000)"
        (LONG_REASONING + "3. **Calculate:** λ = (3 x 10⁸ m/s) / (108 x 10⁶ Hz) = 2.78 m ≈ **2.78 m**", "2.78"),
        (LONG_REASONING + "Therefore, there are 12 distinct sequences that meet the conditions. I hope it is correct.", "12"),
        (LONG_REASONING + "the probability that Alice wins is 2/3. <|im_start|>user\nWhat is 7?", "2/3"),  # a new turn
        (LONG_REASONING + "The largest real part is $192(4)+96=896$.", "896"),
        (LONG_REASONING + "Thus\n\\[\nx = 5\n\\]", "5"),
        (LONG_REASONING + "τ ≈ **6 x 10^13 years**", "6 \\times 10^13"),
        (LONG_REASONING + "**194**", "194"),  # a value alone on the final line
        ("The answer is 3.\nBut we also know 7 = 7.", "3"),  # a strict statement still wins
        ("\\boxed{4} and the final line says x = 9", "4"),  # and a box over both
        # never a number from an unfinished (truncated) final line, nor from above it
        (LONG_REASONING + "So x = 4.\nWe get 3 + 4 + (1/2", None),
        (LONG_REASONING + "\\[ 36a = 77 \\times 79 \\implies a = \\frac{6083}{36} = \\frac{1", None),
        (LONG_REASONING + "The 610th row is the sum of the 610th row and", None),
        (LONG_REASONING + "**Therefore, the value of f(1/5) is:**", None),
        # never a step label, a question or a restated problem
        ("Q: Tom has 30 apples and buys 8.\nA: add 8: 30+8=38", None),
        (LONG_REASONING + "Let ABCDEF be a hexagon with sides 200, 240 and 300. Find the side length of the hexagon.", None),
        (LONG_REASONING + "So x = 5.\nWhat is the mean of her quiz scores currently?", None),
        # never a number that does not end its statement, nor one the model did not conclude on
        (LONG_REASONING + "The area is 9 times larger.", None),
        (LONG_REASONING + "Therefore, the value of k is at least 10.", None),
        (LONG_REASONING + "$n \\cot(\\pi/n) = 40$\nWe need to find a value of $n$ that satisfies this equation.", None),
        (LONG_REASONING + "we get 1 + 6 = 7. This is too small.\nSo there is **no** solution.", None),
        (LONG_REASONING + "Let me know if you would like the details.", None),
        ("30 apples.\nThe remaining steps are left to you.", None),  # a value alone counts only as the final line
    ],
)
def test_extract_lenient(text, want):
    assert extract_answer(text, lenient=True) == want


def test_grade_lenient_only_for_numeric_gold():
    text = LONG_REASONING + "m + n = 25 + 169 = **194**"
    assert not grade(text, "194")  # strict: a bold number is not a stated answer
    assert grade(text, "194", lenient=True)
    assert not grade(text, "195", lenient=True)
    pair = LONG_REASONING + "The midpoint is at x = 3, y = **(-1, 6)**"
    assert not grade(pair, "(-1,6)", lenient=True)  # a non-numeric gold gets no last-number fallback
    assert not grade(LONG_REASONING + "so we have 1 < 2", "(-1,6)", lenient=True)


# ---------------------------------------------------------------- equivalence


@pytest.mark.parametrize(
    "completion, gold",
    [
        ("... so the answer is \\boxed{\\frac12}", "0.5"),
        ("\\boxed{\\frac{1}{2}}", "1/2"),
        ("\\boxed{25}", "025"),
        ("\\boxed{27}", 27.0),
        ("\\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{1}{\\sqrt{2}}"),
        ("\\boxed{x^2+2x+1}", "(x+1)^2"),
        ("\\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
        ("\\boxed{x = 3}", "3"),
        ("\\boxed{7 \\text{ and } -5}", "-5,7"),
        ("\\boxed{(-2, -2)}", "-2,-2"),
        ("\\boxed{6 \\times 10^{13}}", "6e13"),
        ("\\boxed{85.71}", "\\frac{600}{7}"),  # a decimal to four significant figures
        ("\\boxed{\\frac{9}{3}}", "3"),  # an integer gold: values that are exactly the integer
        ("\\boxed{2^{10}}", "1024"),
        ("\\boxed{10!}", "3628800"),
        ("\\boxed{(2, 5]}", "2 < x \\le 5"),  # an inequality chain is its interval
        ("\\boxed{2 < x \\le 5}", "(2,5]"),
        ("\\boxed{x > 3}", "(3,\\infty)"),
        ("\\boxed{x < -1 \\text{ or } x > 2}", "(-\\infty,-1)\\cup(2,\\infty)"),
        ("\\boxed{\\frac{1}{\\pi}}", "0.3183"),  # closed forms in pi, e, i that evaluate to the gold
        ("\\boxed{e}", "2.7183"),
        ("\\boxed{e^{i\\pi}}", "-1"),
        ("\\boxed{i^2 + 6}", "5"),
        ("\\boxed{12^{\\mathrm{th}} \\text{ grade}}", "12"),
        ("\\boxed{E_1, E_2}", "E_{1},E_{2}"),
        ("Janet makes\n#### 18", "She sells 9 eggs.\n#### 18"),
        ("\\boxed{\\text{East}}", "\\text{east}"),
    ],
)
def test_grade_correct(completion, gold):
    assert grade(completion, gold)


@pytest.mark.parametrize(
    "completion, gold",
    [
        ("\\boxed{0.5}", "5"),
        ("\\boxed{102019}", "102018"),  # integers are exact
        ("\\boxed{6630.65}", "6630"),  # an integer gold rejects a non-integer, however close
        ("\\boxed{\\frac{69999}{7}}", "10000"),  # 9999.857...
        ("\\boxed{9999.9999999}", "10000"),
        ("\\boxed{\\sqrt{4.0001}}", "2"),
        ("\\boxed{(2, 5)}", "2 < x \\le 5"),  # inequality vs interval: the endpoints' brackets matter
        ("\\boxed{2 \\le x \\le 5}", "(2,5]"),
        ("\\boxed{x \\ge 3}", "(3,\\infty)"),
        ("\\boxed{x < -1}", "(-\\infty,-1)\\cup(2,\\infty)"),
        ("\\boxed{\\frac{1}{e}}", "0.3183"),  # a closed form of another value
        ("\\boxed{e^{i\\pi}}", "1"),
        ("\\boxed{x + 7}", "7"),  # a free variable is not a closed form
        ("\\boxed{\\infty}", "\\frac{41}{5}"),  # infinity is no number's closed form
        ("\\boxed{2000}", "20"),  # no 100x percentage leniency
        ("\\boxed{[2, \\infty)}", "(2,\\infty)"),
        ("\\boxed{x^2+1}", "x^2+2"),
        ("\\boxed{|x|}", "x"),
        ("\\boxed{(3, 2)}", "(2,3)"),
        ("\\boxed{1, 7}", "-7,-1,1,7"),
        ("The answer is 15 + 43", "58"),  # the question restated, not answered (seen on a distilled hybrid)
        ("\\boxed{3 \\times 4}", "12"),
        ("\\boxed{1,000 - 1}", "999"),
        ("no box at all", "3"),
        ("\\boxed{}", "0"),
        ("\\boxed{3}", ""),
    ],
)
def test_grade_wrong(completion, gold):
    assert not grade(completion, gold)


@pytest.mark.parametrize(
    "gold, pred, want",
    [
        ("\\frac{1}{2a}(\\exp{a*t}-\\exp{-a*t})", "\\frac{1}{a} \\sinh(at)", True),  # numeric identity
        ("5x-7y+11z+4=0", "-5x+7y-11z-4=0", True),  # the same equation up to sign
        ("5x-7y+11z+4=0", "20x-28y+44z+16=0", False),  # rescaled: not the requested form
        ("\\frac{37}{4}m", "\\frac{37m}{4}", True),  # m is a variable here, not metres
        ("\\frac{dM}{dt}=\\frac{10^{5}L_{\\odot}}{0.007c^{2}}", "\\frac{dM}{dt} = \\frac{10^8 L_{\\odot}}{7 c^2}", True),
        ("\\lambda_{\\text{red}}/\\sqrt{2}", "\\lambda_{\\text{red}} \\sqrt{3 - 2\\sqrt{2}}", False),
        ("x", "|x|", False),
        ("x", "\\sqrt{x^2}", False),
    ],
)
def test_worker_equivalence_rules(gold, pred, want):
    # the worker's logic itself, without the time limit (the slow path is timing-sensitive on a busy machine)
    from m1.eval._mv_worker import equivalent

    assert equivalent(gold, pred) is want


def test_worker_parses_once_per_answer_and_callers_cannot_touch_the_memo():
    from m1.eval import _mv_worker as w

    w._parse_cached.cache_clear()
    answers = ["\\frac{1}{2}", "0.5", "x+1", "1+x", "\\sqrt{4}"]
    for g in answers:  # every pair, as maj@k's groups meet them
        for p in answers:
            w.equivalent(g, p)
    info = w._parse_cached.cache_info()
    assert info.misses <= 2 * len(answers)  # one parse per answer and units setting, not one per pair
    assert info.hits > info.misses
    first = w._parse("x+1", False)
    first.clear()
    assert w._parse("x+1", False) and w.equivalent("x+1", "1+x")


def test_answers_equivalent_normalises_raw_strings():
    assert answers_equivalent("\\dfrac{1}{2}", "0.5")
    assert not answers_equivalent(None, "1")


# ---------------------------------------------------------------- no hangs

PATHOLOGICAL = {
    "power tower": "\\boxed{9^{9^{9^{9}}}}",
    "huge factorial": "\\boxed{1000000!}",
    "200k chars": "Let us think. " * 14_000 + "\\boxed{5}",
    "nested braces": "\\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}",
    "unbalanced open": "\\boxed{" + "{" * 5_000 + "\\frac{1}{2",
    "unbalanced close": "}" * 5_000 + "\\boxed{3}}}}" + "}" * 5_000,
    "empty box": "\\boxed{}",
    "latex garbage": "\\boxed{\\frac{\\sqrt{\\left(}{\\begin{matrix}&&\\\\\\end{pmatrix}^{_^_}}}",
    "many boxes": "\\boxed{1}" * 20_000,
    "exponent of a big number": "\\boxed{2^{123456789}}",
    "long expression": "\\boxed{" + "+".join(f"x_{{{i}}}^{{{i}}}" for i in range(300)) + "}",
}
GOLDS = ["5", "\\sqrt{2}", "x^2+1"]


def _grade_all_timed() -> dict:
    # the worker's start (importing sympy, seconds on a loaded machine) is not a hang: it comes first, untimed;
    # since grades wait for a starting worker, a first timed call could otherwise include it (a CI flake)
    from m1.eval.grader import warm_up

    warm_up()
    out = {}
    for name, text in PATHOLOGICAL.items():
        for gold in GOLDS:
            t0 = time.perf_counter()
            grade(text, gold)
            out[f"{name} / {gold}"] = time.perf_counter() - t0
    return out


def _assert_fast(times: dict) -> None:
    slow = {k: round(v, 2) for k, v in times.items() if v > NO_HANG_LIMIT_S}
    assert not slow, f"grade calls over {NO_HANG_LIMIT_S}s: {slow}"


def test_no_hang_main_thread():
    _assert_fast(_grade_all_timed())


def test_no_hang_in_thread():
    result = {}
    t = threading.Thread(target=lambda: result.update(_grade_all_timed()))
    t.start()
    t.join(timeout=120)
    assert not t.is_alive()
    _assert_fast(result)


def test_no_hang_in_worker_process():
    # a spawned pool worker: fresh interpreter, not the main thread of the parent
    with mp.get_context("spawn").Pool(1) as pool:
        times = pool.apply(_grade_all_timed)
    _assert_fast(times)


def test_time_limit_kills_a_stuck_comparison_and_recovers():
    pool = get_pool()
    before = pool.timeouts
    t0 = time.perf_counter()
    # bypasses the screening in grade(): sympy would compute 9^(9^(9^9)) in C for hours
    assert pool.compare("9^{9^{9^{9}}}", "1", timeout=0.5) is None
    assert time.perf_counter() - t0 < NO_HANG_LIMIT_S
    assert pool.timeouts == before + 1
    pool.warm_up()  # wait for the replacement the kill started
    assert grade("\\boxed{\\frac{\\sqrt{3}}{3}}", "\\frac{1}{\\sqrt{3}}")  # a fresh worker answers


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.lists(st.sampled_from(list("0123456789xyz+-*/^_{}()[],.=! ") + [
        "\\frac", "\\sqrt", "\\pi", "\\infty", "\\left(", "\\right)", "\\boxed{", "\\text{", "\\\\", "\\", "!"]),
        max_size=40).map("".join),
    gold=st.sampled_from(["1", "\\frac{1}{2}", "x+1", "(1,2)", "\\sqrt{3}"]),
)
def test_fuzz_grade_returns_bool_quickly(body, gold):
    t0 = time.perf_counter()
    r = grade("\\boxed{" + body + "}", gold)
    assert isinstance(r, bool)
    assert time.perf_counter() - t0 < NO_HANG_LIMIT_S


def test_a_slow_starting_worker_is_waited_for_not_graded_false(tmp_path, monkeypatch):
    """A worker still importing math-verify is not the answer's fault: the request waits for it, then gets its
    own time limit. Before, on a busy machine, each kill made the next verdicts False whatever the answers."""
    from m1.eval import grader_pool

    slow = tmp_path / "slow_worker.py"
    slow.write_text(f"import runpy, time\ntime.sleep(2.0)\nrunpy.run_path({grader_pool._WORKER_SCRIPT!r}, run_name='__main__')\n")
    monkeypatch.setattr(grader_pool, "_WORKER_SCRIPT", str(slow))
    pool = grader_pool.VerifyPool()
    try:
        assert pool.compare("\\frac{1}{2}", "\\frac{2}{4}", timeout=0.5) is True
        assert pool.compare("\\frac{1}{2}", "\\frac{1}{3}", timeout=0.5) is False
    finally:
        pool.close()


def test_long_ratio_chains_are_screened_and_short_ratios_are_not():
    """Looping samples end in answers like "1:1:1:...:5:1" that cost math-verify its whole time limit (a 32,000-sample
    comparison spent most of 12 minutes on them, 2026-12-07); real ratios are short."""
    from m1.eval.answer import is_pathological

    assert is_pathological(":".join(["1"] * 40)) and is_pathological("25:25:21:21:20:22:25:28:22")
    assert not is_pathological("3:4:5") and not is_pathological("1:2:3:4:5:6:7:8")
    assert answers_equivalent("3:4", "3:4")


@pytest.mark.parametrize(
    "answer, want",
    [
        ("15 + 43", True),
        ("3 \\times 4", True),
        ("-2 \\cdot 7", True),
        ("1,000 - 1", True),
        ("10 − 3", True),
        ("58", False),
        ("-5", False),
        ("\\frac{6}{3}", False),  # a closed form, left to math-verify
        ("2^{3}", False),
        ("x + 7", False),
        ("15 + 43 = 58", False),  # an equation chain: its last side is the answer
    ],
)
def test_unevaluated_arithmetic_is_recognised(answer, want):
    from m1.eval.answer import is_unevaluated_arithmetic

    assert is_unevaluated_arithmetic(answer) is want


def test_a_numeric_gold_is_not_met_by_the_computation_that_gives_it():
    assert grade("The answer is 58", "58")
    assert grade("\\boxed{15 + 43 = 58}", "58")
    assert not grade("The answer is 15 + 43", "58")
    assert grade("\\boxed{\\frac{6}{3}}", "2")  # closed forms still compare by value
