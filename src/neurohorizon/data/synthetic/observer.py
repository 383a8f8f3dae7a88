"""Ideal observer for reach: the best forecast that the context's spikes allow.

The causal oracle (causal.py) knows this trial's gain, preparatory jitter and OU state at
the go cue. A forecaster only sees spikes. The observer knows everything the causal oracle
knows except those three, which it infers from the context spikes on the 5 ms grid under
their true priors:

- gain g (log-normal, sd 0.15): a grid of values, each weighted by its prior and by the
  (Laplace) evidence p(spikes | g);
- given g, the jitter j (6-d) and the OU path over the context (3-d per 5 ms step) have a
  Gaussian prior and a Poisson likelihood log-linear in them, so the posterior is
  log-concave; Newton's method finds its mode and the Hessian its covariance (Laplace).

Given g and the reaction time, the future log-rate is affine in (j, OU at the go cue), so
E[min(exp(D), cap)] has the causal oracle's closed form; it is averaged over the RT law and
over g's posterior. The observer is also told what no model is given (the generator's
weights, the previous trial's movement, the target onset time), so up to Laplace's
approximation its expected score bounds any forecaster of the same context.
"""

from __future__ import annotations

import numpy as np

from neurohorizon.data.binning import bin_spikes_at_edges
from neurohorizon.data.recording import Recording
from neurohorizon.data.synthetic import reach
from neurohorizon.data.synthetic.causal import (
    N_TASK,
    ReachTruth,
    clipped_lognormal_mean,
    rt_law,
)
from neurohorizon.data.synthetic.common import FINE_DT, MAX_RATE_HZ

D_PREP = N_TASK - 1  # the 6 preparatory/rotation dims (the 7th is the CIS)
PHI = float(np.exp(-FINE_DT / reach.TAU_OU))  # OU AR(1) coefficient per fine step


def ou_precision(n: int) -> np.ndarray:
    """(n, n) precision of n steps of the stationary unit-variance AR(1) with coefficient PHI."""
    q = np.zeros((n, n))
    idx = np.arange(n)
    q[idx, idx] = 1 + PHI**2
    q[0, 0] = q[-1, -1] = 1.0
    q[idx[:-1], idx[:-1] + 1] = q[idx[:-1] + 1, idx[:-1]] = -PHI
    return q / (1 - PHI**2)


class ContextPosterior:
    """Posterior of (j, OU path) given the context counts y (T, N) and a gain g.

    Log-rate eta = a + g r_k c6 . (mu + j) + c_ou . o_k, with `a` (T, N) the known drive and
    r (T,) the preparatory relaxation (0 before target onset).
    """

    def __init__(self, y, a, r, mu, c6, c_ou):
        self.y, self.a, self.r, self.mu, self.c6, self.c_ou = y, a, r, mu, c6, c_ou
        T = len(y)
        self.n = D_PREP + 3 * T
        self.prior = np.zeros((self.n, self.n))
        self.prior[:D_PREP, :D_PREP] = np.eye(D_PREP) / reach.JITTER_SD**2
        self.prior[D_PREP:, D_PREP:] = np.kron(ou_precision(T), np.eye(3))

    def _eta(self, theta, g):
        j, o = theta[:D_PREP], theta[D_PREP:].reshape(-1, 3)
        return self.a + g * self.r[:, None] * (self.c6 @ (self.mu + j))[None] + o @ self.c_ou.T

    def _objective(self, theta, g):
        eta = self._eta(theta, g)
        return float((self.y * eta - FINE_DT * np.exp(eta)).sum() - 0.5 * theta @ self.prior @ theta)

    def _grad_hess(self, theta, g):
        T = len(self.y)
        w = FINE_DT * np.exp(self._eta(theta, g))  # (T, N) expected counts
        resid = self.y - w
        grad = -self.prior @ theta
        grad[:D_PREP] += g * (self.r[:, None] * resid).sum(0) @ self.c6
        grad[D_PREP:] += (resid @ self.c_ou).ravel()
        hess = self.prior.copy()
        hess[:D_PREP, :D_PREP] += g**2 * np.einsum("k,kn,na,nb->ab", self.r**2, w, self.c6, self.c6)
        cross = g * np.einsum("k,kn,na,nb->kab", self.r, w, self.c6, self.c_ou)  # (T, 6, 3)
        hess[:D_PREP, D_PREP:] += cross.transpose(1, 0, 2).reshape(D_PREP, 3 * T)
        hess[D_PREP:, :D_PREP] = hess[:D_PREP, D_PREP:].T
        blocks = np.einsum("kn,na,nb->kab", w, self.c_ou, self.c_ou)  # (T, 3, 3)
        for k in range(T):
            s = D_PREP + 3 * k
            hess[s : s + 3, s : s + 3] += blocks[k]
        return grad, hess

    def fit(self, g, start=None, iters: int = 50, tol: float = 1e-8):
        """Mode, negative Hessian there, and the Laplace log evidence (up to g-free terms)."""
        theta = np.zeros(self.n) if start is None else start.copy()
        value = self._objective(theta, g)
        for _ in range(iters):
            grad, hess = self._grad_hess(theta, g)
            step = np.linalg.solve(hess, grad)
            t = 1.0
            while (new := self._objective(theta + t * step, g)) < value and t > 1e-4:
                t /= 2  # damped Newton: the objective is concave, so halving always ends
            theta, gain_in_value, value = theta + t * step, new - value, new
            if abs(gain_in_value) < tol * max(1.0, abs(value)):
                break
        _, hess = self._grad_hess(theta, g)
        log_evidence = value - 0.5 * np.linalg.slogdet(hess)[1]
        return theta, hess, log_evidence


