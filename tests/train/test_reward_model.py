"""`m1.train.reward_model`: a reward model trained on graded samples loads as m1.eval's verifier."""

from __future__ import annotations

from m1.eval.verifiers import RewardModelVerifier
from m1.train.reward_model import LabelledSample, RewardModelConfig, samples_from_rows, train_reward_model

from tests.helpers import save_tiny_model


def test_train_verifier_saves_a_checkpoint_the_eval_verifier_scores_with(tmp_path):
    base = save_tiny_model(tmp_path / "base")
    data = [LabelledSample("What is 1+1?", "1+1=2 \\boxed{2}", True), LabelledSample("What is 1+1?", "\\boxed{3}", False),
            LabelledSample("What is 2+1?", "\\boxed{3}", True)]
    cfg = RewardModelConfig(base=str(base), out=str(tmp_path / "rm"), steps=3, batch_size=2, log_every=1, seed=0)
    r = train_reward_model(cfg, data)
    assert r.samples == 3 and abs(r.positive_fraction - 2 / 3) < 1e-9
    assert [s for s, _ in r.losses] == [0, 1, 2]
    again = train_reward_model(RewardModelConfig(**{**cfg.__dict__, "out": str(tmp_path / "rm2")}), data)
    assert again.losses == r.losses  # seeded
    v = RewardModelVerifier(str(tmp_path / "rm"), max_length=256)
    assert isinstance(v.score("What is 1+1?", "\\boxed{2}"), float)


def test_samples_from_rows():
    rows = [{"problem_id": "0", "text": "t", "correct": True}, {"problem_id": "1", "text": "u", "correct": False}]
    assert samples_from_rows(rows, {"0": "a", "1": "b"}) == [LabelledSample("a", "t", True), LabelledSample("b", "u", False)]
