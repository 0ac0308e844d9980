import itertools
from fractions import Fraction
from math import comb

import pytest

from m1.eval import maj_at_k, majority_vote, pass_at_k, verify_at_k
from m1.eval.metrics import equivalence_groups, k_values, mean_interval


def brute_pass_at_k(n: int, c: int, k: int) -> Fraction:
    """Fraction of all size-k subsets of n samples (c correct) holding a correct one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return Fraction(sum(any(samples[i] for i in s) for s in subsets), len(subsets))


@pytest.mark.parametrize("n, c, k", [(1, 0, 1), (1, 1, 1), (5, 2, 1), (5, 2, 3), (6, 1, 6), (8, 3, 4), (10, 0, 5), (10, 10, 1), (9, 4, 2)])
def test_pass_at_k_matches_enumeration(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(float(brute_pass_at_k(n, c, k)), abs=1e-15)


@pytest.mark.parametrize("n, c, k", [(64, 1, 1), (64, 5, 8), (1024, 3, 512), (200, 199, 100)])
def test_pass_at_k_closed_form_large_n(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k), rel=1e-12)


def test_pass_at_1_is_fraction_correct():
    assert pass_at_k(64, 16, 1) == 0.25


@pytest.mark.parametrize("n, c, k", [(4, 5, 1), (4, 1, 0), (4, 1, 5), (4, -1, 1)])
def test_pass_at_k_rejects_bad_arguments(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_majority_vote_pools_equivalent_answers():
    # three spellings of 1/2 outvote two 3s
    assert majority_vote(["3", "1/2", "3", "0.5", "\\frac{1}{2}"]) == "1/2"


def test_majority_vote_ties_go_to_earliest_and_none_never_wins():
    assert majority_vote(["4", "7", "7", "4"]) == "4"
    assert majority_vote([None, None, None, "2"]) == "2"
    assert majority_vote([None, None]) is None
    assert majority_vote([]) is None


def test_equivalence_groups():
    assert equivalence_groups(["0.5", "2", None, "\\frac12", "2.0"]) == [0, 1, None, 0, 1]


def test_maj_at_k_pools_and_averages_subsets():
    answers = ["1/2", "0.5", "\\frac{1}{2}", "3", "3"]
    correct = [True, True, True, False, False]
    assert maj_at_k(answers, correct, k=5) == 1.0  # pooled 1/2 has 3 votes vs 2
    # without pooling, "3" would win k=5; per-subset values are averaged and seeded
    v = maj_at_k(answers, correct, k=3, n_subsets=100, seed=1)
    assert 0.0 < v < 1.0
    assert v == maj_at_k(answers, correct, k=3, n_subsets=100, seed=1)


def test_maj_at_1_equals_pass_at_1_when_answers_present():
    answers = ["1", "2", "1", "3"]
    correct = [True, False, True, False]
    assert maj_at_k(answers, correct, k=1, n_subsets=2000, seed=0) == pytest.approx(0.5, abs=0.05)


def test_verify_at_k_picks_the_best_scored_sample():
    correct = [False, True, False]
    assert verify_at_k([0.1, 0.9, 0.5], correct, k=3) == 1.0
    assert verify_at_k([0.9, 0.1, 0.5], correct, k=3) == 0.0


def test_mean_interval_contains_mean_and_narrows():
    vals = [0.0, 1.0] * 50
    m, lo, hi = mean_interval(vals)
    assert m == 0.5 and lo < 0.5 < hi
    m2, lo2, hi2 = mean_interval(vals * 10)
    assert hi2 - lo2 < hi - lo


def test_k_values():
    assert k_values(64) == [1, 2, 4, 8, 16, 32, 64]
    assert k_values(6) == [1, 2, 4, 6]
    assert k_values(1) == [1]


def test_paired_difference_interval_and_constant_baseline():
    from m1.eval.metrics import constant_answer_baseline, paired_difference_interval

    a = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0]
    assert paired_difference_interval(a, a) == (0.0, 0.0, 0.0)
    mean, lo, hi = paired_difference_interval(a, [x - 0.5 for x in a])
    assert mean == lo == hi == 0.5  # a constant shift has no paired spread
    mean, lo, hi = paired_difference_interval([1, 1, 0, 1], [0, 1, 0, 0])
    assert mean == 0.5 and 0 <= lo <= mean <= hi <= 1
    with pytest.raises(ValueError):
        paired_difference_interval([1.0], [1.0, 0.0])
    assert constant_answer_baseline(["1", "2", "1", "3"]) == ("1", 0.5)
    assert constant_answer_baseline(["2", "1"]) == ("2", 0.5)  # ties: the first seen
    assert constant_answer_baseline([]) == (None, 0.0)


def test_weighted_vote_lets_the_verifier_break_a_tie_and_agreement_outvote_it():
    from m1.eval.metrics import weighted_vote_at_k

    # two answers, one sample each: a tie that plain voting gives to the earliest ("3", wrong);
    # the verifier prefers "4", so the weighted vote picks it
    assert weighted_vote_at_k(["3", "4"], [-2.0, 2.0], [False, True], 2) == 1.0
    # three samples agree on "5" (right) with middling scores; one confident wrong "6" loses to them
    assert weighted_vote_at_k(["5", "5", "5", "6"], [0.0, 0.0, 0.0, 5.0], [True, True, True, False], 4) == 1.0
    # best-of-k would trust the confident wrong sample
    from m1.eval.metrics import verify_at_k

    assert verify_at_k([0.0, 0.0, 0.0, 5.0], [True, True, True, False], 4) == 0.0
    # equivalent answers pool their weight ("0.5" and "1/2"); None never wins
    assert weighted_vote_at_k(["0.5", "1/2", "2", None], [0.0, 0.0, 1.0, 9.0], [True, True, False, False], 4) == 1.0


def test_weighted_vote_equals_a_direct_count_over_every_subset():
    """Against a direct count with k = n (the one subset, so no sampling of subsets)."""
    import math
    import random

    from m1.eval.metrics import weighted_vote_at_k

    rng = random.Random(3)
    for _ in range(20):
        n = 5
        answers = [rng.choice(["1", "2", "3", None]) for _ in range(n)]
        scores = [rng.uniform(-3, 3) for _ in range(n)]
        correct = [a == "2" for a in answers]
        got = weighted_vote_at_k(answers, scores, correct, n)  # k = n: the one full subset
        w = {}
        first = {}
        for i, a in enumerate(answers):
            if a is None:
                continue
            w[a] = w.get(a, 0.0) + 1 / (1 + math.exp(-scores[i]))
            first.setdefault(a, i)
        want = float(bool(w) and max(w, key=lambda a: (w[a], -first[a])) == "2")
        assert got == want


def test_summary_intervals_of_pass_and_maj_at_k():
    from m1.eval.samples import summarize_samples

    # p0: 3 of 4 right, answers 1,1,1,2 (majority right); p1: 1 of 4 right, answers 5,6,6,7 (gold 5; majority 6 wrong)
    rows = [{"benchmark": "b", "problem_id": p, "sample": i, "answer": a, "correct": c, "num_tokens": 3,
             "finish_reason": "stop", "gen_time_s": 0.1}
            for p, spec in (("p0", [("1", True), ("1", True), ("1", True), ("2", False)]),
                            ("p1", [("5", True), ("6", False), ("6", False), ("7", False)]))
            for i, (a, c) in enumerate(spec)]
    s = summarize_samples(rows, 4)
    assert s["pass@k"]["1"] == 0.5 and s["pass@k"]["4"] == 1.0 and s["maj@k"]["4"] == 0.5
    assert s["pass@k_ci95"]["1"] == [0.25, 0.75]  # two problems: the bootstrap draws p0 twice, p1 twice, or one each
    assert s["pass@k_ci95"]["4"] == [1.0, 1.0] and s["maj@k_ci95"]["4"] == [0.0, 1.0]
    assert "chance" not in s  # rows without golds: no chance line
    for r in rows:
        r["gold"] = "1" if r["problem_id"] == "p0" else "5"
    s = summarize_samples(rows, 4)
    assert s["chance"] == {"pass@k": {"1": 0.0, "2": 0.0, "4": 0.0}, "constant_answer": "1", "constant_accuracy": 0.5}


def test_guessing_pass_at_k_pins_the_closed_form_and_matches_simulated_guessing():
    """Each guess is drawn from the other problems' golds: "1" twice, "2", "3" gives one problem in
    two a 1/3 chance a guess; a simulated guesser lands on the same numbers."""
    import random

    from m1.eval.metrics import guessing_pass_at_k

    got = guessing_pass_at_k(["1", "1", "2", "3"], [1, 2])
    assert got[1] == pytest.approx(1 / 6) and got[2] == pytest.approx(2 * (1 - (2 / 3) ** 2) / 4)
    assert guessing_pass_at_k(["7"], [1, 4]) == {1: 0.0, 4: 0.0}
    assert guessing_pass_at_k(["a", "b", "c"], [8]) == {8: 0.0}  # no answer repeats: guessing never hits

    rng = random.Random(0)
    golds = [str(rng.choice([1, 2, 2, 3, 5, 8, 13, 40, 41])) for _ in range(30)]
    k, trials, hits = 4, 4000, 0
    for _ in range(trials):
        i = rng.randrange(len(golds))
        others = golds[:i] + golds[i + 1:]
        hits += any(rng.choice(others) == golds[i] for _ in range(k))
    assert hits / trials == pytest.approx(guessing_pass_at_k(golds, [k])[k], abs=0.03)


def test_report_shows_the_chance_column_and_line(tmp_path):
    from m1.eval.report import write_report

    s = {"problems": 2, "n": 2, "pass@1": {"mean": 0.5, "ci95": [0.0, 1.0]}, "pass@k": {"1": 0.5, "2": 0.75},
         "maj@k": {"1": 0.5, "2": 0.5}, "mean_tokens": 3, "truncated_frac": 0.0, "no_answer_frac": 0.0, "samples_per_s": 1.0,
         "chance": {"pass@k": {"1": 0.125, "2": 0.25}, "constant_answer": "5", "constant_accuracy": 0.5}}
    text = write_report({"toy": s}, tmp_path, "t").read_text()
    assert "| k | pass@k | maj@k | chance pass@k |" in text and "| 2 | 75.0 | 50.0 | 25.0 |" in text
    assert "always answering '5' scores 50.0%" in text and (tmp_path / "curves.png").exists()


def test_answer_groups_over_threads_equal_the_serial_groups():
    """Problems spread over threads give exactly the groups one thread gives, on answers that need math-verify
    (fractions in LaTeX, equivalent forms, garbage) as well as plain numbers."""
    import random

    from m1.eval.metrics import equivalence_groups
    from m1.eval.samples import answer_groups

    rng = random.Random(0)
    pool = ["\\frac{1}{2}", "0.5", "\\frac{2}{4}", "x+1", "1+x", "\\sqrt{2}", "2^{1/2}", "3", "3.0", None, "2n + 2m", "7"]
    by = {str(p): [{"answer": rng.choice(pool)} for _ in range(6)] for p in range(12)}
    serial = answer_groups(by, 6, threads=1)
    assert answer_groups(by, 6, threads=4) == serial
    assert serial == {p: equivalence_groups([r["answer"] for r in rs]) for p, rs in by.items()}
    # the groups are real: 1/2, 0.5 and 2/4 share one
    g = answer_groups({"a": [{"answer": a} for a in ["\\frac{1}{2}", "0.5", "\\frac{2}{4}", "7"]]}, 4)["a"]
    assert g[0] == g[1] == g[2] != g[3]
