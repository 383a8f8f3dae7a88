import numpy as np
import pytest

from neurohorizon.data.binning import (
    BinningError,
    bin_recording,
    bin_spikes,
    bin_spikes_at_edges,
    horizon_label,
    n_bins,
)
from neurohorizon.data.recording import Recording


def _random_spikes(rng, n_units=7, duration=10.0, rate=20.0):
    n = rng.poisson(rate * n_units * duration)
    times = np.sort(rng.random(n) * duration)
    # put some spikes exactly on the 20 ms grid to exercise edge handling
    on_grid = rng.integers(0, int(duration / 0.02), size=50) * 0.02
    times = np.sort(np.concatenate([times, on_grid]))
    units = rng.integers(0, n_units, len(times))
    return times, units


def _histogram_counts(times, units, n_units, edges):
    """Independent reference: one np.histogram per unit (closed last edge excluded below)."""
    out = np.zeros((len(edges) - 1, n_units), np.int64)
    inside = times < edges[-1]  # np.histogram's last bin is closed; ours is half-open
    for u in range(n_units):
        out[:, u] = np.histogram(times[inside & (units == u)], bins=edges)[0]
    return out


def test_n_bins_whole_numbers_only():
    assert n_bins(0.5, 0.02) == 25
    assert n_bins(1.0, 0.02) == 50
    with pytest.raises(BinningError, match="510 ms is not a whole number of 20 ms bins"):
        n_bins(0.51, 0.02)
    with pytest.raises(BinningError):
        n_bins(0.5, 0.0)
    for bad in (0.0, -0.1, float("nan")):
        with pytest.raises(BinningError, match="horizon must be a positive number"):
            n_bins(bad, 0.02, what="horizon")
    with pytest.raises(BinningError, match="bin size must be a positive number, got nan"):
        n_bins(0.5, float("nan"))


def test_horizon_label():
    assert horizon_label(12) == "12 bins (240 ms)"
    assert horizon_label(50) == "50 bins (1000 ms)"


def test_bin_spikes_matches_histogram():
    rng = np.random.default_rng(0)
    times, units = _random_spikes(rng)
    for start in (0.0, 1.234567, 3.0):
        got = bin_spikes(times, units, 7, start=start, n_steps=75, bin_size=0.02)
        edges = start + np.arange(76) * 0.02
        np.testing.assert_array_equal(got, _histogram_counts(times, units, 7, edges))
        assert got.dtype == np.int32 and got.shape == (75, 7)


def test_edges_are_half_open():
    times = np.array([0.0, 0.02, 0.039999, 0.04, 0.06])
    units = np.zeros(5, np.int64)
    got = bin_spikes(times, units, 1, start=0.0, n_steps=3, bin_size=0.02)[:, 0]
    np.testing.assert_array_equal(got, [1, 2, 1])  # 0.06 is the closed end: excluded


def test_bin_spikes_at_edges_equals_bin_spikes():
    rng = np.random.default_rng(1)
    times, units = _random_spikes(rng)
    a = bin_spikes(times, units, 7, start=2.0, n_steps=40)
    b = bin_spikes_at_edges(times, units, 7, 2.0 + np.arange(41) * 0.02)
    np.testing.assert_array_equal(a, b)


def test_bin_recording_matches_window_binning_and_histogram():
    rng = np.random.default_rng(2)
    times, units = _random_spikes(rng, duration=30.0)
    rec = Recording.from_arrays(
        session_id="s",
        spike_times=times,
        unit_ids=np.arange(7),
        spike_units=units,
        domain=(0.0, 30.0),
    )
    full = bin_recording(rec, 0.02)
    assert full.shape == (1500, 7)
    np.testing.assert_array_equal(full, bin_spikes(times, units, 7, start=0.0, n_steps=1500))
    edges = np.arange(1501) * 0.02
    np.testing.assert_array_equal(full, _histogram_counts(times, units, 7, edges))
    part = bin_recording(rec, 0.02, start=1.01, end=2.0)  # 49 whole bins, last partial dropped
    assert part.shape == (49, 7)
    np.testing.assert_array_equal(part, bin_spikes(times, units, 7, start=1.01, n_steps=49))
    with pytest.raises(BinningError, match="shorter than one"):
        bin_recording(rec, 0.02, start=1.0, end=1.01)


def test_standard_horizons_are_240_500_1000_ms_in_any_bin_size():
    from neurohorizon.data.binning import standard_horizons
    from neurohorizon.evaluation.evaluation_report import _horizon_note

    assert standard_horizons(0.02) == (12, 25, 50)
    assert standard_horizons(0.01) == (24, 50, 100)  # a 10 ms run is scored out to 1000 ms too
    assert standard_horizons(0.05) == (5, 10, 20)
    assert _horizon_note([12, 25, 50], 0.02) == "12 bins are 240 ms (the '250 ms' horizon)."
    assert _horizon_note([24, 50, 100], 0.01) == "24 bins are 240 ms (the '250 ms' horizon)."
    assert _horizon_note([10], 0.05) == "10 bins are 500 ms."