def _future_maps(truth: ReachTruth, i: int, steps: np.ndarray, rt: int, g: float):
    """For future fine `steps` and one RT (fine steps): maps (F, 6, 6), the 6-d task latent
    being maps[k] @ p with p = g (mu + j), and the known rest of the 7-d task latent (F, 7)."""
    k0 = truth.sched["target"][i]
    kr = truth.sched["go"][i] + rt - reach.ROT_LEAD_STEPS
    maps = np.zeros((len(steps), D_PREP, D_PREP))
    known = np.zeros((len(steps), N_TASK))
    before = steps < kr
    relax = 1 - np.exp(-((steps[before] - k0 + 0.5) * FINE_DT) / reach.TAU_PREP)
    maps[before] = relax[:, None, None] * np.eye(D_PREP)
    after = steps[~before]
    if len(after):
        tau = (after - kr + 0.5) * FINE_DT
        start_scale = 1 - np.exp(-(kr - k0) * FINE_DT / reach.TAU_PREP)  # rotation_start
        basis = np.stack([reach.movement_part(e, g, tau)[:, :D_PREP] for e in np.eye(D_PREP)], -1)
        maps[~before] = start_scale * basis
        known[~before] = truth._tail(i - 1, after)
        known[~before, -1] += reach.movement_part(np.zeros(D_PREP), g, tau)[:, -1]
    return maps, known


def _forecast(truth: ReachTruth, i, steps, g, mean, cov):
    """(F, N) E[rate] over the RT law for a Gaussian (j, o_last) ~ N(mean, cov) (9-d)."""
    c6, c7, c_ou = truth.c_task[:, :D_PREP], truth.c_task, truth.c_ou
    h = steps - steps[0] + 1
    decay = PHI**h  # OU mean factor h steps after the last context step
    ou_var = (1 - PHI ** (2 * h))[:, None] * (c_ou**2).sum(1)[None]
    mu = truth.prep_mean[i]
    rt_steps, rt_prob = rt_law()
    out = 0.0
    for rt, prob in zip(rt_steps, rt_prob):
        maps, known = _future_maps(truth, i, steps, rt, g)
        lin_j = g * (c6 @ maps)  # (F, N, 6) d eta / d j
        m = truth.offset + known @ c7.T + lin_j @ (mu + mean[:D_PREP]) \
            + decay[:, None] * (c_ou @ mean[D_PREP:])[None]
        u = np.concatenate([lin_j, decay[:, None, None] * c_ou[None]], -1)  # (F, N, 9)
        var = ((u @ cov) * u).sum(-1) + ou_var
        out = out + prob * clipped_lognormal_mean(m, var, MAX_RATE_HZ)
    return out


