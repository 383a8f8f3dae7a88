"""Single-trial latent factors around the condition prior (`data.rate_prior=psth_factors`).

A trial differs from its condition average in a few shared directions (gain, preparatory state,
slow drifts; GPFA and LFADS model the same thing). With K factors, bin t of a trial has the log-rate

    log rate(t, n) = log prior(c, r_t, n) + sum_k L[n, k] d[r_t, k] z[k],   z ~ N(0, I),

with r_t the bin's time from the trial event (the prior table's row), loadings L (V, K) and time
profile d (R, K) shared by every trial. `fit_factor_model` finds the joint MAP of L, d and every
training trial's z (full-batch Adam, analytic gradients). A window's z is inferred from its context
bins alone (`infer_factors`: Newton, Laplace covariance), and its future bins get the expected count
prior * E[exp(L d z)]: the prior moved by what the context says about this trial. The
`psth_factors` baseline (evaluation/baselines/factors.py) is the same model fitted on aligned windows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from neurohorizon.data.dynamics import OUDynamics, fit_dynamics, infer_with_paths
from neurohorizon.data.prior import ConditionPrior, _trial_spikes, _usable_trials, _whole_bins
from neurohorizon.data.progress import progress


def factor_residual(y, log_prior, loads, d, z, mask):
    """(B, T, N) d NLL / d log-rate: expected minus observed counts where `mask` (broadcast to
    (B, T, N)) is 1, for log-rate log_prior + sum_k loads[b, n, k] d[t, k] z[b, k] (clamped to
    [-10, 10], as rates are)."""
    eta = (log_prior + d @ (loads * z[:, None, :]).transpose(1, 2)).clamp_(-10, 10)
    return eta.exp_().sub_(y).mul_(mask)


def infer_factors(y, log_prior, slopes, iters: int = 30):
    """MAP z (B, K) of counts y (B, T, N) whose log-rate is log_prior + slopes (B, T, N, K) @ z,
    z ~ N(0, I), and its Laplace covariance (B, K, K). Newton's method on a concave objective,
    steps capped at 1 per axis."""
    B, K = len(y), slopes.shape[-1]
    z = torch.zeros(B, K, dtype=y.dtype)
    if K == 0:
        return z, torch.zeros(B, 0, 0, dtype=y.dtype)
    eye = torch.eye(K, dtype=y.dtype)
    tol = 1e-8 if y.dtype == torch.float64 else 1e-5
    for _ in range(iters):
        rate = (log_prior + torch.einsum("btnk,bk->btn", slopes, z)).clamp(-10, 10).exp()
        grad = torch.einsum("btn,btnk->bk", y - rate, slopes) - z
        hess = torch.einsum("btn,btnk,btnl->bkl", rate, slopes, slopes) + eye
        step = torch.linalg.solve(hess, grad).clamp(-1, 1)
        z = z + step
        if step.abs().max() < tol:
            break
    rate = (log_prior + torch.einsum("btnk,bk->btn", slopes, z)).clamp(-10, 10).exp()
    hess = torch.einsum("btn,btnk,btnl->bkl", rate, slopes, slopes) + eye
    return z, torch.linalg.inv(hess)


def factor_forecast_gain(slopes, z, cov):
    """(B, T, N) log E[exp(slopes @ z)] for z ~ N(z, cov): the log factor moving the prior."""
    mean = torch.einsum("btnk,bk->btn", slopes, z)
    return mean + 0.5 * torch.einsum("btnk,bkl,btnl->btn", slopes, cov, slopes)


def fit_factor_model(data: list, k: int, n_vocab: int, n_rows: int, *, iters: int = 400,
                     ridge: float = 1.0, seed: int = 0, deadline: float | None = None):
    """Joint MAP loadings L (V, k) and profile d (R, k), float32, by full-batch Adam.

    data: [(y (B, R, N) counts, log_prior (B, R, N), units (B, N) vocabulary indices, mask (B, R, N)
    1 where observed)], each row b one trial (or window) with its own z. `ridge` pulls d towards 1.
    `deadline` (time.monotonic()): stop the Adam steps there, for a time-budgeted baseline.
    Units never observed keep loadings 0 (no information about them)."""
    g = torch.Generator().manual_seed(seed)
    seen = torch.zeros(n_vocab)
    for _, _, u, m in data:
        seen.index_add_(0, u.flatten(), m.amax(1).flatten())
    L = 0.1 * torch.randn(n_vocab, k, generator=g) * (seen > 0)[:, None]
    d = torch.ones(n_rows, k)
    Z = [torch.zeros(len(y), k) for y, *_ in data]
    n = sum(len(z) for z in Z)
    opt = torch.optim.Adam([L, d, *Z], lr=0.03)
    for _ in progress(range(iters), f"fitting {k} latent factor{'s' * (k != 1)}"):
        if deadline is not None and time.monotonic() > deadline:
            break
        L.grad, d.grad = torch.zeros_like(L), 2 * ridge * (d - 1)
        for (y, lp, u, m), z in zip(data, Z):
            loads = L[u]
            r = factor_residual(y, lp, loads, d, z, m)
            rd = r.transpose(1, 2) @ d  # (B, N, K): d loss / d loads, before z
            z.grad = ((rd * loads).sum(1) + z) / n
            L.grad.index_add_(0, u.flatten(), (rd * z[:, None, :]).flatten(0, 1))
            d.grad += (r @ (loads * z[:, None, :])).sum(0)
        L.grad, d.grad = L.grad / n, d.grad / n
        opt.step()
    return L, d


def n_factors(prior) -> int:
    """The number of latent factors moving `prior` (0 for a plain ConditionPrior)."""
    return prior.loadings.shape[1] if isinstance(prior, FactorPrior) else 0


class FactorPrior:
    """A condition prior whose bins are moved by the trial's latent factors, inferred from the
    window's context (module docstring). Same interface as ConditionPrior, but `expected` also
    needs the context: its bin starts and counts.

    Args:
        base: the ConditionPrior, or its `leave_one_out()` for the training windows.
        loadings: (V, K) per vocabulary unit.
        profile: (R, K) per row of the base's table (time from the event), for the context bins.
        forecast_profile: (R, K) the same for the future bins (default `profile`).
        dynamics: slow latent paths moving the prior within the trial (data/dynamics.py), or None.
    """

    uses_context = True

    def __init__(self, base, loadings: np.ndarray, profile: np.ndarray, forecast_profile: np.ndarray | None = None,
                 dynamics: OUDynamics | None = None):
        self.base = base
        self.table_prior: ConditionPrior = getattr(base, "prior", base)  # the fitted table behind a leave-one-out
        self.loadings = np.asarray(loadings, dtype=np.float64)
        self.profile = np.asarray(profile, dtype=np.float64)
        self.forecast_profile = self.profile if forecast_profile is None else np.asarray(forecast_profile, np.float64)
        self.dynamics = dynamics

    @classmethod
    def fit(cls, prior: ConditionPrior, recordings, intervals, vocab_index, *, k: int, context_bins: int,
            horizon_bins: int, onset_rows=range(-5, 6), iters: int = 400, seed: int = 0) -> FactorPrior:
        """Loadings and profiles from the training trials (`intervals`, as ConditionPrior.fit),
        each seen through the leave-one-out prior, as training windows see it. The joint fit gives
        the profile that z is inferred with; the forecast profile of the bins after windows whose
        onset is `onset_rows` bins from the event is then refitted to z inferred from those windows'
        `context_bins` alone, as a forecast infers it (the rest keeps the joint profile)."""
        if k < 0:
            raise ValueError(f"data.rate_prior_factors must be >= 0 for psth_factors, got {k}")
        if k == 0:  # no static factors: the plain prior, which dynamics can still move
            R = prior.table.shape[1]
            return cls(prior, np.zeros((len(prior.unit_mean), 0)), np.zeros((R, 0)))
        data = _arrays_of(prior.leave_one_out(), recordings, intervals, vocab_index)
        return cls._fit_arrays(prior, data, k, _onsets(prior, onset_rows, context_bins), context_bins,
                               horizon_bins, iters, seed)

    @classmethod
    def _fit_arrays(cls, prior, data, k, onsets, context_bins, horizon_bins, iters, seed) -> FactorPrior:
        L, d = fit_factor_model(data, k, len(prior.unit_mean), prior.table.shape[1], iters=iters, seed=seed)
        out = _refit_forecast_profile(data, L, d, onsets, context_bins, horizon_bins, iters // 2) if onsets else d
        return cls(prior, L.double().numpy(), d.double().numpy(), out.double().numpy())

    @classmethod
    def choose(cls, prior: ConditionPrior, recordings, intervals, valid_intervals, vocab_index, *, ks, context_bins: int,
               horizon_bins: int, onset_rows=range(-5, 6), iters: int = 400, seed: int = 0):
        """The number of factors among `ks` (0: the plain prior) whose forecasts of the validation
        trials' windows starting `onset_rows` bins from the event have the lowest Poisson NLL, as the
        psth_factors baseline chooses. Returns the chosen prior and {K: validation NLL per window}."""
        train = _arrays_of(prior.leave_one_out(), recordings, intervals, vocab_index)
        valid = _arrays_of(prior, recordings, valid_intervals, vocab_index)
        onsets = _onsets(prior, onset_rows, context_bins)
        if not valid or not onsets:
            raise ValueError(f"data.rate_prior_factors=auto chooses on validation trials' windows around "
                             f"{prior.event!r}, and there are none: set data.rate_prior_factors to a number")
        V, R = len(prior.unit_mean), prior.table.shape[1]
        candidates, scores = {}, {}
        for k in ks:
            fitted = cls._fit_arrays(prior, train, k, onsets, context_bins, horizon_bins, iters, seed) if k else None
            L, d, out = (torch.zeros(V, 0), torch.zeros(R, 0), torch.zeros(R, 0)) if fitted is None else (
                torch.from_numpy(a).float() for a in (fitted.loadings, fitted.profile, fitted.forecast_profile))
            windows = _onset_windows(valid, L, d, onsets, context_bins, horizon_bins)
            scores[k] = _forecast_nll(windows, out) / sum(len(w[4]) for w in windows)
            candidates[k] = fitted or prior
        return candidates[min(scores, key=scores.get)], scores

    def with_dynamics(self, recordings, intervals, vocab_index, *, k: int, tau_bins: float, seed: int = 0,
                      em_iters: int = 20) -> FactorPrior:
        """This prior plus k slow latent paths (data/dynamics.py) fitted by Laplace-EM on the training
        trials, each seen through the leave-one-out prior and moved by its static factors as
        inferred from the whole trial."""
        data = _arrays_of(self.table_prior.leave_one_out(), recordings, intervals, vocab_index)
        L, d = torch.from_numpy(self.loadings), torch.from_numpy(self.profile)
        moved = []
        for y, lp, u, m in data:
            y, lp, m = y.double(), lp.double(), m.double()
            slopes = L[u][:, None] * d[None, :, None, :] * m[..., None]
            z, _ = infer_factors(y * m, lp, slopes)
            moved.append((y, lp + torch.einsum("btnk,bk->btn", slopes, z), u, m))
        M = fit_dynamics(moved, k, len(self.table_prior.unit_mean), tau_bins=tau_bins, em_iters=em_iters, seed=seed)
        return FactorPrior(self.base, self.loadings, self.profile, self.forecast_profile,
                           OUDynamics(M.numpy(), float(np.exp(-1.0 / tau_bins))))

    def leave_one_out(self) -> FactorPrior:
        return FactorPrior(self.base.leave_one_out(), self.loadings, self.profile, self.forecast_profile,
                           self.dynamics)

    def trial_conditions(self, rec) -> np.ndarray:
        return self.base.trial_conditions(rec)

    def expected(self, rec, units: np.ndarray, starts: np.ndarray, conditions=None, rec_index=None, *,
                 context_starts: np.ndarray, context_counts: np.ndarray) -> np.ndarray:
        """(T, N) the base prior's expected counts of the bins starting at `starts`, moved by the
        factors inferred from `context_counts` (Tc, N) in bins starting at `context_starts`. Only
        bins of the trial holding the first future bin take part (a trial's factors are its own)."""
        return self.expected_batch([dict(rec=rec, units=units, starts=starts, conditions=conditions, rec_index=rec_index,
                                         context_starts=context_starts, context_counts=context_counts)])[0]

    def expected_batch(self, windows: list[dict]) -> list[np.ndarray]:
        """`expected(**w)` of each window w, the latent inference of all of them run as one batch
        (a training batch's windows share every Newton step's calls)."""
        problems = [self._problem(**w) for w in windows]
        todo = [p for p in problems if p.slopes_in is not None]
        if todo:
            self._infer(todo)
        return [p.future if p.slopes_in is None else p.future * np.exp(np.minimum(p.log_gain, 10)) for p in problems]

    def _problem(self, rec, units, starts, conditions=None, rec_index=None, *, context_starts, context_counts):
        """One window's base expectation and, inside a known trial, what inferring its latents needs."""
        conditions = self.trial_conditions(rec) if conditions is None else conditions
        future = self.base.expected(rec, units, starts, conditions, rec_index=rec_index)
        where = self.table_prior.locate(rec, np.r_[starts[:1], context_starts, starts], conditions, onset=starts[0])
        rows, trial = where[0], where[1]
        if not len(rows) or rows[0] != 0:  # the forecast does not start inside a known trial
            return _Inference(future)
        context = self.base.expected(rec, units, context_starts, conditions, rec_index=rec_index, onset=starts[0])
        same = trial == trial[0]
        row_of = np.full(1 + len(context_starts) + len(starts), -1)
        row_of[rows[same]] = where[3][same]
        Tc = len(context_starts)
        slopes_out, noise, loads = self._slopes(units, row_of[Tc + 1:], self.forecast_profile), 0.0, None
        if self.dynamics is not None:  # z and the paths' state at the last context bin, jointly
            loads = self.dynamics.loadings[units][None] * (row_of[1:Tc + 1] >= 0)[:, None, None]
            inside = (row_of[Tc + 1:] >= 0)[:, None]
            slopes_out = np.concatenate([slopes_out, self.dynamics.forecast_slopes(units, len(starts)) * inside[..., None]], -1)
            noise = 0.5 * self.dynamics.forecast_noise(units, len(starts)) * inside
        return _Inference(future, np.asarray(context_counts, np.float64), np.log(context),
                          self._slopes(units, row_of[1:Tc + 1], self.profile), loads, slopes_out, noise)

    def _infer(self, problems: list) -> None:
        """Set each problem's log_gain: its latents inferred as one padded batch (padded units have
        slopes 0, so they change nothing), then the log E[exp] of their future slopes."""
        N = max(p.counts.shape[1] for p in problems)
        pad = lambda a: torch.from_numpy(np.stack([np.pad(v, [(0, 0), (0, N - v.shape[1])] + [(0, 0)] * (v.ndim - 2))  # noqa: E731
                                                   for v in a]))
        y, log_context, slopes_in = (pad([getattr(p, f) for p in problems]) for f in ("counts", "log_context", "slopes_in"))
        if self.dynamics is None:
            z, cov = infer_factors(y, log_context, slopes_in)
        else:
            z, cov = infer_with_paths(y, log_context, slopes_in, pad([p.loads for p in problems]), self.dynamics.a)
        for b, p in enumerate(problems):
            gain = factor_forecast_gain(torch.from_numpy(p.slopes_out)[None], z[b:b + 1], cov[b:b + 1])
            p.log_gain = gain[0].numpy() + p.noise

    def _slopes(self, units, rows, profile) -> np.ndarray:
        """(T, N, K) d log-rate / d z of bins at table rows `rows` (-1: outside the trial, 0)."""
        slopes = self.loadings[units][None] * profile[np.maximum(rows, 0)][:, None]
        return np.where(rows[:, None, None] >= 0, slopes, 0.0)

    def save(self, path) -> None:
        dynamics = {} if self.dynamics is None else dict(dynamics_loadings=self.dynamics.loadings,
                                                         dynamics_a=self.dynamics.a)
        self.table_prior.save(path, factor_loadings=self.loadings, factor_profile=self.profile,
                              factor_forecast_profile=self.forecast_profile, **dynamics)

    @classmethod
    def load(cls, path) -> ConditionPrior | FactorPrior:
        """The prior saved at `path`: a FactorPrior when it holds factors, else the ConditionPrior."""
        prior = ConditionPrior.load(path)
        with np.load(path) as z:
            if "factor_loadings" not in z:
                return prior
            dynamics = OUDynamics(z["dynamics_loadings"], float(z["dynamics_a"])) if "dynamics_a" in z else None
            return cls(prior, z["factor_loadings"], z["factor_profile"], z["factor_forecast_profile"], dynamics)


@dataclass
class _Inference:
    """One window's forecast by a FactorPrior: its base expectation (T, N), and inside a known trial
    the context counts and log prior (Tc, N), slopes (Tc, N, Ks), path loadings (Tc, N, K) or None,
    the future slopes (T, N, Ks [+ K]) and the future log-rate noise variance / 2 (T, N)."""

    future: np.ndarray
    counts: np.ndarray | None = None
    log_context: np.ndarray | None = None
    slopes_in: np.ndarray | None = None
    loads: np.ndarray | None = None
    slopes_out: np.ndarray | None = None
    noise: np.ndarray | float = 0.0
    log_gain: np.ndarray | None = None


def _onsets(prior: ConditionPrior, onset_rows, context_bins: int) -> list:
    """Table rows of window onsets `onset_rows` bins from the event whose context fits in the table."""
    event_row = -int(round(prior.rel_start / prior.bin_size))
    R = prior.table.shape[1]
    return [event_row + o for o in onset_rows if event_row + o - context_bins >= 0 and event_row + o < R]


def _arrays_of(prior, recordings, intervals, vocab_index) -> list:
    """`_trial_arrays` of every recording with trials in `intervals`, seen through `prior`."""
    event = getattr(prior, "prior", prior).event
    return [b for i, rec in enumerate(recordings)
            if (b := _trial_arrays(prior, rec, i, vocab_index(rec), _usable_trials(rec, event, intervals, i)))]


def _trial_arrays(prior, rec, rec_index: int, units: np.ndarray, trials: list):
    """The `trials` of `rec` as fit_factor_model's tensors over every table row (R): counts, log
    prior (a leave-one-out prior for training trials), vocabulary units and the mask of each
    trial's whole bins."""
    if not trials:
        return None
    p = getattr(prior, "prior", prior)
    R, N = p.table.shape[1], len(units)
    r0 = int(round(p.rel_start / p.bin_size))
    y, lp, m = np.zeros((len(trials), R, N)), np.zeros((len(trials), R, N)), np.zeros((len(trials), R, 1))
    for b, j in enumerate(progress(trials, f"{rec.source}: trials through the prior")):
        a, e = _whole_bins(rec, j, p.event, p.bin_size, r0)
        a, e = max(a, 0), min(e, R)
        if e <= a:
            continue
        r, local = _trial_spikes(rec, j, p.event, p.bin_size, r0, a, e)
        np.add.at(y[b], (r, local), 1.0)
        starts = rec.trials.events[p.event][j] + (np.arange(a, e) + r0) * p.bin_size
        # fitting, not forecasting: every bin of the trial may use the trial's own condition
        lp[b, a:e] = np.log(prior.expected(rec, units, starts, rec_index=rec_index, onset=np.inf))
        m[b, a:e] = 1.0
    as_tensor = lambda a: torch.from_numpy(a).float()  # noqa: E731
    return (as_tensor(y), as_tensor(lp), torch.from_numpy(np.tile(units, (len(trials), 1))).long(),
            as_tensor(np.broadcast_to(m, y.shape).copy()))


def _onset_windows(data: list, L, d, onsets: list, context_bins: int, horizon_bins: int) -> list:
    """Windows starting at each of `onsets` (table rows) in every trial of `data`: (future counts,
    log prior, loadings, mask, z and its Laplace covariance inferred from the context alone, future rows)."""
    windows = []
    for y, lp, u, m in data:
        loads = L[u]
        for o in onsets:
            ctx, fut = slice(o - context_bins, o), slice(o, min(o + horizon_bins, len(d)))
            slopes = loads[:, None] * d[ctx][None, :, None, :] * m[:, ctx, :, None]
            z, cov = infer_factors(y[:, ctx] * m[:, ctx], lp[:, ctx], slopes)
            windows.append((y[:, fut], lp[:, fut], loads, m[:, fut], z, cov, fut))
    return windows


def _refit_forecast_profile(data: list, L, d, onsets: list, context_bins: int, horizon_bins: int, iters: int,
                            ridge: float = 1.0):
    """d with the rows after `onsets` refitted to z inferred from each window's context alone."""
    windows = _onset_windows(data, L, d, onsets, context_bins, horizon_bins)
    lo, hi = min(w[-1].start for w in windows), max(w[-1].stop for w in windows)
    out, ref = d[lo:hi].clone(), d[lo:hi].clone()
    opt = torch.optim.Adam([out], lr=0.03)
    n = sum(len(w[4]) for w in windows)
    for _ in progress(range(iters), "fitting the factors' forecast profile"):
        out.grad = 2 * ridge * (out - ref) * n / len(onsets)
        for y, lp, loads, m, z, _, fut in windows:
            r = factor_residual(y, lp, loads, out[fut.start - lo:fut.stop - lo], z, m)
            out.grad[fut.start - lo:fut.stop - lo] += (r @ (loads * z[:, None, :])).sum(0)
        out.grad /= n
        opt.step()
    return torch.cat([d[:lo], out, d[hi:]])


def _forecast_nll(windows: list, forecast_profile) -> float:
    """Poisson NLL (without log k!) of the windows' future counts under prior * E[exp(L d z)]."""
    total = 0.0
    for y, lp, loads, m, z, cov, fut in windows:
        slopes = loads[:, None] * forecast_profile[fut][None, :, None, :]
        log_rate = (lp + factor_forecast_gain(slopes, z, cov).clamp(max=10)).clamp(-10, 10)
        total += float(((log_rate.exp() - y * log_rate) * m).sum())
    return total
