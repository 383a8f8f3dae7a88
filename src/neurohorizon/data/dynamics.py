"""Slow single-trial latent dynamics around the factor prior (`data.rate_prior_dynamics=K`).

The factor prior's latents are constant through a trial, so a forecast can only average them over
the context. Here the log-rate also moves with K latent paths x_k(t), each a stationary
unit-variance Ornstein-Uhlenbeck process (an AR(1) in bins, a = exp(-bin / tau)), through
loadings M (V, K) shared by every trial:

    log rate(t, n) = log prior + static factors + sum_k M[n, k] x_k(t)

This is GPFA with an exponential kernel, or a Poisson linear dynamical system (PLDS) with a
fixed diagonal dynamics matrix. The context's last bins say where x is now, and x(t + h) =
a^h x(t) + noise of variance 1 - a^(2h): the forecast relaxes to the static prior as h grows.

M is fitted by Laplace-EM over the training trials (`fit_dynamics`): the E-step finds each
trial's posterior paths (Newton; the Hessian is block-tridiagonal in time, so a solve costs
O(T K^3)), the M-step maximises the expected Poisson log-likelihood per unit (Newton, exact
Gaussian expectation of exp). A joint MAP of M and the paths overfits: the paths explain spike noise.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from neurohorizon.data.progress import progress


def solve_block_tridiagonal(diag, off: float, rhs):
    """Solve H s = rhs for symmetric H with (K, K) blocks diag (B, T, K, K) on its diagonal and
    off * I on both off-diagonals. Returns s (B, T, K) and the diagonal blocks of H^-1 (B, T, K, K)."""
    T = diag.shape[1]
    schur, carry = [diag[:, 0]], [rhs[:, 0]]
    inv = [torch.linalg.inv(schur[0])]
    for t in range(1, T):
        schur.append(diag[:, t] - off * off * inv[-1])
        carry.append(rhs[:, t] - off * (inv[-1] @ carry[-1][..., None])[..., 0])
        inv.append(torch.linalg.inv(schur[-1]))
    sol, cov = [None] * T, [None] * T
    sol[-1], cov[-1] = (inv[-1] @ carry[-1][..., None])[..., 0], inv[-1]
    for t in range(T - 2, -1, -1):
        sol[t] = (inv[t] @ (carry[t] - off * sol[t + 1])[..., None])[..., 0]
        cov[t] = inv[t] + off * off * inv[t] @ cov[t + 1] @ inv[t]
    return torch.stack(sol, 1), torch.stack(cov, 1)


def ou_precision_blocks(T: int, a: float, k: int, dtype=torch.float64):
    """The stationary unit-variance AR(1) prior of k independent paths over T bins as
    (diagonal (T, k, k), off-diagonal scalar): its precision is tridiagonal in time."""
    scale = 1.0 / (1.0 - a * a)
    d = torch.full((T,), (1 + a * a) * scale, dtype=dtype)
    d[0] = d[-1] = scale
    return d[:, None, None] * torch.eye(k, dtype=dtype), -a * scale


def posterior_paths(y, offset, mask, loads, a: float, iters: int = 30, init=None):
    """Laplace posterior of the paths x (B, T, K) of counts y (B, T, N) with log-rate
    offset + x @ loads^T (loads (B, N, K)), where `mask` (B, T, N) is 1: MAP mean (B, T, K)
    and marginal covariances (B, T, K, K). Newton steps from `init` (default 0), capped at 1
    per coordinate."""
    B, T, K = len(y), y.shape[1], loads.shape[-1]
    prior_diag, off = ou_precision_blocks(T, a, K, y.dtype)
    x = torch.zeros(B, T, K, dtype=y.dtype) if init is None else init
    tol = 1e-8 if y.dtype == torch.float64 else 1e-5
    for _ in range(iters + 1):
        rate = (offset + x @ loads.transpose(1, 2)).clamp(-10, 10).exp() * mask
        hess = torch.einsum("btn,bnk,bnl->btkl", rate, loads, loads) + prior_diag
        prior_grad = prior_diag @ x[..., None]
        prior_grad = prior_grad[..., 0] + off * (torch.nn.functional.pad(x[:, 1:], (0, 0, 0, 1))
                                                 + torch.nn.functional.pad(x[:, :-1], (0, 0, 1, 0)))
        grad = (y * mask - rate) @ loads - prior_grad
        step, cov = solve_block_tridiagonal(hess, off, grad)
        if step.abs().max() < tol:
            break
        x = x + step.clamp(-1, 1)
    return x, cov


def update_loadings(M, y, offset, mask, units, x, cov, ridge: float, iters: int = 3):
    """Newton steps per vocabulary unit on E_q[log p(y | x)] - ridge / 2 |M_v|^2, q the paths'
    Gaussian posterior (x (B, T, K), cov (B, T, K, K)); units (B, N) index M's rows. A few
    steps per EM iteration suffice (generalised EM)."""
    K = M.shape[1]
    flat_units = units.reshape(-1)
    seen = torch.zeros(len(M), dtype=M.dtype).index_add_(0, flat_units, mask.amax(1).reshape(-1)) > 0
    observed_x = torch.einsum("btn,btk->bnk", y * mask, x)
    eye = torch.eye(K, dtype=M.dtype)
    for _ in range(iters):
        m = M[units]  # (B, N, K)
        cm = torch.einsum("btkl,bnl->btnk", cov, m)
        v = x[:, :, None] + cm  # d/dm of the exponent
        rate = (offset + (m[:, None] * (x[:, :, None] + 0.5 * cm)).sum(-1)).clamp(-10, 10).exp() * mask
        grad = observed_x - torch.einsum("btn,btnk->bnk", rate, v)
        hess = torch.einsum("btn,btnk,btnl->bnkl", rate, v, v) + torch.einsum("btn,btkl->bnkl", rate, cov)
        grad = torch.zeros_like(M).index_add_(0, flat_units, grad.reshape(-1, K)) - ridge * M
        hess = torch.zeros(len(M), K, K, dtype=M.dtype).index_add_(0, flat_units, hess.reshape(-1, K, K)) + ridge * eye
        step = torch.linalg.solve(hess, grad[..., None])[..., 0].clamp(-0.5, 0.5)
        M = torch.where(seen[:, None], M + step, M)
    return M


def fit_dynamics(data: list, k: int, n_vocab: int, *, tau_bins: float, em_iters: int = 20,
                 ridge: float = 1.0, seed: int = 0) -> torch.Tensor:
    """Loadings M (n_vocab, k), float64, by Laplace-EM. data: [(y (B, T, N) counts, offset
    (B, T, N) log-rate without the paths, units (B, N) vocabulary indices, mask (B, T, N))],
    each row one trial. Units never observed keep loadings 0."""
    seen = torch.zeros(n_vocab, dtype=torch.float64)
    for _, _, u, m in data:
        seen.index_add_(0, u.flatten(), m.amax(1).flatten())
    g = torch.Generator().manual_seed(seed)
    M = 0.05 * torch.randn(n_vocab, k, generator=g, dtype=torch.float64) * (seen > 0)[:, None]
    a = math.exp(-1.0 / tau_bins)
    paths = [None] * len(data)
    for _ in progress(range(em_iters), f"fitting {k} latent path{'s' * (k != 1)} (Laplace-EM)"):
        posteriors = [posterior_paths(y, off, m, M[u], a, init=x) for (y, off, u, m), x in zip(data, paths)]
        paths = [x for x, _ in posteriors]
        for (y, off, u, m), (x, cov) in zip(data, posteriors):
            M = update_loadings(M, y, off, m, u, x, cov, ridge)
    return M


def infer_with_paths(y, log_prior, static, loads, a: float, iters: int = 30):
    """Joint Laplace posterior of static factors z (Ks,) ~ N(0, I) and paths x (T, K) under the
    OU prior, for each of B windows of counts y (B, T, N) with log-rate log_prior + static @ z +
    loads @ x_t (static (B, T, N, Ks), loads (B, T, N, K), both 0 where a bin or unit is
    unobserved). Returns the MAP of (z, x_{T-1}) (B, Ks + K) and its covariance (B, Ks + K, Ks + K):
    all a forecast needs. Newton on the dense (Ks + T K) Hessian, scattered from per-bin blocks in
    one op; a batch of windows shares each step's calls (a forecast runs this for every window)."""
    B, T, N, Ks = static.shape
    K = loads.shape[-1]
    jac = torch.cat([static, loads], -1)  # (B, T, N, D): d log-rate(t, n) / d (z, x_t)
    where = _bin_to_joint(T, Ks, K)  # (T, D): each bin's (z, x_t) in theta
    prec = _ou_joint_precision(T, a, Ks, K, y.dtype)
    D, P = Ks + K, len(prec)
    index = (torch.arange(B)[:, None, None, None], where[:, :, None].expand(T, D, D), where[:, None, :].expand(T, D, D))
    theta = torch.zeros(B, P, dtype=y.dtype)
    tol = 1e-8 if y.dtype == torch.float64 else 1e-5
    for _ in range(iters + 1):
        rate = (log_prior + (jac @ theta[:, where, None])[..., 0]).clamp(-10, 10).exp()
        grad = torch.zeros_like(theta).index_add_(1, where.flatten(), ((y - rate)[:, :, None] @ jac).flatten(1))
        blocks = jac.transpose(-1, -2) @ (rate[..., None] * jac)  # (B, T, D, D)
        chol = torch.linalg.cholesky(prec.expand(B, P, P).clone().index_put_(index, blocks, accumulate=True))
        step = torch.cholesky_solve((grad - theta @ prec)[..., None], chol)[..., 0]
        if step.abs().max() < tol:
            break
        theta = theta + step.clamp(-1, 1)
    keep = where[-1]
    unit = torch.zeros(P, D, dtype=y.dtype)
    unit[keep, torch.arange(D)] = 1.0
    return theta[:, keep], torch.cholesky_solve(unit.expand(B, P, D), chol)[:, keep]


