"""The reach causal oracle: exact reconstruction, exact expectations, and its bound."""

import numpy as np
import pytest
from scipy import integrate, stats

from neurohorizon.data.recording import RecordingError
from neurohorizon.data.synthetic import expected_counts, make_lorenz, make_reach
from neurohorizon.data.synthetic import reach as reach_mod
from neurohorizon.data.synthetic.causal import (
    N_TASK,
    ReachTruth,
    clipped_lognormal_mean,
    ou_forecast,
    reach_causal_expected,
    rt_law,
)
from neurohorizon.data.synthetic.common import FINE_DT
from neurohorizon.evaluation.metrics import bits_per_spike


def test_true_rt_and_ou_reproduce_the_stored_rates(reach_rec, reach_truth):
    """With the trial's actual RT and OU path (no variance) the latent model is the generator."""
    stored = np.asarray(reach_rec.data.true_rate.rates)
    for i in range(1, len(reach_truth.sched["go"])):
        steps = reach_truth.sched["go"][i] + np.arange(200)
        rt = reach_truth.sched["move"][i] - reach_truth.sched["go"][i]
        rate = reach_truth.mean_rates(reach_truth.task_latent(i, steps, rt), reach_truth.latent[steps, N_TASK:], np.zeros(200))
        np.testing.assert_allclose(rate, stored[steps], rtol=2e-7)


def test_rt_law_matches_the_generator_draw():
    steps, prob = rt_law()
    rng = np.random.default_rng(0)
    draws = np.clip(np.round(rng.normal(reach_mod.RT_MEAN, reach_mod.RT_SD, 400_000) / FINE_DT), steps[0], steps[-1])
    empirical = np.bincount((draws - steps[0]).astype(int), minlength=len(steps)) / len(draws)
    assert prob.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(empirical, prob, atol=2e-3)


@pytest.mark.parametrize("m, s2", [(1.0, 0.3), (5.0, 0.5), (5.3, 0.01), (-2.0, 1e-6)])
def test_clipped_lognormal_mean_against_quadrature(m, s2):
    cap = 200.0
    law = stats.norm(m, np.sqrt(s2))
    value, _ = integrate.quad(lambda d: min(np.exp(d), cap) * law.pdf(d), m - 12 * np.sqrt(s2), m + 12 * np.sqrt(s2),
                              points=[np.log(cap)] if abs(np.log(cap) - m) < 12 * np.sqrt(s2) else None, limit=200)
    assert clipped_lognormal_mean(np.array(m), np.array(s2), cap) == pytest.approx(value, rel=1e-6)
    assert clipped_lognormal_mean(np.array(m), np.array(0.0), cap) == pytest.approx(min(np.exp(m), cap))


def test_causal_expectation_equals_monte_carlo(reach_rec, reach_truth):
    """Resimulate the unknown future (RT from the generator's draw, OU by its AR(1)) and average."""
    i, n_fine, draws = 7, 200, 3000
    steps = reach_truth.sched["go"][i] + np.arange(n_fine)
    rng = np.random.default_rng(1)
    rts = np.clip(np.round(rng.normal(reach_mod.RT_MEAN, reach_mod.RT_SD, draws) / FINE_DT), 44, 90).astype(int)
    a = np.exp(-FINE_DT / reach_mod.TAU_OU)
    total = 0.0
    for rt in rts:
        ou = np.empty((n_fine, 3))
        x = reach_truth.latent[steps[0] - 1, N_TASK:]
        for j in range(n_fine):
            x = a * x + np.sqrt(1 - a**2) * rng.standard_normal(3)
            ou[j] = x
        total = total + reach_truth.mean_rates(reach_truth.task_latent(i, steps, rt), ou, np.zeros(n_fine))
    mc = (total / draws).reshape(50, 4, -1).sum(1) * FINE_DT
    exact = reach_causal_expected(reach_rec, [reach_truth.sched["go"][i] * FINE_DT], n_bins=50, truth=reach_truth)[0]
    np.testing.assert_allclose(mc.sum(0), exact.sum(0), rtol=0.03)  # per unit over the horizon
    assert np.corrcoef(mc.ravel(), exact.ravel())[0, 1] > 0.995


def test_without_the_ou_state_it_averages_the_known_state_forecast_over_the_ou_law(reach_rec, reach_truth):
    """know_ou=False is the known-OU forecast averaged over the go cue's OU state ~ N(0, I)."""
    i = 5
    start, row = [reach_truth.sched["go"][i] * FINE_DT], reach_truth.sched["go"][i] - 1
    blind = reach_causal_expected(reach_rec, start, n_bins=10, truth=reach_truth, know_ou=False)[0]
    saved, rng, total, draws = reach_truth.latent[row, N_TASK:].copy(), np.random.default_rng(3), 0.0, 1000
    try:
        for _ in range(draws):
            reach_truth.latent[row, N_TASK:] = rng.standard_normal(3)
            total = total + reach_causal_expected(reach_rec, start, n_bins=10, truth=reach_truth)[0]
    finally:
        reach_truth.latent[row, N_TASK:] = saved
    np.testing.assert_allclose(total / draws, blind, rtol=0.05)  # Monte Carlo sd about 1 %
    known = reach_causal_expected(reach_rec, start, n_bins=10, truth=reach_truth)[0]
    assert np.abs(np.log(known / blind)).mean() > 0.02  # the state it knows moves the forecast


def test_ou_forecast_moments():
    mean, var = ou_forecast(np.array([1.0, -2.0, 0.5]), 3)
    a = np.exp(-FINE_DT / reach_mod.TAU_OU)
    np.testing.assert_allclose(mean[2], a**3 * np.array([1.0, -2.0, 0.5]))
    np.testing.assert_allclose(var, 1 - a ** (2 * np.arange(1, 4)))


def test_causal_oracle_sits_between_the_null_and_the_oracle(reach_rec, reach_truth):
    starts = reach_truth.sched["go"][1:] * FINE_DT
    causal = reach_causal_expected(reach_rec, starts, n_bins=25, truth=reach_truth)
    oracle = np.stack([expected_counts(reach_rec, start=s, n_steps=25) for s in starts])
    spikes = np.random.default_rng(2).poisson(oracle * 3)  # 3 fresh draws per window, pooled
    bps_oracle, bps_causal = bits_per_spike(oracle * 3, spikes), bits_per_spike(causal * 3, spikes)
    assert 0 < bps_causal < bps_oracle
    # the expected counts agree in total: the causal oracle is the conditional mean
    assert causal.sum() == pytest.approx(oracle.sum(), rel=0.02)


def test_clear_errors(reach_rec, reach_truth):
    with pytest.raises(ValueError, match="not a go cue"):
        reach_causal_expected(reach_rec, [reach_truth.sched["go"][3] * FINE_DT + 0.01], n_bins=10, truth=reach_truth)
    with pytest.raises(ValueError, match="past the shortest trial"):
        reach_causal_expected(reach_rec, [reach_truth.sched["go"][3] * FINE_DT], n_bins=60, truth=reach_truth)
    other = make_reach(n_neurons=30, trials_per_condition=5, seed=4)
    other.data.true_rate.rates[:] *= 1.01  # a recording edited after generation
    with pytest.raises(RecordingError, match="differ from a re-simulation"):
        ReachTruth(other)
    with pytest.raises(RecordingError, match="needs synthetic reach"):
        ReachTruth(make_lorenz(n_neurons=10, duration=20.0, seed=0))
