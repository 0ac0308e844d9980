"""Math evaluation: answer grading, pass@k / maj@k / verify@k, benchmarks and scaling curves.

Only the light, dependency-free names are exported here; the CLI, generation backends and
verifiers (which need torch and transformers) are imported from their own modules.
"""

from m1.eval.answer import extract_answer, normalize_answer
from m1.eval.grader import answers_equivalent, grade, warm_up
from m1.eval.metrics import maj_at_k, majority_vote, pass_at_k, verify_at_k

__all__ = [
    "extract_answer",
    "normalize_answer",
    "grade",
    "answers_equivalent",
    "warm_up",
    "pass_at_k",
    "majority_vote",
    "maj_at_k",
    "verify_at_k",
]
