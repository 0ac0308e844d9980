"""m1.bench.common: what every benchmark record says about the tree it measured."""

from m1.bench.common import m1_commit


def test_m1_commit_takes_the_variable_over_git(monkeypatch):
    """A tree copied to the GPU machine may carry an older commit's git metadata: M1_COMMIT names the tree."""
    monkeypatch.setenv("M1_COMMIT", "abc1234")
    assert m1_commit() == "abc1234"
    monkeypatch.delenv("M1_COMMIT")
    got = m1_commit()
    assert got is None or (got != "abc1234" and len(got) >= 7)
