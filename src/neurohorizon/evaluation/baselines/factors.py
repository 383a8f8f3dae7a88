"""PSTH plus single-trial latent factors: the condition average, moved by what the context says.

A trial differs from its condition average in a few shared directions (gain, preparatory
state, slow drifts; GPFA and LFADS model the same thing). With K factors, window b's log-rate is

    log rate(b, t, n) = log psth(c_b, t, n) + sum_k L[n, k] d[t, k] z[b, k],   z_b ~ N(0, I),

over its context and target bins t, with loadings L (V, K) tied between the two. Fitting
maximises the joint posterior of L, d and every training window's z (full-batch Adam). z is then
re-inferred from each training context alone, as forecasting must, and the target rows of d are
refitted to it. A forecast infers z from the context (Newton, Laplace covariance) and returns the
expected count psth * E[exp(L d z)]. K is chosen on validation NLL among `ks`. The PSTH keeps the
smoothing, shrinkage and rank that the PSTH baseline chooses, so K = 0 is that baseline (its table
spans the context bins too, so it differs slightly at the first target bins). The fit and the
inference are data/factors.py's, which `data.rate_prior=psth_factors` gives the model as its prior.
"""

from __future__ import annotations

import time

import torch

from neurohorizon.data.factors import (
    factor_forecast_gain,
    factor_residual,
    fit_factor_model,
    infer_factors,
)

from ._data import iter_batches
from .base import Baseline
from .simple import PSTH, poisson_nll


def _stacked(batch: dict, horizon: int) -> dict:
    """The batch as the PSTH sees it: one window of context + `horizon` bins, context observed."""
    out = {k: batch[k] for k in ("units", "unit_mask", "condition", "context_counts")}
    Tc = batch["context_counts"].shape[1]
    if "target_counts" in batch:
        out["target_counts"] = torch.cat([batch["context_counts"], batch["target_counts"]], 1)
    else:
        out["n_steps"] = Tc + horizon
    return out


