"""Ground truth access: exact expected counts and the generator's parameters."""

from __future__ import annotations

import json

import numpy as np

from neurohorizon.data.binning import DEFAULT_BIN_SIZE, BinningError
from neurohorizon.data.recording import Recording, RecordingError

PARAMS_KEY = "generator_params"  # JSON str attribute on the Data (an HDF5 attr on save)


def _grid_steps(value: float, dt: float, what: str) -> int:
    steps = int(round(value / dt))
    if abs(steps * dt - value) > 1e-6 * max(dt, abs(value)):
        raise BinningError(
            f"{what} {value:.6f} s is not on the {dt * 1000:g} ms grid of the stored true rate"
        )
    return steps


def expected_counts(
    rec: Recording,
    *,
    start: float,
    n_steps: int,
    bin_size: float = DEFAULT_BIN_SIZE,
) -> np.ndarray:
    """True expected count per (bin, unit) on the grid start + k * bin_size.

    Exact sums of rate * dt over the piecewise-constant fine grid of `true_rate`;
    for every noise family this is the true mean (not the likelihood's parameter).

    Returns:
        (n_steps, N) float64.
    """
    if not rec.has_true_rate:
        raise RecordingError(f"{rec.source}: no true_rate (not a synthetic recording)")
    tr = rec.data.true_rate
    rates = np.asarray(tr.rates, dtype=np.float64)
    dt = 1.0 / float(tr.sampling_rate)
    t0 = float(tr.domain.start[0])
    if n_steps < 1:
        raise BinningError(f"n_steps must be >= 1, got {n_steps}")
    first = _grid_steps(start - t0, dt, f"{rec.source}: window start {start:.6f} s minus t0")
    per_bin = _grid_steps(bin_size, dt, f"{rec.source}: bin size")
    if per_bin < 1:
        raise BinningError(f"bin size {bin_size} s is below the fine grid step {dt} s")
    last = first + n_steps * per_bin
    if first < 0 or last > len(rates):
        raise BinningError(
            f"{rec.source}: window [{start:.3f}, {start + n_steps * bin_size:.3f}) s is outside "
            f"the true rate [{t0:.3f}, {t0 + len(rates) * dt:.3f}) s"
        )
    block = rates[first:last].reshape(n_steps, per_bin, rates.shape[1])
    return block.sum(axis=1) * dt


def generator_params(rec: Recording) -> dict:
    """Parameters the recording was generated with (noise family, dispersion, sizes...)."""
    if PARAMS_KEY not in rec.data:
        raise RecordingError(f"{rec.source}: no '{PARAMS_KEY}' (not a synthetic recording)")
    raw = getattr(rec.data, PARAMS_KEY)
    return json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))


def attach_params(rec: Recording, params: dict) -> Recording:
    """Store `params` as a JSON string attribute, which survives HDF5 save/load."""
    setattr(rec.data, PARAMS_KEY, json.dumps(params, sort_keys=True))
    return rec
