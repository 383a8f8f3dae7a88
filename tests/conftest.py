"""Shared pytest fixtures."""

from pathlib import Path

import numpy as np
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


def _context_window(rec, onset: float, n: int = 25, bin_size: float = 0.02):
    """Context and future bin starts of a window at `onset` (n bins each), and the context's counts (n, N)."""
    context_starts = onset + np.arange(-n, 0) * bin_size
    counts = np.zeros((n, rec.n_units))
    k = np.floor((rec.spike_times - context_starts[0]) / bin_size).astype(int)
    ok = (k >= 0) & (k < n)
    np.add.at(counts, (k[ok], rec.spike_units[ok]), 1.0)
    return context_starts, onset + np.arange(n) * bin_size, counts


@pytest.fixture
def context_window():
    """`_context_window`: binned context of a window, for the factor priors' tests."""
    return _context_window
