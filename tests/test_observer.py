"""The reach ideal observer: its forecast map equals the causal oracle's, its Laplace fit is a
true mode with the right curvature, and it learns the trial's state from the spikes."""

import numpy as np
import pytest

from neurohorizon.data.synthetic.causal import N_TASK, reach_causal_expected
from neurohorizon.data.synthetic.common import FINE_DT
from neurohorizon.data.synthetic.observer import (
    D_PREP,
    PHI,
    ContextPosterior,
    _forecast,
    ou_precision,
    reach_generator_psth,
    reach_observer_expected,
)
from neurohorizon.data.synthetic.reach import JITTER_SD, LOG_GAIN_SD
from neurohorizon.evaluation.metrics import bits_per_spike


def test_ou_precision_inverts_the_ar1_covariance():
    lag = np.abs(np.arange(6)[:, None] - np.arange(6)[None])
    np.testing.assert_allclose(np.linalg.inv(ou_precision(6)), PHI**lag, atol=1e-9)


def test_known_state_forecast_equals_the_causal_oracle(reach_rec, reach_truth):
    """Collapsed on the true gain, jitter and OU value, the observer is the causal oracle."""
    for i in (2, 5, 9):
        go = reach_truth.sched["go"][i]
        g = reach_truth.gain[i]
        state = np.r_[reach_truth.p[i] / g - reach_truth.prep_mean[i], reach_truth.latent[go - 1, N_TASK:]]
        rate = _forecast(reach_truth, i, go + np.arange(100), g, state, np.zeros((9, 9)))
        counts = rate.reshape(25, 4, -1).sum(1) * FINE_DT
        causal = reach_causal_expected(reach_rec, [go * FINE_DT], n_bins=25, truth=reach_truth)[0]
        np.testing.assert_allclose(counts, causal, rtol=1e-10)


def test_laplace_fit_is_the_mode_with_the_exact_curvature():
    rng = np.random.default_rng(0)
    T, N = 4, 12
    post = ContextPosterior(
        y=rng.poisson(0.3, (T, N)).astype(float), a=np.log(30.0) + 0.2 * rng.standard_normal((T, N)),
        r=np.array([0.0, 0.3, 0.6, 0.8]), mu=rng.standard_normal(D_PREP) * 0.5,
        c6=rng.standard_normal((N, D_PREP)) * 0.5, c_ou=rng.standard_normal((N, 3)) * 0.2,
    )
    theta, hess, _ = post.fit(1.1)
    grad, _ = post._grad_hess(theta, 1.1)
    assert np.abs(grad).max() < 1e-6
    eps, basis = 1e-4, np.eye(post.n)
    numeric = np.stack([(post._grad_hess(theta + eps * e, 1.1)[0] - post._grad_hess(theta - eps * e, 1.1)[0])
                        / (2 * eps) for e in basis])
    np.testing.assert_allclose(-numeric, hess, atol=1e-5)
    value = post._objective(theta, 1.1)
    for _ in range(20):  # concave: every nearby point is lower
        assert post._objective(theta + 0.01 * rng.standard_normal(post.n), 1.1) < value


def test_observer_scores_between_the_null_and_the_causal_oracle(reach_rec, reach_truth):
    starts = reach_truth.sched["go"][1:13] * FINE_DT
    observer = reach_observer_expected(reach_rec, starts, n_bins=25, truth=reach_truth)
    causal = reach_causal_expected(reach_rec, starts, n_bins=25, truth=reach_truth)
    # fresh draws from the causal law score each forecast in expectation
    spikes = np.random.default_rng(2).poisson(np.repeat(causal, 20, axis=0))
    bps_obs = bits_per_spike(np.repeat(observer, 20, axis=0), spikes)
    bps_causal = bits_per_spike(np.repeat(causal, 20, axis=0), spikes)
    assert np.all(np.isfinite(observer)) and observer.min() > 0
    assert 0 < bps_obs < bps_causal


def test_generator_psth_is_the_forecast_averaged_over_the_trial_laws(reach_rec, reach_truth):
    """Monte Carlo over gain, jitter and the OU value at the go cue, each known exactly (the
    causal oracle's forecast), averages to the closed form."""
    i = 6
    go = reach_truth.sched["go"][i]
    psth = reach_generator_psth(reach_rec, [go * FINE_DT], n_bins=5, truth=reach_truth)[0]
    rng = np.random.default_rng(1)
    draws = [_forecast(reach_truth, i, go + np.arange(20), np.exp(LOG_GAIN_SD * rng.standard_normal()),
                       np.r_[JITTER_SD * rng.standard_normal(D_PREP), rng.standard_normal(3)], np.zeros((9, 9)))
             for _ in range(150)]
    mc = np.mean(draws, 0).reshape(5, 4, -1).sum(1) * FINE_DT
    np.testing.assert_allclose(psth.sum(1), mc.sum(1), rtol=0.03)
    np.testing.assert_allclose(psth, mc, rtol=0.15)
    # it knows no single-trial state, so the causal oracle (which knows it) scores higher
    starts = reach_truth.sched["go"][1:5] * FINE_DT
    causal = reach_causal_expected(reach_rec, starts, n_bins=10, truth=reach_truth)
    spikes = np.random.default_rng(2).poisson(np.repeat(causal, 50, axis=0))
    psth = reach_generator_psth(reach_rec, starts, n_bins=10, truth=reach_truth, n_gains=9)
    assert 0 < bits_per_spike(np.repeat(psth, 50, axis=0), spikes) < bits_per_spike(np.repeat(causal, 50, axis=0), spikes)


def test_a_context_before_the_recording_is_a_clear_error(reach_rec, reach_truth):
    go = reach_truth.sched["go"][0] * FINE_DT
    with pytest.raises(ValueError, match="starts before the recording"):
        reach_observer_expected(reach_rec, [go], n_bins=5, context=go + 0.1, truth=reach_truth)
    with pytest.raises(ValueError, match="not a go cue"):
        reach_observer_expected(reach_rec, [go + 0.013], n_bins=5, truth=reach_truth)