class PSTHFactors(Baseline):
    """Condition PSTH over context and target bins, times exp(L d z) with z inferred from the context.

    Args:
        ks: numbers of factors to try; the lowest validation NLL wins (K = 0 is the PSTH alone);
            without validation data the first is kept.
        k: fix the number of factors instead (no selection).
        iters: Adam steps of the joint fit (the target-profile refit takes half as many).
        profile_ridge: weight of the penalty pulling the time profile d towards 1.
        seed: seed of the loadings' initialisation.
        time_budget_s: wall-clock cap on the factor fits: candidates are fitted in the order of
            `ks` until it is spent (the PSTH alone, K = 0, is always available), and a fit
            running past it stops its Adam steps there.
    """

    name = "psth_factors"

    def __init__(self, *, ks=(0, 1, 2, 4, 8), k: int | None = None, iters: int = 400,
                 profile_ridge: float = 1.0, seed: int = 0, time_budget_s: float | None = None):
        self.ks = (int(k),) if k is not None else tuple(int(x) for x in ks)
        if not self.ks or min(self.ks) < 0:
            raise ValueError(f"psth_factors: numbers of factors must be >= 0, got {self.ks}")
        self.iters, self.profile_ridge, self.seed = int(iters), float(profile_ridge), int(seed)
        self.time_budget_s, self._deadline = time_budget_s, None
        self.tried: list[int] = []
        self.psth = PSTH()
        self.k = 0
        self.loadings = torch.zeros(0, 0, dtype=torch.float64)  # (V, K)
        self.profile = torch.zeros(0, 0, dtype=torch.float64)  # (Tc + T, K)
        self.context_bins = 0

    def fit(self, train_dataset, valid_dataset=None) -> PSTHFactors:
        raw = list(iter_batches(train_dataset, 256))
        self.context_bins = raw[0]["context_counts"].shape[1]
        train = [_stacked(b, 0) for b in raw]
        valid = None if valid_dataset is None else list(iter_batches(valid_dataset, 256))
        # the PSTH baseline's own choices (made on target bins), applied over context + target bins
        settings = PSTH().fit(raw, valid).chosen()
        self.psth = PSTH(**settings).fit(train)
        V, T = len(self.psth.mean_rate.bins), train[0]["target_counts"].shape[1]
        data = [self._arrays(b) for b in train]
        self._deadline = None if self.time_budget_s is None else time.monotonic() + self.time_budget_s
        fits = {}
        for k in self.ks if valid else self.ks[:1]:
            if fits and k > 0 and self._deadline is not None and time.monotonic() > self._deadline:
                break  # budget spent: choose among the candidates fitted so far
            fits[k] = self._fit_factors(data, k, V, T)
        self.tried = list(fits)
        if len(fits) == 1:
            self.k = self.ks[0]
        else:
            self.k = min(fits, key=lambda k: sum(poisson_nll(self._forecast(b, *fits[k]), b) for b in valid))
        self.loadings, self.profile = fits[self.k]
        return self

    def chosen(self) -> dict:
        """The number of factors in use, and the PSTH's own smoothing, shrinkage and rank."""
        return {"factors": self.k, "factors_tried": self.tried, **self.psth.chosen()}

    # ---- fitting ---------------------------------------------------------------------------
    def _fit_factors(self, data: list, k: int, V: int, T: int):
        """Loadings (V, k) and time profile (T, k) from the training arrays `data` (`_arrays`)."""
        if k == 0:
            return torch.zeros(V, 0, dtype=torch.float64), torch.zeros(T, 0, dtype=torch.float64)
        L, d = fit_factor_model(data, k, V, T, iters=self.iters, ridge=self.profile_ridge, seed=self.seed,
                                deadline=self._deadline)
        return L.double(), self._refit_target_profile(data, L, d).double()

    def _refit_target_profile(self, data, L, d):
        """Target rows of d refitted to z inferred from the context only (what a forecast has)."""
        Tc = self.context_bins
        zs = [_infer(y[:, :Tc], lp[:, :Tc], L[u] * m[:, 0, :, None], d[:Tc])[0] for y, lp, u, m in data]
        target = d[Tc:].clone()
        opt = torch.optim.Adam([target], lr=0.03)
        n = sum(len(z) for z in zs)
        for _ in range(self.iters // 2):
            if self._deadline is not None and time.monotonic() > self._deadline:
                break
            target.grad = 2 * self.profile_ridge * (target - d[Tc:])
            for (y, lp, u, m), z in zip(data, zs):
                loads = L[u]
                r = factor_residual(y[:, Tc:], lp[:, Tc:], loads, target, z, m)
                target.grad += (r @ (loads * z[:, None, :])).sum(0)
            target.grad /= n
            opt.step()
        return torch.cat([d[:Tc], target])

    def _arrays(self, stacked: dict):
        """(counts (B, T, N), log PSTH (B, T, N), units (B, N) clipped to the vocabulary, mask (B, 1, N))."""
        V = len(self.psth.mean_rate.bins)
        mask = stacked["unit_mask"] & (stacked["units"] < V)
        log_psth = self.psth.predict(stacked).clamp_min(1e-6).log()
        return stacked["target_counts"].float(), log_psth.float(), stacked["units"].clamp(max=V - 1), mask[:, None].float()

    # ---- forecasting -----------------------------------------------------------------------
    def predict(self, batch: dict) -> torch.Tensor:
        return self._forecast(batch, self.loadings, self.profile)

    def _forecast(self, batch: dict, loadings, profile) -> torch.Tensor:
        """(B, T, N) expected counts with loadings (V, K) and time profile (Tc + T, K)."""
        T, Tc = self._horizon(batch), batch["context_counts"].shape[1]
        if Tc != self.context_bins:
            raise ValueError(f"psth_factors: fitted on {self.context_bins} context bins, got {Tc}")
        stacked = _stacked({k: v for k, v in batch.items() if k != "target_counts"}, T)
        rate = self.psth.predict(stacked).double()
        if loadings.shape[1] == 0:
            return rate[:, Tc:].float()
        V = len(loadings)
        loads = loadings[batch["units"].clamp(max=V - 1)] * (
            batch["unit_mask"] & (batch["units"] < V))[..., None].double()
        y, lp = batch["context_counts"].double(), rate[:, :Tc].clamp_min(1e-6).log()
        z, cov = _infer(y, lp, loads, profile[:Tc])
        Tf = min(T, len(profile) - Tc)  # bins beyond the fitted horizon keep the PSTH
        slopes = torch.einsum("bnk,tk->btnk", loads, profile[Tc:Tc + Tf])  # d log-rate / d z
        out = rate[:, Tc:].clone()
        out[:, :Tf] = out[:, :Tf] * factor_forecast_gain(slopes, z, cov).clamp(max=10).exp()
        return out.float()


def _infer(y, log_psth, loads, d):
    """MAP z (B, K) of the context counts y (B, Tc, N), loadings (B, N, K), profile d (Tc, K),
    and its Laplace covariance (B, K, K)."""
    return infer_factors(y, log_psth, torch.einsum("bnk,tk->btnk", loads, d))
