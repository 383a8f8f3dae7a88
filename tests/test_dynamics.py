"""Slow latent dynamics around the factor prior (data.rate_prior_dynamics): the block-tridiagonal
solver, the Laplace E-step and the M-step against independent computations, recovery of an OU
latent's loadings, and the forecast's Gaussian expectation against a Monte Carlo simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from neurohorizon.data.dataset import ForecastDataset
from neurohorizon.data.dynamics import (
    infer_with_paths,
    ou_precision_blocks,
    posterior_paths,
    solve_block_tridiagonal,
    update_loadings,
)
from neurohorizon.data.factors import FactorPrior, infer_factors
from neurohorizon.data.prior import ConditionPrior
from neurohorizon.data.recording import Recording, Trials
from neurohorizon.data.windows import UnitVocab, Window, WindowSpec

BIN, TRIAL_BINS, EVENT_BINS, RATE, TAU_BINS = 0.02, 100, 50, 20.0, 10.0


def dense(diag, off):
    """(B, TK, TK) the block-tridiagonal matrix of `solve_block_tridiagonal`."""
    B, T, K, _ = diag.shape
    H = torch.zeros(B, T * K, T * K, dtype=diag.dtype)
    for t in range(T):
        H[:, t * K:(t + 1) * K, t * K:(t + 1) * K] = diag[:, t]
        if t + 1 < T:
            H[:, t * K:(t + 1) * K, (t + 1) * K:(t + 2) * K] = off * torch.eye(K)
            H[:, (t + 1) * K:(t + 2) * K, t * K:(t + 1) * K] = off * torch.eye(K)
    return H


def test_block_tridiagonal_solve_and_marginal_covariances_equal_the_dense_ones():
    g = torch.Generator().manual_seed(0)
    B, T, K = 3, 9, 2
    a = torch.randn(B, T, K, K, generator=g, dtype=torch.float64)
    diag = a @ a.transpose(-1, -2) + 3 * torch.eye(K, dtype=torch.float64)
    rhs = torch.randn(B, T, K, generator=g, dtype=torch.float64)
    sol, cov = solve_block_tridiagonal(diag, -0.8, rhs)
    H = dense(diag, -0.8)
    assert torch.allclose(sol.reshape(B, -1), torch.linalg.solve(H, rhs.reshape(B, -1)), atol=1e-10)
    inv = torch.linalg.inv(H)
    for t in range(T):
        assert torch.allclose(cov[:, t], inv[:, t * K:(t + 1) * K, t * K:(t + 1) * K], atol=1e-10)


def test_ou_precision_is_the_inverse_of_the_stationary_ar1_covariance():
    a, T = 0.9, 7
    d, off = ou_precision_blocks(T, a, 1)
    lag = np.abs(np.arange(T)[:, None] - np.arange(T)[None])
    assert np.allclose(dense(d[None], off)[0].numpy(), np.linalg.inv(a ** lag), atol=1e-10)


def test_posterior_paths_are_the_map_under_the_ou_prior_with_its_laplace_covariance():
    rng = np.random.default_rng(1)
    T, N, a = 12, 6, 0.8
    loads = rng.normal(0, 0.5, (N, 1))
    y = rng.poisson(0.5, (T, N)).astype(float)
    off = np.full((T, N), np.log(0.5))
    cov_prior = a ** np.abs(np.arange(T)[:, None] - np.arange(T)[None])
    prec = np.linalg.inv(cov_prior)

    def neg_log_post(x):
        eta = off + np.outer(x, loads[:, 0])
        return (np.exp(eta) - y * eta).sum() + 0.5 * x @ prec @ x

    ref = minimize(neg_log_post, np.zeros(T), method="BFGS", options={"gtol": 1e-10}).x
    as_t = lambda v: torch.from_numpy(np.asarray(v, dtype=np.float64))[None]  # noqa: E731
    x, cov = posterior_paths(as_t(y), as_t(off), torch.ones(1, T, N, dtype=torch.float64), as_t(loads), a)
    assert np.allclose(x[0, :, 0].numpy(), ref, atol=1e-5)
    rate = np.exp(off + np.outer(ref, loads[:, 0]))
    hess = np.diag(rate @ loads[:, 0] ** 2) + prec
    assert np.allclose(cov[0, :, 0, 0].numpy(), np.diag(np.linalg.inv(hess)), atol=1e-6)


def test_loading_update_is_a_newton_step_on_the_expected_log_likelihood():
    g = torch.Generator().manual_seed(2)
    B, T, N, K, V = 3, 5, 4, 2, 7
    units = torch.stack([torch.randperm(V - 1, generator=g)[:N] + 1 for _ in range(B)])
    y = torch.poisson(torch.full((B, T, N), 0.7, dtype=torch.float64), generator=g)
    off = torch.full((B, T, N), math.log(0.7), dtype=torch.float64)
    mask = torch.ones(B, T, N, dtype=torch.float64)
    mask[0, :2] = 0
    x = torch.randn(B, T, K, generator=g, dtype=torch.float64)
    s = torch.randn(B, T, K, K, generator=g, dtype=torch.float64) * 0.2
    cov = s @ s.transpose(-1, -2) + 0.05 * torch.eye(K, dtype=torch.float64)
    M = 0.3 * torch.randn(V, K, generator=g, dtype=torch.float64)
    grad, hess = torch.zeros(V, K, dtype=torch.float64) - M, torch.zeros(V, K, K, dtype=torch.float64) + torch.eye(K)
    for b in range(B):  # one term at a time: E[exp(m.x)] = exp(m.mu + m'Sm/2)
        for t in range(T):
            for n in range(N):
                if mask[b, t, n]:
                    m = M[units[b, n]]
                    v = x[b, t] + cov[b, t] @ m
                    rate = torch.exp(off[b, t, n] + m @ x[b, t] + 0.5 * m @ cov[b, t] @ m)
                    grad[units[b, n]] += y[b, t, n] * x[b, t] - rate * v
                    hess[units[b, n]] += rate * (torch.outer(v, v) + cov[b, t])
    seen = torch.zeros(V, dtype=torch.bool)
    seen[units.flatten()] = True
    expect = torch.where(seen[:, None], M + torch.linalg.solve(hess, grad[..., None])[..., 0].clamp(-0.5, 0.5), M)
    got = update_loadings(M, y, off, mask, units, x, cov, ridge=1.0, iters=1)
    assert torch.allclose(got, expect, atol=1e-10)


def ou_recording(n_trials=60, n_units=20, seed=0):
    """One condition; trials of 100 bins (2 s, event at 1 s). Unit n fires at 20 Hz times
    exp(m[n] x(t)), x a unit-variance OU (tau 10 bins) starting fresh in each trial."""
    rng = np.random.default_rng(seed)
    m = rng.normal(0, 0.5, n_units)
    a = math.exp(-1 / TAU_BINS)
    paths = np.zeros((n_trials, TRIAL_BINS))
    paths[:, 0] = rng.normal(size=n_trials)
    for t in range(1, TRIAL_BINS):
        paths[:, t] = a * paths[:, t - 1] + math.sqrt(1 - a * a) * rng.normal(size=n_trials)
    start = np.arange(n_trials) * (TRIAL_BINS * BIN + 0.5)
    counts = rng.poisson(RATE * BIN * np.exp(paths[:, :, None] * m))  # (trials, T, N)
    j, t, n = np.nonzero(counts)
    k = counts[j, t, n]
    times = np.repeat(start[j] + t * BIN, k) + rng.random(k.sum()) * BIN
    units = np.repeat(n, k)
    order = np.argsort(times)
    trials = Trials(start=start, end=start + TRIAL_BINS * BIN, condition=np.array(["A"] * n_trials),
                    events={"go": start + EVENT_BINS * BIN})
    rec = Recording.from_arrays(session_id="ou", spike_times=times[order], unit_ids=np.array([f"u{i}" for i in range(n_units)]),
                                spike_units=units[order], domain=(0.0, float(start[-1] + 3)), trials=trials)
    return rec, m, paths


@pytest.fixture(scope="module")
def fitted():
    rec, m, paths = ou_recording()
    vocab = UnitVocab.from_recordings([rec])
    index = lambda r: vocab.index(r.unit_ids)  # noqa: E731
    train = [(0, 0.0, float(rec.trials.end[44]) + 0.1)]  # trials 0-44; 45-59 held out
    base = ConditionPrior.fit([rec], train, index, bin_size=BIN, event="go")
    plain = FactorPrior.fit(base, [rec], train, index, k=0, context_bins=25, horizon_bins=25)
    prior = plain.with_dynamics([rec], train, index, k=1, tau_bins=TAU_BINS, em_iters=15)
    return rec, m, paths, index(rec), base, prior


def test_laplace_em_recovers_the_ou_loadings_and_the_context_predicts_the_next_bins(fitted, context_window):
    rec, m, paths, units, base, prior = fitted
    assert abs(np.corrcoef(prior.dynamics.loadings[units, 0], m)[0, 1]) > 0.9
    assert np.isclose(prior.dynamics.a, math.exp(-1 / TAU_BINS))
    errors = {"plain": [], "dynamics": []}
    for j in range(45, 60):
        onset = float(rec.trials.events["go"][j])
        context_starts, starts, counts = context_window(rec, onset)
        truth = RATE * BIN * np.exp(paths[j, EVENT_BINS:EVENT_BINS + 3, None] * m)
        moved = prior.expected(rec, units, starts, context_starts=context_starts, context_counts=counts)[:3]
        for name, rate in (("plain", base.expected(rec, units, starts)[:3]), ("dynamics", moved)):
            errors[name].append(np.abs(np.log(rate / truth)).mean())
    assert np.mean(errors["dynamics"]) < 0.75 * np.mean(errors["plain"])


def test_the_forecast_is_the_exact_expectation_over_the_posterior_and_the_future_noise(fitted, context_window):
    rec, m, paths, units, base, prior = fitted
    onset = float(rec.trials.events["go"][50])
    context_starts, starts, counts = context_window(rec, onset)
    moved = prior.expected(rec, units, starts, context_starts=context_starts, context_counts=counts)
    dyn = prior.dynamics
    as_t = lambda v: torch.from_numpy(np.asarray(v, dtype=np.float64))  # noqa: E731
    log_context = np.log(base.expected(rec, units, context_starts))
    # reference posterior: the whitened path x = chol w, w ~ N(0, I), by the static factors' Newton
    chol = np.linalg.cholesky(dyn.a ** np.abs(np.arange(25)[:, None] - np.arange(25)[None]))
    slopes = np.einsum("nk,ts->tnsk", dyn.loadings[units], chol).reshape(25, len(units), -1)
    w, cov = infer_factors(as_t(counts)[None], as_t(log_context)[None], as_t(slopes)[None])
    mean_last, var_last = chol[-1] @ w[0].numpy(), chol[-1] @ cov[0].numpy() @ chol[-1]
    got_mean, got_cov = (v[0] for v in infer_with_paths(
        as_t(counts)[None], as_t(log_context)[None], torch.zeros(1, 25, len(units), 0, dtype=torch.float64),
        as_t(dyn.loadings[units])[None, None].expand(1, 25, -1, -1), dyn.a))
    assert np.allclose(got_mean.numpy(), mean_last, atol=1e-6) and np.allclose(got_cov.numpy(), var_last, atol=1e-8)
    # Monte Carlo: the last context state from that posterior, then the OU run forward
    rng = np.random.default_rng(0)
    n = 200_000
    x = mean_last + np.sqrt(var_last) * rng.normal(size=n)
    gains = []
    for _ in range(25):
        x = dyn.a * x + math.sqrt(1 - dyn.a ** 2) * rng.normal(size=n)
        gains.append(np.exp(np.outer(x, dyn.loadings[units, 0])).mean(0))
    assert np.allclose(moved / base.expected(rec, units, starts), np.array(gains), rtol=0.01)


def test_static_factors_and_paths_are_inferred_jointly_as_one_gaussian_prior_problem():
    rng = np.random.default_rng(3)
    T, N, Ks, K, a = 8, 10, 2, 2, 0.85
    as_t = lambda v: torch.from_numpy(np.asarray(v, dtype=np.float64))  # noqa: E731
    chol = np.linalg.cholesky(a ** np.abs(np.arange(T)[:, None] - np.arange(T)[None]))
    to_last = np.zeros((Ks + K, Ks + T * K))  # (z, w) -> (z, x_{T-1})
    to_last[:Ks, :Ks] = np.eye(Ks)
    for k in range(K):
        to_last[Ks + k, Ks + k::K] = chol[-1]
    windows, expected = [], []
    for rate, n_units in ((0.8, N), (2.0, N - 3)):  # the second window has 3 fewer units: padded
        static = np.zeros((T, N, Ks))
        static[:, :n_units] = rng.normal(0, 0.3, (T, n_units, Ks))
        loads = np.zeros((T, N, K))
        loads[:, :n_units] = rng.normal(0, 0.4, (n_units, K))
        loads[:2] = 0  # two unobserved bins: the prior carries the path through them
        y, lp = np.zeros((T, N)), np.zeros((T, N))
        y[:, :n_units], lp[:, :n_units] = rng.poisson(rate, (T, n_units)), np.log(rate)
        whitened = np.einsum("tnk,ts->tnsk", loads, chol).reshape(T, N, T * K)
        theta, cov = infer_factors(as_t(y)[None], as_t(lp)[None], as_t(np.concatenate([static, whitened], -1))[None])
        expected.append((to_last @ theta[0].numpy(), to_last @ cov[0].numpy() @ to_last.T))
        windows.append((y, lp, static, loads))
    got_mean, got_cov = infer_with_paths(*(as_t(np.stack(v)) for v in zip(*windows)), a)  # one batch of both
    for b, (mean, cov) in enumerate(expected):
        assert np.allclose(got_mean[b].numpy(), mean, atol=1e-6) and np.allclose(got_cov[b].numpy(), cov, atol=1e-8)
    assert not np.allclose(expected[0][0], expected[1][0], atol=1e-2)


def test_dynamics_survive_leave_one_out_and_the_saved_file(fitted, tmp_path, context_window):
    rec, m, paths, units, base, prior = fitted
    prior.save(tmp_path / "prior.npz")
    loaded = FactorPrior.load(tmp_path / "prior.npz")
    assert np.array_equal(loaded.dynamics.loadings, prior.dynamics.loadings) and loaded.dynamics.a == prior.dynamics.a
    assert prior.leave_one_out().dynamics is prior.dynamics
    onset = float(rec.trials.events["go"][52])
    context_starts, starts, counts = context_window(rec, onset)
    args = dict(context_starts=context_starts, context_counts=counts)
    assert np.allclose(loaded.expected(rec, units, starts, **args), prior.expected(rec, units, starts, **args))


def test_a_batch_of_windows_gets_the_priors_of_its_windows_one_by_one(fitted):
    rec, m, paths, units, base, prior = fitted
    vocab = UnitVocab.from_recordings([rec])
    go = rec.trials.events["go"]
    onsets = [float(go[j]) + dt for j in range(45, 52) for dt in (0.0, 0.13)] + [float(rec.trials.end[58]) + 0.45]
    for p in (prior, prior.leave_one_out(), base):  # paths, leave-one-out paths, plain table
        ds = ForecastDataset([rec], spec=WindowSpec(bin_size=BIN, context_bins=25, horizon_bins=25), vocab=vocab,
                             windows=[Window(0, t) for t in onsets], prior=p)
        batch = ds.__getitems__(list(range(len(onsets))))
        for i, item in enumerate(batch):
            alone = ds[i]
            assert np.allclose(item["prior_counts"], alone["prior_counts"], rtol=1e-5)
            assert np.array_equal(item["target_counts"], alone["target_counts"])
        if p is not base:  # each window moved by its own context's latents
            assert not np.allclose(batch[0]["prior_counts"], batch[2]["prior_counts"], rtol=1e-3)
    assert np.allclose(batch[-1]["prior_counts"][:2], base.unit_mean[units][None])  # between trials: the unit means
