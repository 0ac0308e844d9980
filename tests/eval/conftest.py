import pytest

from m1.eval import warm_up


@pytest.fixture(autouse=True, scope="session")
def _warm_grader():
    # A cold math-verify worker needs ~0.5 s (more on a loaded machine) to import; grade()
    # never waits past its limit, so tests start it first, as the eval loop does.
    warm_up()
