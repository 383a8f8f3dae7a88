"""Exact spike binning and whole-number-of-bins checks."""

from __future__ import annotations

import math

import numpy as np

DEFAULT_BIN_SIZE = 0.020  # s
STANDARD_HORIZONS = (12, 25, 50)  # bins: 240, 500 and 1000 ms at 20 ms
STANDARD_HORIZONS_S = (0.24, 0.5, 1.0)  # the same horizons in time, for any bin size


class BinningError(ValueError):
    """A duration that is not a whole number of bins, or an impossible window."""


def n_bins(duration: float, bin_size: float, *, what: str = "duration") -> int:
    """Number of bins in `duration`; raises unless it is a whole number of bins.

    Never rounds a window to the nearest bin: 510 ms at 20 ms bins is an error.
    """
    if not 0 < bin_size < math.inf:  # also NaN
        raise BinningError(f"bin size must be a positive number, got {bin_size}")
    if not 0 < duration < math.inf:
        raise BinningError(f"{what} must be a positive number, got {duration * 1000:g} ms")
    ratio = duration / bin_size
    count = int(round(ratio))
    if count <= 0 or abs(ratio - count) > 1e-6:
        raise BinningError(
            f"{what} of {duration * 1000:g} ms is not a whole number of "
            f"{bin_size * 1000:g} ms bins ({ratio:.4f} bins)"
        )
    return count


def standard_horizons(bin_size: float = DEFAULT_BIN_SIZE) -> tuple[int, ...]:
    """The 240 / 500 / 1000 ms horizons in whole bins of `bin_size` s: (12, 25, 50) at 20 ms."""
    return tuple(sorted({max(1, int(round(s / bin_size))) for s in STANDARD_HORIZONS_S}))


def horizon_label(n_steps: int, bin_size: float = DEFAULT_BIN_SIZE) -> str:
    """Honest label for a horizon: '12 bins (240 ms)'."""
    return f"{n_steps} bins ({n_steps * bin_size * 1000:g} ms)"


def bin_spikes(
    spike_times: np.ndarray,
    spike_units: np.ndarray,
    n_units: int,
    *,
    start: float,
    n_steps: int,
    bin_size: float = DEFAULT_BIN_SIZE,
) -> np.ndarray:
    """Count spikes per (bin, unit) on the grid `start + k * bin_size`, k = 0..n_steps.

    Bins are half-open [edge_k, edge_k+1). `spike_times` must be sorted; only the
    slice inside the window is touched, so cost is O(log S + spikes in window).

    Returns:
        (n_steps, n_units) int32 counts.
    """
    edges = start + np.arange(n_steps + 1) * bin_size
    return bin_spikes_at_edges(spike_times, spike_units, n_units, edges)


def bin_spikes_at_edges(
    spike_times: np.ndarray, spike_units: np.ndarray, n_units: int, edges: np.ndarray
) -> np.ndarray:
    """Count spikes per (bin, unit) for explicit sorted bin `edges` (n_steps + 1,).

    Bins are half-open [edges[k], edges[k+1]). Used by the window loader so that the
    forecast onset is an exact edge (edges = onset + k * bin_size, k = -Tc..T).

    Returns:
        (n_steps, n_units) int32 counts.
    """
    n_steps = len(edges) - 1
    lo, hi = np.searchsorted(spike_times, edges[[0, -1]], side="left")
    times = spike_times[lo:hi]
    units = spike_units[lo:hi]
    # searchsorted against the exact edges avoids floor((t - start)/bin) rounding at edges
    bins = np.searchsorted(edges, times, side="right") - 1
    flat = np.bincount(bins * n_units + units, minlength=n_steps * n_units)
    return flat.reshape(n_steps, n_units).astype(np.int32)


def bin_recording(
    recording,
    bin_size: float = DEFAULT_BIN_SIZE,
    *,
    start: float | None = None,
    end: float | None = None,
) -> np.ndarray:
    """Bin a whole recording (or [start, end)) on the grid `start + k * bin_size`.

    The last partial bin is dropped. Bin index is floor((t - start) / bin_size), then
    corrected against the exact edges so results match `bin_spikes` bit for bit.

    Returns:
        (T, N) int32 counts, T = floor((end - start) / bin_size).
    """
    if not bin_size > 0:
        raise BinningError(f"{recording.source}: bin size must be positive, got {bin_size * 1000:g} ms")
    d_start, d_end = recording.domain
    start = d_start if start is None else float(start)
    end = d_end if end is None else float(end)
    n_steps = int(np.floor((end - start) / bin_size + 1e-9))
    if n_steps <= 0:
        raise BinningError(
            f"{recording.source}: [{start:.3f}, {end:.3f}] s is shorter than one "
            f"{bin_size * 1000:g} ms bin"
        )
    times, units, n_units = recording.spike_times, recording.spike_units, recording.n_units
    last = start + n_steps * bin_size
    lo, hi = np.searchsorted(times, [start, last], side="left")
    times, units = times[lo:hi], units[lo:hi]
    idx = np.floor((times - start) / bin_size).astype(np.int64)
    idx = np.clip(idx, 0, n_steps - 1)
    # fix the rare float disagreements with the exact edges start + k * bin_size
    idx -= times < start + idx * bin_size
    idx += times >= start + (idx + 1) * bin_size
    flat = np.bincount(idx * n_units + units, minlength=n_steps * n_units)
    return flat.reshape(n_steps, n_units).astype(np.int32)
