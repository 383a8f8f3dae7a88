"""Shared pytest fixtures."""

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """Path to ../shared/data (real recordings); skips the test when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="module")
def reach_rec():
    """A small synthetic reach recording (30 units, 8 conditions x 5 trials)."""
    from neurohorizon.data.synthetic import make_reach

    return make_reach(n_neurons=30, trials_per_condition=5, seed=4)


@pytest.fixture(scope="module")
def reach_truth(reach_rec):
    """Its re-simulated generator internals (the causal oracle's and the observer's input)."""
    from neurohorizon.data.synthetic.causal import ReachTruth

    return ReachTruth(reach_rec)