@functools.lru_cache(maxsize=16)
def _bin_to_joint(T: int, Ks: int, K: int):
    """(T, Ks + K) positions in theta = (z, x_0, .., x_{T-1}) of each bin's (z, x_t)."""
    paths = Ks + torch.arange(T)[:, None] * K + torch.arange(K)[None]
    return torch.cat([torch.arange(Ks).expand(T, Ks), paths], 1)


@functools.lru_cache(maxsize=16)
def _ou_joint_precision(T: int, a: float, Ks: int, K: int, dtype):
    """Prior precision of theta = (z, x_0, .., x_{T-1}): I for z, the OU paths' tridiagonal.
    Cached (every window of a prior asks for the same one); callers must not modify it."""
    diag, off = ou_precision_blocks(T, a, K, dtype)
    prec = torch.block_diag(torch.eye(Ks, dtype=dtype), *diag)
    i = torch.arange((T - 1) * K)
    prec[Ks + i, Ks + K + i] = prec[Ks + K + i, Ks + i] = off
    return prec


@dataclass
class OUDynamics:
    """Fitted slow dynamics: loadings (V, K) and the per-bin AR coefficient a = exp(-bin / tau)."""

    loadings: np.ndarray
    a: float

    def forecast_slopes(self, units: np.ndarray, horizon: int) -> np.ndarray:
        """(H, N, K) d log-rate / d x(Tc - 1) of the H future bins: x(Tc - 1 + h) = a^h x(Tc - 1) + noise."""
        return self.a ** np.arange(1, horizon + 1)[:, None, None] * self.loadings[units][None]

    def forecast_noise(self, units: np.ndarray, horizon: int) -> np.ndarray:
        """(H, N) variance of the future log-rate that the context cannot predict: M M^T (1 - a^2h)."""
        fresh = 1.0 - self.a ** (2 * np.arange(1, horizon + 1))
        return fresh[:, None] * (self.loadings[units] ** 2).sum(1)[None]
