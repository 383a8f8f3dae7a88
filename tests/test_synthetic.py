"""Synthetic generators: determinism, realism, exact oracle and the noise families."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.special import gammaln
from torch_brain.data import Data

from neurohorizon.data.binning import BinningError, bin_spikes
from neurohorizon.data.recording import Recording, RecordingError
from neurohorizon.data.synthetic import (
    FINE_RATE_HZ,
    NOISE_FAMILIES,
    expected_counts,
    generate,
    generator_params,
    make_lorenz,
    make_reach,
    sample_spikes,
)
from neurohorizon.data.synthetic.lorenz import lorenz_trajectory

BIN = 0.02
SMALL = dict(n_neurons=20, trials_per_condition=2)


def all_counts(rec):
    n = int(round(rec.duration / BIN))
    return bin_spikes(rec.spike_times, rec.spike_units, rec.n_units, start=0.0, n_steps=n)


@pytest.fixture(scope="module")
def reach():
    """Default network and sizes, fewer trials (~190 s): the statistics are per bin."""
    return make_reach(trials_per_condition=10, seed=3)


# ------------------------------------------------------------------ determinism
@pytest.mark.parametrize("name,kw", [("reach", SMALL), ("lorenz", dict(n_neurons=10, duration=20))])
def test_same_seed_identical_different_seed_differs(name, kw):
    a, b, c = (
        generate(name, seed=5, **kw),
        generate(name, seed=5, **kw),
        generate(name, seed=6, **kw),
    )
    np.testing.assert_array_equal(a.spike_times, b.spike_times)
    np.testing.assert_array_equal(a.spike_units, b.spike_units)
    np.testing.assert_array_equal(a.data.true_rate.rates, b.data.true_rate.rates)
    assert generator_params(a) == generator_params(b)
    assert len(a.spike_times) != len(c.spike_times) or not np.array_equal(
        a.spike_times, c.spike_times
    )
    assert not np.array_equal(a.data.true_rate.rates, c.data.true_rate.rates)


def test_noise_family_changes_spikes_not_rates():
    recs = {fam: make_reach(noise=fam, seed=2, **SMALL) for fam in NOISE_FAMILIES}
    ref = recs["poisson"]
    for fam, rec in recs.items():
        np.testing.assert_array_equal(rec.data.true_rate.rates, ref.data.true_rate.rates)
        np.testing.assert_array_equal(rec.trials.start, ref.trials.start)
        assert generator_params(rec)["noise"] == fam
        if fam != "poisson":
            assert not np.array_equal(rec.spike_times, ref.spike_times)
    assert generator_params(recs["gamma_poisson"])["alpha"] == 1.0
    assert generator_params(recs["zero_inflated"])["pi"] == 0.2
    assert generator_params(recs["refractory"])["shape"] == 3.0
    assert generator_params(ref)["poisson_likelihood_is_exact"] is True
    assert generator_params(recs["refractory"])["poisson_likelihood_is_exact"] is False


# ---------------------------------------------------------------- reach realism
def test_reach_trial_structure(reach):
    tr = reach.trials
    assert len(tr.start) == 8 * 10
    labels = np.unique(tr.condition)
    assert list(labels) == [f"reach_{d:03d}" for d in range(0, 360, 45)]
    assert set(tr.events) == {"target_on", "go_cue", "move"}
    ev = tr.events
    assert (tr.start < ev["target_on"]).all() and (ev["target_on"] < ev["go_cue"]).all()
    assert (ev["go_cue"] < ev["move"]).all() and (ev["move"] < tr.end).all()
    assert (tr.end[:-1] < tr.start[1:]).all()  # inter-trial gaps
    rt = ev["move"] - ev["go_cue"]
    assert rt.min() >= 0.22 - 1e-9 and rt.max() <= 0.45 + 1e-9 and rt.std() > 0.01
    for t in (tr.start, tr.end, *ev.values()):
        steps = t * FINE_RATE_HZ
        np.testing.assert_allclose(steps, np.round(steps), atol=1e-6)  # on the 5 ms grid
    assert 2.0 < np.mean(np.diff(tr.start)) < 2.8  # ~2.4 s per trial incl. gap
    assert reach.data.hand_vel.values.shape[1] == 2


def test_reach_rates_and_sparsity_are_realistic(reach):
    rates = np.asarray(reach.data.true_rate.rates)
    assert rates.shape[1] == 100 and rates.dtype == np.float32
    mean_hz = rates.mean(axis=0)
    assert np.mean((mean_hz >= 1.0) & (mean_hz <= 40.0)) >= 0.9
    assert np.quantile(rates, 0.99) < 100
    zero = (all_counts(reach) == 0).mean()
    assert 0.80 <= zero <= 0.90, zero


@pytest.mark.parametrize("n_neurons,n_conditions", [(50, 8), (300, 12)])
def test_reach_sizes_accepted(n_neurons, n_conditions):
    rec = make_reach(n_neurons=n_neurons, n_conditions=n_conditions, trials_per_condition=1)
    assert rec.n_units == n_neurons and rec.data.true_rate.rates.shape[1] == n_neurons
    assert len(np.unique(rec.trials.condition)) == n_conditions


def test_session_id_names_every_non_default_shape():
    """Recordings of other shapes must not pass for the default one (evaluate --data matches
    the run's sessions by id); the defaults keep the plain id."""
    assert make_reach(trials_per_condition=40, seed=2).session_id == "synthetic_reach_seed2_poisson"
    small = make_reach(n_neurons=20, trials_per_condition=2, seed=0)
    assert small.session_id == "synthetic_reach_seed0_poisson_n_neurons20_trials_per_condition2"
    assert make_lorenz(duration=30.0, seed=1).session_id == "synthetic_lorenz_seed1_poisson_duration30"


def test_single_trial_variability_persists(reach):
    """PSTH is not a perfect predictor, and the residual is autocorrelated (past informs future)."""
    log_rate = np.log(np.asarray(reach.data.true_rate.rates, dtype=np.float64))
    tr = reach.trials
    move = np.round(tr.events["move"] * FINE_RATE_HZ).astype(int)
    seg = np.stack([log_rate[m - 200 : m + 160] for m in move])  # (trials, 1.8 s, N)
    psth = np.zeros_like(seg)
    for c in np.unique(tr.condition):
        psth[tr.condition == c] = seg[tr.condition == c].mean(0)
    resid = seg - psth
    r2 = 1 - (resid**2).sum() / ((seg - seg.mean((0, 1))) ** 2).sum()
    assert 0.2 < r2 < 0.9, r2  # condition explains a lot, but not everything
    lag = 40  # 200 ms
    ac = (resid[:, lag:] * resid[:, :-lag]).mean() / (resid**2).mean()
    assert ac > 0.3, ac


def test_true_rate_bits_per_spike_positive_and_finite(reach):
    """Independent Poisson LL of the oracle vs the per-neuron mean-rate null (NLB bits/spike)."""
    counts = all_counts(reach).astype(np.float64)
    mu = expected_counts(reach, start=0.0, n_steps=len(counts))

    def loglik(m):
        return np.sum(counts * np.log(m) - m - gammaln(counts + 1))

    null = np.broadcast_to(counts.mean(0), counts.shape)
    bps = (loglik(mu) - loglik(null)) / (counts.sum() * np.log(2))
    assert np.isfinite(bps) and 0.05 < bps < 2.0, bps


# ----------------------------------------------------------------------- lorenz
def test_lorenz_recording():
    rec = make_lorenz(n_neurons=30, duration=60.0, seed=1)
    assert rec.trials is None and rec.n_units == 30
    assert rec.domain == (0.0, 60.0)
    latent = np.asarray(rec.data.latent.values)
    np.testing.assert_allclose(latent.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(latent.std(0), 1, atol=1e-3)
    mean_hz = np.asarray(rec.data.true_rate.rates).mean(0)
    assert np.mean((mean_hz >= 1.0) & (mean_hz <= 40.0)) >= 0.9
    zero = (all_counts(rec) == 0).mean()
    assert 0.7 < zero < 0.95


def test_lorenz_rk4_matches_reference_solver():
    h, n, x0 = 0.0025, 400, (1.0, 2.0, 20.0)
    ours = lorenz_trajectory(n, h, x0)

    def f(_, s):
        return [10 * (s[1] - s[0]), s[0] * (28 - s[2]) - s[1], s[0] * s[1] - 8 / 3 * s[2]]

    t = h * np.arange(1, n + 1)
    ref = solve_ivp(f, (0, t[-1]), x0, t_eval=t, rtol=1e-11, atol=1e-11, method="DOP853").y.T
    np.testing.assert_allclose(ours, ref, atol=1e-5)


# ----------------------------------------------------------------------- oracle
def test_expected_counts_is_exact_sum_of_fine_rates(reach):
    rates = np.asarray(reach.data.true_rate.rates, dtype=np.float64)
    got = expected_counts(reach, start=1.5, n_steps=7)
    want = np.stack([rates[300 + 4 * k : 304 + 4 * k].sum(0) * 0.005 for k in range(7)])
    np.testing.assert_allclose(got, want, rtol=1e-12)
    fine = expected_counts(reach, start=0.005, n_steps=3, bin_size=0.005)
    np.testing.assert_allclose(fine, rates[1:4] * 0.005, rtol=1e-12)
    assert expected_counts(reach, start=0.015, n_steps=2).shape == (2, 100)  # 5 ms offset ok


def test_expected_counts_rejects_off_grid_and_out_of_range(reach):
    with pytest.raises(BinningError, match="not on the 5 ms grid"):
        expected_counts(reach, start=0.0123, n_steps=2)
    with pytest.raises(BinningError, match="bin size"):
        expected_counts(reach, start=0.0, n_steps=2, bin_size=0.007)
    with pytest.raises(BinningError, match="outside"):
        expected_counts(reach, start=reach.duration - 0.02, n_steps=2)
    with pytest.raises(BinningError, match="outside"):
        expected_counts(reach, start=-0.02, n_steps=1)
    plain = Recording.from_arrays(session_id="x", spike_times=[0.1, 0.2], unit_ids=["a", "a"])
    with pytest.raises(RecordingError, match="no true_rate"):
        expected_counts(plain, start=0.0, n_steps=1)


@pytest.mark.parametrize("noise", NOISE_FAMILIES)
def test_expected_counts_is_the_mean_of_repeated_draws(reach, noise):
    """Redraw one 1 s window R times per neuron; z = (mean - oracle) / sqrt(Var/R).

    Var is the family's exact count variance (poisson mu, NB mu + alpha mu^2, ZIP
    m (1 + pi lambda)); for refractory mu is an upper bound. Then mean z^2 has mean 1
    (<= 1 for refractory) and sd ~ sqrt(2 / 1000) ~ 0.05 over the 50 x 20 cells; the
    bounds are > 4 sd wide. A mean error of 2 % would push the grand z past 5.
    """
    n_units, n_bins, reps, k0 = 20, 50, 200, 400  # window starts at 2.0 s (noise grid)
    rates = np.asarray(reach.data.true_rate.rates, dtype=np.float64)[k0 : k0 + 4 * n_bins]
    tiled = np.tile(rates[:, :n_units], (1, reps))  # column r * N + n is repeat r of unit n
    times, units = sample_spikes(
        tiled, sampling_rate=FINE_RATE_HZ, t0=2.0, noise=noise, rng=np.random.default_rng(0)
    )
    counts = bin_spikes(times, units, n_units * reps, start=2.0, n_steps=n_bins)
    counts = counts.reshape(n_bins, reps, n_units).astype(np.float64)
    mu = expected_counts(reach, start=2.0, n_steps=n_bins)[:, :n_units]
    var = {
        "poisson": mu,
        "gamma_poisson": mu + 1.0 * mu**2,
        "zero_inflated": mu * (1 + 0.2 * mu / 0.8),
        "refractory": mu,
    }[noise]
    z = (counts.mean(1) - mu) / np.sqrt(var / reps)
    chi = np.mean(z**2)
    grand = (counts.sum() - reps * mu.sum()) / np.sqrt(reps * var.sum())
    assert abs(grand) < 4, grand
    if noise == "refractory":
        assert 0.3 < chi < 1.2, chi
        first = (counts[0].mean(0) - mu[0]) / np.sqrt(mu[0] / reps)  # stationary start
        assert abs(first.sum() / np.sqrt(n_units)) < 4
    else:
        assert 0.8 < chi < 1.2, chi


# ---------------------------------------------------------------- noise families
RATES_HZ = np.array([5.0, 10.0, 20.0, 40.0, 80.0])


def stationary_counts(noise, *, bin_size=BIN, seconds=100.0, copies=4, seed=0):
    """Counts at constant rates (so Fano measures the noise, not rate changes): (bins, 5 x copies)."""
    rates = np.tile(RATES_HZ, copies)[None].repeat(int(seconds * FINE_RATE_HZ), 0)
    times, units = sample_spikes(
        rates, sampling_rate=FINE_RATE_HZ, noise=noise, rng=np.random.default_rng(seed)
    )
    counts = bin_spikes(
        times,
        units,
        rates.shape[1],
        start=0.0,
        n_steps=int(round(seconds / bin_size)),
        bin_size=bin_size,
    )
    return counts.astype(np.float64), times, units


def test_poisson_fano_is_one():
    c, _, _ = stationary_counts("poisson")
    fano = c.var(0, ddof=1) / c.mean(0)
    assert np.all(np.abs(fano - 1) < 0.1), fano  # sd of a Fano estimate over 5000 bins ~0.02


def test_gamma_poisson_variance_is_negative_binomial():
    c, _, _ = stationary_counts("gamma_poisson")
    mu, var = c.mean(0), c.var(0, ddof=1)
    alpha = np.sum((var - mu) * mu**2) / np.sum(mu**4)  # least squares of Var - mu = alpha mu^2
    assert abs(alpha - 1.0) < 0.1, alpha  # measured spread over seeds ~0.03
    m = np.tile(RATES_HZ, 4) * BIN
    assert np.all(np.abs(mu - m) < 4 * np.sqrt((m + m**2) / len(c)))  # 4 NB standard errors


def test_zero_inflated_fano_matches_zip_formula():
    c, _, _ = stationary_counts("zero_inflated")
    lam = np.tile(RATES_HZ, 4) * BIN / 0.8  # Poisson intensity of the non-structural bins
    # mean over the 4 copies of each rate: sd of the estimate <= ~0.02 (measured over seeds)
    fano = (c.var(0, ddof=1) / c.mean(0)).reshape(4, 5).mean(0)
    np.testing.assert_allclose(fano, 1 + 0.2 * lam[:5], atol=0.06)  # Poisson would miss by 0.4
    p0 = (c == 0).mean(0)
    np.testing.assert_allclose(p0, 0.2 + 0.8 * np.exp(-lam), atol=0.02)


def test_refractory_is_sub_poisson_gamma_renewal():
    c, times, units = stationary_counts("refractory")
    fano = (c.var(0, ddof=1) / c.mean(0)).reshape(4, 5).mean(0)
    assert np.all(fano < 0.95) and fano[-2] < 0.6, fano  # 40 Hz: mean 0.8 per bin
    assert np.all(np.diff(fano) < 0)  # more sub-Poisson at higher rates
    isi = np.diff(times[units == 3])  # 40 Hz neuron
    np.testing.assert_allclose(isi.std() / isi.mean(), 1 / np.sqrt(3), atol=0.03)
    long, _, _ = stationary_counts("refractory", bin_size=1.0)
    fano_1s = np.mean(long[:, 3::5].var(0, ddof=1) / long[:, 3::5].mean(0))
    assert abs(fano_1s - 1 / 3) < 0.08, fano_1s  # renewal limit CV^2 = 1/k; sd ~0.025


# ------------------------------------------------------------------ persistence
def test_params_and_oracle_survive_hdf5_round_trip(tmp_path):
    rec = make_reach(noise="zero_inflated", dispersion=0.3, seed=4, **SMALL)
    path = tmp_path / "syn.h5"
    with h5py.File(path, "w") as f:
        rec.data.to_hdf5(f)
    with h5py.File(path, "r") as f:
        back = Recording(Data.from_hdf5(f, lazy=False), source=str(path))
    assert generator_params(back) == generator_params(rec)
    assert generator_params(back)["pi"] == 0.3
    np.testing.assert_array_equal(
        expected_counts(back, start=1.0, n_steps=10), expected_counts(rec, start=1.0, n_steps=10)
    )


# ------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: generate("spiral"), "unknown synthetic dataset"),
        (lambda: make_reach(noise="laplace", **SMALL), "unknown noise family"),
        (lambda: make_reach(dispersion=0.5, **SMALL), "takes no dispersion"),
        (lambda: make_reach(noise="zero_inflated", dispersion=1.5, **SMALL), "pi must be"),
        (lambda: make_reach(noise="refractory", dispersion=0.5, **SMALL), "shape must be"),
        (lambda: make_reach(n_neurons=0), "n_neurons"),
        (lambda: make_reach(seed=-1, **SMALL), "seed"),
        (lambda: make_lorenz(duration=-5), "duration"),
    ],
)
def test_bad_input_raises_clear_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
