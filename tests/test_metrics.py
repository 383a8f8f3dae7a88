"""Metrics against independent computations and known values."""

import json
import math
import sys
import types

import numpy as np
import pytest
import torch

from neurohorizon.evaluation import metrics as M


def poisson_data(n=200, T=20, N=8, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(T)
    rates = 0.3 + 0.25 * np.sin(t[None, :, None] / 3.0 + rng.uniform(0, 6, (n, 1, N)))
    rates = rates * rng.uniform(0.5, 2.0, (1, 1, N))
    return rates, rng.poisson(rates).astype(float)


def nlb_bits_per_spike():
    """nlb_tools' own function (needs only numpy/scipy; sklearn is stubbed if absent)."""
    pytest.importorskip("nlb_tools")
    names = ("sklearn", "sklearn.linear_model", "sklearn.metrics", "sklearn.model_selection")
    stub = {}
    try:
        import sklearn  # noqa: F401
    except ImportError:  # the functions we compare need only numpy/scipy
        stub = {n: types.ModuleType(n) for n in names}
        stub["sklearn.linear_model"].Ridge = None
        stub["sklearn.metrics"].r2_score = None
        stub["sklearn.metrics"].explained_variance_score = None
        stub["sklearn.model_selection"].GridSearchCV = None
        sys.modules.update(stub)
    try:
        from nlb_tools.evaluation import bits_per_spike
    except ImportError as e:
        pytest.skip(f"nlb_tools not importable: {e}")
    finally:
        for n in stub:  # never leak the stub into other tests
            sys.modules.pop(n, None)
    return bits_per_spike


def test_hand_computed_case():
    rates = np.array([[0.5, 2.0], [1.0, 0.0]])
    spikes = np.array([[1.0, 2.0], [0.0, 1.0]])
    null = spikes.mean(0)  # [0.5, 1.5]

    def nll(r, k):
        r = max(r, 1e-9)
        return r - k * math.log(r) + math.lgamma(k + 1)

    model = sum(nll(rates[i, j], spikes[i, j]) for i in range(2) for j in range(2))
    base = sum(nll(null[j], spikes[i, j]) for i in range(2) for j in range(2))
    expected = (base - model) / spikes.sum() / math.log(2)
    assert M.bits_per_spike(rates, spikes) == pytest.approx(expected, rel=1e-12)
    assert M.bits_per_spike(torch.tensor(rates), torch.tensor(spikes)) == pytest.approx(expected)


def test_matches_nlb_tools():
    nlb = nlb_bits_per_spike()
    rates, spikes = poisson_data()
    spikes[3, 4:, 2] = np.nan
    pred = rates * 1.1
    pred[0, 0, 0] = 0.0
    assert M.bits_per_spike(pred, spikes) == pytest.approx(nlb(pred.copy(), spikes), rel=1e-10)


def test_null_model_scores_exactly_zero():
    _, spikes = poisson_data()
    null = np.broadcast_to(np.nanmean(spikes, axis=(0, 1)), spikes.shape)
    assert M.bits_per_spike(null, spikes) == 0.0
    assert M.fp_bps(null, spikes) == 0.0
    train_null = np.full(spikes.shape[-1], 0.4)
    assert (
        M.fp_bps(
            np.broadcast_to(train_null, spikes.shape), spikes, null="train", null_rates=train_null
        )
        == 0.0
    )


def test_true_rates_beat_null_and_perturbed():
    rates, spikes = poisson_data(seed=1)
    true_bps = M.bits_per_spike(rates, spikes)
    rng = np.random.default_rng(2)
    perturbed = rates * np.exp(rng.normal(0, 0.4, rates.shape))
    assert true_bps > 0.02
    assert true_bps > M.bits_per_spike(perturbed, spikes)
    assert M.oracle_bits_per_spike(rates, spikes) == true_bps
    assert M.fraction_of_oracle(true_bps / 2, true_bps) == pytest.approx(0.5)
    assert math.isnan(M.fraction_of_oracle(0.1, -0.2))


def test_nan_spikes_are_masked():
    rates, spikes = poisson_data(seed=3)
    with_nan = spikes.copy()
    with_nan[:, :, -1] = np.nan  # a padded unit
    pred = rates.copy()
    pred[:, :, -1] = np.nan  # its prediction is ignored too
    expected = M.bits_per_spike(rates[..., :-1], spikes[..., :-1])
    assert M.bits_per_spike(pred, with_nan) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(M.MetricError, match="negative"):
        M.bits_per_spike(-rates, spikes)
    with pytest.raises(M.MetricError, match="shapes differ"):
        M.bits_per_spike(rates[:, :-1], spikes)


def test_per_bin_decay_and_consistency():
    rates, spikes = poisson_data(n=400, T=16, seed=4)
    # a forecaster that blends from the truth to the neuron mean across the horizon
    w = np.linspace(0, 1, 16)[None, :, None]
    pred = (1 - w) * rates + w * rates.mean(axis=(0, 1), keepdims=True)
    curve = M.per_bin_fp_bps(pred, spikes)
    assert curve.shape == (16,)
    assert curve[:4].mean() > curve[-4:].mean() + 0.02
    weights = np.nansum(spikes, axis=(0, 2))
    assert np.sum(curve * weights) / weights.sum() == pytest.approx(M.fp_bps(pred, spikes))


def test_r2():
    rates, spikes = poisson_data(seed=5)
    assert M.r2_pooled(rates, rates) == 1.0
    assert np.all(M.r2_per_neuron(rates, rates) == 1.0)
    per = M.r2_per_neuron(rates, spikes)
    y = spikes.reshape(-1, spikes.shape[-1])
    p = rates.reshape(y.shape)
    independent = 1 - ((y - p) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)
    np.testing.assert_allclose(per, independent)
    ss_tot = ((y - y.mean(0)) ** 2).sum(0)
    assert M.r2_pooled(rates, spikes) == pytest.approx(np.sum(per * ss_tot) / ss_tot.sum())


def test_psth_r2_and_correlation():
    rng = np.random.default_rng(6)
    C, reps, T, N = 4, 30, 12, 5
    psth = rng.uniform(0.1, 1.5, (C, T, N))
    cond = np.repeat(np.arange(C), reps)
    true = psth[cond]
    spikes = rng.poisson(true).astype(float)
    assert M.psth_r2(true, true, cond) == pytest.approx(1.0)
    np.testing.assert_allclose(M.psth_correlation_per_step(true, true, cond), 1.0)
    # each neuron's mean rate, the same in every condition, knows nothing of the conditions: 0, not the
    # ~0.9 that the spread of rates across neurons would give a correlation over all (condition, neuron) pairs
    unit_mean = np.broadcast_to(true.mean((0, 1)), true.shape)
    np.testing.assert_allclose(M.psth_correlation_per_step(unit_mean, true, cond), 0.0)
    # an independent computation: neuron-centred condition averages, correlated at one step
    step, p, t = 5, psth[:, 5] + rng.normal(0, 0.2, (C, N)), psth[:, 5]
    pred = true.copy()
    pred[:, step] = p[cond]
    pc, tc = p - p.mean(0), t - t.mean(0)
    want = (pc * tc).sum() / np.sqrt((pc**2).sum() * (tc**2).sum())
    assert M.psth_correlation_per_step(pred, true, cond)[step] == pytest.approx(want)
    noisy = M.psth_r2(true, spikes, cond)
    assert 0.3 < noisy < 1.0
    # independent: stack condition means, per-neuron R², uniform average
    t = np.concatenate([spikes[cond == c].mean(0) for c in range(C)])
    p = np.concatenate([true[cond == c].mean(0) for c in range(C)])
    r2 = 1 - ((t - p) ** 2).sum(0) / ((t - t.mean(0)) ** 2).sum(0)
    assert noisy == pytest.approx(r2.mean())
    # smoothing a constant leaves it unchanged (edge renormalisation)
    np.testing.assert_allclose(M.smooth_gaussian(np.ones((2, 9, 3)), 2.0), 1.0)
    # a window shorter than the kernel (NLB's 70 ms at 20 ms bins, 12 bins) keeps its length
    short = M.smooth_gaussian(np.ones((4, 12, 3)), 3.5)
    assert short.shape == (4, 12, 3)
    np.testing.assert_allclose(short, 1.0)
    x = np.random.default_rng(0).random((12, 2))
    np.testing.assert_allclose(M.smooth_gaussian(x, 1.5, axis=0), M.smooth_gaussian(x.T, 1.5, axis=1).T)
    k = np.exp(-0.5 * (np.arange(-5, 6) / 1.5) ** 2)  # bin 6, far enough from both edges
    assert M.smooth_gaussian(x, 1.5, axis=0)[6, 0] == pytest.approx((x[1:12, 0] * k).sum() / k.sum())
    assert M.psth_r2(true, spikes, cond, smooth_sigma_bins=1.0) != noisy
    with pytest.raises(M.MetricError, match="no condition"):
        M.psth_r2(true, true, -np.ones(len(cond)))


def test_coverage_nominal_for_true_distribution():
    rng = np.random.default_rng(7)
    rates, _ = poisson_data(n=100, T=10, N=6, seed=8)
    target = rng.poisson(rates).astype(float)
    samples = rng.poisson(rates, size=(200, *rates.shape)).astype(float)
    cov = M.interval_coverage(samples, target)  # every default level, a reliability curve
    assert tuple(cov["neuron"]["pit"]) == M.COVERAGE_LEVELS
    for level in M.COVERAGE_LEVELS:
        assert cov["neuron"]["pit"][level] == pytest.approx(level, abs=0.02)
        assert cov["population"]["pit"][level] == pytest.approx(level, abs=0.03)
        assert cov["neuron"]["inclusive"][level] >= level
    # exact for any number of samples: one or three trajectories per window still cover ≈ l
    for n_samples in (1, 3):
        few = M.interval_coverage(samples[:n_samples], target)["neuron"]["pit"]
        for level in M.COVERAGE_LEVELS:
            assert few[level] == pytest.approx(level, abs=0.02)
    # an over-confident (too narrow) forecaster under-covers
    narrow = np.round(np.broadcast_to(rates, samples.shape))
    assert M.interval_coverage(narrow, target)["neuron"]["pit"][0.9] < 0.8


def test_fano_factors():
    rng = np.random.default_rng(9)
    rates = np.full((300, 5, 4), 2.0)
    target = rng.poisson(rates).astype(float)
    pois = rng.poisson(rates, size=(50, *rates.shape)).astype(float)
    f = M.fano_factors(pois, target)
    np.testing.assert_allclose(f["predicted"], 1.0, atol=0.05)
    np.testing.assert_allclose(f["predicted_within"], 1.0, atol=0.05)
    # few samples: the within-window variance is unbiased (ddof=0 would give (S-1)/S = 0.75)
    few = M.fano_factors(rng.poisson(rates, size=(4, *rates.shape)).astype(float))
    np.testing.assert_allclose(few["predicted_within"], 1.0, atol=0.05)
    np.testing.assert_allclose(f["observed"], 1.0, atol=0.15)
    # negative binomial samples with mean 2 and variance 2 + 2**2 / 2 = 4
    nb = rng.negative_binomial(2, 0.5, size=(50, *rates.shape)).astype(float)
    np.testing.assert_allclose(M.fano_factors(nb)["predicted"], 2.0, atol=0.1)


def test_summary_is_json_and_complete():
    rates, spikes = poisson_data(n=60, T=8, N=4, seed=10)
    rng = np.random.default_rng(11)
    cond = np.arange(60) % 3
    samples = rng.poisson(rates, size=(20, *rates.shape)).astype(float)
    s = M.summarize_forecast(
        rates * 0.9,
        spikes,
        tf_mean=rates,
        samples=samples,
        conditions=cond,
        true_expected=rates,
        null_rates=np.full(4, 0.3),
    )
    json.dumps(s, allow_nan=False)
    assert s["horizon_ms"] == pytest.approx(160.0)
    assert len(s["rollout"]["per_bin_fp_bps"]) == 8
    assert s["gap_rollout_minus_tf"]["fp_bps"] == pytest.approx(
        s["rollout"]["fp_bps"] - s["teacher_forced"]["fp_bps"]
    )
    assert s["oracle"]["oracle_fp_bps"] == pytest.approx(s["teacher_forced"]["fp_bps"])
    assert "train" in s["null"] and s["null"]["train"] is not None
    assert "fp_bps_train_null" in s["rollout"]
    assert s["psth"]["reference"] == "true expected counts"
    assert set(s["calibration"]["coverage"]) == {"neuron", "population"}


def test_paired_difference_is_the_difference_of_pooled_bits_per_spike():
    from neurohorizon.evaluation.predict import pooled_bps

    rng = np.random.default_rng(3)
    sessions = {}
    for s, n in ((0, 40), (1, 25)):
        rate = rng.gamma(2.0, 0.2, (n, 10, 4))
        y = rng.poisson(rate).astype(float)
        y[0, 0, 0] = np.nan  # masked entries drop out of both
        sessions[s] = {"target": y, "a": rate, "b": rate.mean((0, 1), keepdims=True) + 0 * rate}
    d, lo, hi = M.paired_bps_difference([g["a"] for g in sessions.values()], [g["b"] for g in sessions.values()],
                                        [g["target"] for g in sessions.values()])
    assert d == pytest.approx(pooled_bps(sessions, "a") - pooled_bps(sessions, "b"), rel=1e-9)
    assert lo < d < hi and lo > 0  # the true rates beat a per-neuron constant clearly
    same = M.paired_bps_difference([sessions[0]["a"]], [sessions[0]["a"]], [sessions[0]["target"]])
    assert same == (0.0, 0.0, 0.0)
    # 2 spikes in 40 windows: many resamples hold none, so no interval rather than an absurd one
    sparse = np.zeros((40, 3, 2))
    sparse[0, 0, 0] = sparse[7, 1, 1] = 1
    d, lo, hi = M.paired_bps_difference([np.full_like(sparse, 0.02)], [np.full_like(sparse, 0.05)], [sparse])
    assert np.isfinite(d) and np.isnan(lo) and np.isnan(hi)


def test_output_json_is_strict():
    from neurohorizon.runs import json_text

    assert json_text({"a": float("nan"), "b": [np.float32("inf"), 1.5, 2], "c": (np.float64(-np.inf),)}) == \
        '{"a": null, "b": [null, 1.5, 2], "c": [null]}'


def test_pooling_sessions_is_exact_per_bin_and_counts_silent_sessions():
    from scipy.stats import poisson

    from neurohorizon.evaluation.evaluate import pool_sessions

    rng = np.random.default_rng(0)
    T, N = 12, 5
    ramp = np.linspace(0.05, 1.0, T)[None, :, None] * np.ones((40, T, N))
    summaries, gain, spikes = {}, np.zeros(T), np.zeros(T)
    for name, rate in {"early_quiet": ramp, "early_busy": ramp[:, ::-1]}.items():
        y = rng.poisson(rate).astype(float)
        pred = rate * rng.uniform(0.7, 1.3, rate.shape)
        summaries[name] = M.summarize_forecast(pred, y, true_expected=rate)
        null = y.mean((0, 1), keepdims=True)  # NLB: each session's per-neuron mean count
        gain += (poisson.logpmf(y, pred) - poisson.logpmf(y, null)).sum((0, 2)) / np.log(2)
        spikes += y.sum((0, 2))
    pooled = pool_sessions(summaries)
    np.testing.assert_allclose(pooled["rollout"]["per_bin_fp_bps"], gain / spikes, rtol=1e-6)
    assert pooled["rollout"]["fp_bps"] == pytest.approx(gain.sum() / spikes.sum(), rel=1e-6)
    # a session without a spike has no bits/spike of its own, but NLB's sum over all the evaluated
    # data still charges what a forecaster predicts there (its null, the mean count, is 0)
    quiet = np.full((3, T, N), 0.1)
    silent = M.summarize_forecast(quiet, np.zeros_like(quiet), true_expected=quiet)
    assert silent["rollout"]["fp_bps"] is None
    with_silent = pool_sessions({**summaries, "silent": silent})
    lost = (quiet - M.RATE_FLOOR).sum((0, 2)) / np.log(2)  # Poisson NLL of 0 counts is the rate
    np.testing.assert_allclose(with_silent["rollout"]["per_bin_fp_bps"], (gain - lost) / spikes, rtol=1e-6)
    assert with_silent["rollout"]["fp_bps"] == pytest.approx((gain - lost).sum() / spikes.sum(), rel=1e-6)
    assert with_silent["rollout"]["fp_bps"] < pooled["rollout"]["fp_bps"]
    assert with_silent["oracle"]["fraction_of_oracle"] == pytest.approx(
        with_silent["rollout"]["fp_bps"] / with_silent["oracle"]["oracle_fp_bps"])
    # within one session too: a bin without spikes has no bits/spike, and the gains add up exactly
    y = rng.poisson(ramp).astype(float)
    y[:, 0] = 0
    one = M.summarize_forecast(ramp, y)
    assert one["rollout"]["per_bin_fp_bps"][0] is None
    assert sum(one["rollout"]["per_bin_nll_gain_nats"]) == pytest.approx(one["rollout"]["nll_gain_nats"])
    assert one["rollout"]["fp_bps"] == pytest.approx(one["rollout"]["nll_gain_nats"] / y.sum() / np.log(2))


def test_calibration_survives_one_sample_of_one_window_per_condition():
    rng = np.random.default_rng(3)
    rates = np.full((6, 5, 4), 0.5)
    target = rng.poisson(rates).astype(float)
    samples = rng.poisson(rates, size=(1, *rates.shape)).astype(float)
    out = M.summarize_forecast(rates, target, samples=samples, conditions=np.arange(6))  # every label unique
    cal = out["calibration"]
    assert cal["n_samples"] == 1 and cal["fano_predicted"] is None and cal["fano_observed"] is None
    assert cal["coverage"]["neuron"]["pit"]["0.5"] == pytest.approx(0.5, abs=0.2)
    from neurohorizon.evaluation.evaluation_report import calibration_text

    assert "No Fano factor: too few repeats" in calibration_text(cal)


def test_evaluation_smooths_observed_psths_as_nlb_does():
    """Without true rates, psth R² compares against observed condition averages smoothed with
    NLB's 70 ms Gaussian (3.5 bins of 20 ms), not the raw ones."""
    from neurohorizon.evaluation.evaluate import evaluate_predictions

    rng = np.random.default_rng(5)
    rate = 0.3 + 0.2 * np.sin(np.linspace(0, 3, 12))[None, :, None] * np.ones((30, 12, 4))
    y = rng.poisson(rate).astype(float)
    cond = np.repeat([0, 1, 2], 10)
    group = {"rollout": rate, "target": y, "condition": cond, "true_expected": np.full_like(y, np.nan)}
    out = evaluate_predictions({"m": {0: group}}, horizons=[12], bin_size=0.02, null_rates={})
    got = out["m"]["12"]["sessions"]["0"]["psth"]["psth_r2"]
    assert got == pytest.approx(M.psth_r2(rate, y, cond, 3.5))
    assert got != pytest.approx(M.psth_r2(rate, y, cond, 0.0))