def reach_observer_expected(rec: Recording, starts, *, n_bins: int, bin_size: float = 0.02,
                            context: float = 0.5, truth: ReachTruth | None = None,
                            n_gains: int = 25) -> np.ndarray:
    """(n, n_bins, N) the ideal observer's expected counts for windows starting at go cues
    `starts`, from the spikes of the `context` seconds before each."""
    truth = truth or ReachTruth(rec)
    per_bin = int(round(bin_size / FINE_DT))
    n_ctx = int(round(context / FINE_DT))
    times, units = np.asarray(rec.data.spikes.timestamps), np.asarray(rec.data.spikes.unit_index)
    z = np.linspace(-4, 4, n_gains)
    out = np.empty((len(starts), n_bins, len(truth.offset)))
    for w, start in enumerate(np.asarray(starts, dtype=float)):
        i = truth.trial_at_go(start)
        G, k0 = truth.sched["go"][i], truth.sched["target"][i]
        if n_ctx > G:
            raise ValueError(f"{rec.source}: the {context:.3f} s context before the go cue at "
                             f"{start:.3f} s starts before the recording")
        ctx = np.arange(G - n_ctx, G)
        y = bin_spikes_at_edges(times, units, len(truth.offset), np.append(ctx, G) * FINE_DT)
        known = truth.latent[ctx, :N_TASK].copy()
        known[ctx >= k0, :D_PREP] = 0.0  # the preparatory part is what the observer infers
        r = np.where(ctx >= k0, 1 - np.exp(-((ctx - k0 + 0.5) * FINE_DT) / reach.TAU_PREP), 0.0)
        post = ContextPosterior(y.astype(float), truth.offset + known @ truth.c_task.T, r,
                                truth.prep_mean[i], truth.c_task[:, :D_PREP], truth.c_ou)
        steps = G + np.arange(n_bins * per_bin)
        sel = np.r_[np.arange(D_PREP), post.n - 3 + np.arange(3)]  # j and the last OU value
        rate = 0.0
        for weight, g, theta, hess in _gain_posterior(post, z):
            cov = np.linalg.inv(hess)[np.ix_(sel, sel)]
            rate = rate + weight * _forecast(truth, i, steps, g, theta[sel], cov)
        out[w] = rate.reshape(n_bins, per_bin, -1).sum(1) * FINE_DT
    return out


def reach_generator_psth(rec: Recording, starts, *, n_bins: int, bin_size: float = 0.02,
                         truth: ReachTruth | None = None, n_gains: int = 25) -> np.ndarray:
    """(n, n_bins, N) the observer's forecast before it sees any spike: the condition average
    of the generator itself (gain, jitter and OU state averaged over their priors). The gap
    between a condition prior fitted from trials and this is the cost of estimating the PSTH;
    the gap between this and the observer is what single-trial inference is worth."""
    truth = truth or ReachTruth(rec)
    per_bin = int(round(bin_size / FINE_DT))
    z = np.linspace(-4, 4, n_gains)
    weights = np.exp(-0.5 * z**2) / np.exp(-0.5 * z**2).sum()
    cov = np.diag(np.r_[np.full(D_PREP, reach.JITTER_SD**2), np.ones(3)])  # the prior of (j, o_last)
    out = np.empty((len(starts), n_bins, len(truth.offset)))
    for w, start in enumerate(np.asarray(starts, dtype=float)):
        i = truth.trial_at_go(start)
        steps = truth.sched["go"][i] + np.arange(n_bins * per_bin)
        rate = sum(wk * _forecast(truth, i, steps, g, np.zeros(D_PREP + 3), cov)
                   for wk, g in zip(weights, np.exp(reach.LOG_GAIN_SD * z)))
        out[w] = rate.reshape(n_bins, per_bin, -1).sum(1) * FINE_DT
    return out


def _gain_posterior(post: ContextPosterior, z: np.ndarray) -> list:
    """[(weight, g, mode, hessian)] over the gains exp(LOG_GAIN_SD z) holding 99.99 % of the
    posterior mass (weights renormalised): prior N(0, 1) in z times the Laplace evidence."""
    fits, theta = [], None
    for g in np.exp(reach.LOG_GAIN_SD * z):
        theta, hess, log_ev = post.fit(g, start=theta)  # warm start from the neighbouring gain
        fits.append((g, theta, hess, log_ev))
    logw = np.array([f[3] for f in fits]) - 0.5 * z**2
    weights = np.exp(logw - logw.max())
    weights /= weights.sum()
    order = np.argsort(weights)[::-1]
    keep = order[: np.searchsorted(np.cumsum(weights[order]), 1 - 1e-4) + 1]
    total = weights[keep].sum()
    return [(weights[k] / total, *fits[k][:3]) for k in keep]
