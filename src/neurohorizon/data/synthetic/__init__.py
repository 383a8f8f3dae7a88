"""Synthetic recordings with ground truth: the default data and the oracle for every metric.

`generate("reach" | "lorenz", seed=..., **kwargs)` returns a `Recording` whose
`true_rate` (T, N) Hz is piecewise constant on a 200 Hz (5 ms) grid. Spikes are drawn
from exactly those rates, so `expected_counts` (exact sums of rate * dt) is the true
mean count of any bin on the 5 ms grid, under every noise family (see `noise`).
For non-Poisson families the mean is exact but the Poisson likelihood at the true
mean is not the true likelihood. Family parameters and sizes are stored as a JSON
string attribute (`generator_params(rec)`), which survives HDF5 save/load.
"""

from __future__ import annotations

from neurohorizon.data.recording import Recording
from neurohorizon.data.synthetic.common import FINE_DT, FINE_RATE_HZ
from neurohorizon.data.synthetic.lorenz import make_lorenz
from neurohorizon.data.synthetic.noise import NOISE_FAMILIES, noise_params, sample_spikes
from neurohorizon.data.synthetic.oracle import expected_counts, generator_params
from neurohorizon.data.synthetic.reach import make_reach

GENERATORS = {"reach": make_reach, "lorenz": make_lorenz}


def generate(name: str, *, seed: int = 0, **kwargs) -> Recording:
    """Build the named synthetic recording ("reach" or "lorenz"); kwargs go to make_<name>."""
    if name not in GENERATORS:
        raise ValueError(f"unknown synthetic dataset {name!r}; choose one of {sorted(GENERATORS)}")
    return GENERATORS[name](seed=seed, **kwargs)


__all__ = [
    "FINE_DT",
    "FINE_RATE_HZ",
    "GENERATORS",
    "NOISE_FAMILIES",
    "expected_counts",
    "generate",
    "generator_params",
    "make_lorenz",
    "make_reach",
    "noise_params",
    "sample_spikes",
]
