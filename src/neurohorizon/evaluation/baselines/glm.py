"""Ridge-regularised Poisson GLM on binned population history, one GLM per session.

Features: the last `history` (L) context bins of every unit of the session, log1p- or
raw-transformed and standardised, plus a bias. Sessions have different units, so a GLM
is fitted per unit set (the sorted vocab indices of a window's real units; one session =
one unit set) and windows are routed to their session's GLM at prediction time.

Modes:
  "autoregressive": one model for bin t+1 from bins t-L+1..t, fitted on every (history,
      next bin) pair inside the training windows (context and target), rolled out over the
      horizon feeding back its own expected counts (or samples in `sample`).
  "direct": a separate GLM per horizon step h predicting target bin h from the last L
      context bins; no feedback, so sampled trajectories are independent across bins.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ._data import collect_by_units, group_rows, put_cols, take_cols
from .base import Baseline

ETA_RANGE = (-10.0, 10.0)  # same log-rate clamp as the likelihoods


def fit_poisson_ridge(
    X: torch.Tensor,
    Y: torch.Tensor,
    ridge: float,
    *,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    max_iter: int = 500,
    tol: float = 1e-7,
    deadline: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Minimise  mean_i sum_k [exp(eta_ik) - y_ik eta_ik] + ridge/2 ||W||²,  eta = X W + b.

    The K outputs are independent problems sharing the design X; they are solved jointly
    with full-batch L-BFGS (strong Wolfe line search). The bias is not penalised.

    Args:
        X: (n, F) features; Y: (n, K) counts; init: optional warm start (W, b).
        deadline: ``time.monotonic()`` value after which no new block of iterations starts
            (the solution so far is returned, `info["stopped_early"]` set).
    Returns:
        W (F, K), b (K,), info dict(loss, grad_norm (max abs gradient), n_evals, n_iter).
    """
    X, Y = X.double(), Y.double()
    if init is None:
        W = torch.zeros(X.shape[1], Y.shape[1], dtype=torch.float64)
        b = Y.mean(0).clamp(min=1e-4).log()
    else:
        W, b = (t.detach().clone().double() for t in init)
    W.requires_grad_(True)
    b.requires_grad_(True)
    block = 10  # iterations per L-BFGS call; its state (history) carries over between calls
    opt = torch.optim.LBFGS(
        [W, b],
        lr=1.0,
        max_iter=block,
        max_eval=2 * block,
        tolerance_grad=tol,
        tolerance_change=1e-15,
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    n_evals = 0

    def objective():
        eta = X @ W + b
        return (torch.exp(eta) - Y * eta).sum(1).mean() + 0.5 * ridge * (W * W).sum()

    def closure():
        nonlocal n_evals
        n_evals += 1
        opt.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    n_iter, stopped_early, started = 0, False, time.monotonic()
    while n_iter < max_iter:
        size = block if deadline is None else _block_within(deadline, started, n_evals, block)
        if size == 0:
            stopped_early = True
            break
        opt.param_groups[0].update(max_iter=size, max_eval=2 * size)
        evals_before = n_evals
        opt.step(closure)
        done = opt.state[opt._params[0]]["n_iter"] - n_iter
        n_iter += done
        if done < size and n_evals - evals_before < 2 * size:  # converged, not out of evaluations
            break
    loss = objective()
    gW, gb = torch.autograd.grad(loss, [W, b])
    grad = max(float(gW.abs().max()), float(gb.abs().max()))
    info = {"loss": float(loss.detach()), "grad_norm": grad, "n_evals": n_evals, "n_iter": n_iter,
            "stopped_early": stopped_early}
    return W.detach(), b.detach(), info


def _block_within(deadline: float, started: float, n_evals: int, block: int) -> int:
    """L-BFGS iterations for the next call that fit before `deadline` at the pace so far
    (an iteration takes up to 2 evaluations); 1 before any pace is known, 0 when out of time."""
    now = time.monotonic()
    if now > deadline:
        return 0
    if n_evals == 0:
        return 1
    per_eval = (now - started) / n_evals
    return max(1, min(block, int((deadline - now) / (2 * per_eval))))


class PoissonGLM(Baseline):
    """Poisson GLM forecaster (see module docstring).

    Args:
        mode: "autoregressive" or "direct".
        history: L context bins used as features (needs Tc >= L).
        transform: "log1p" or "raw" feature transform of the counts.
        ridges: ridge grid; the value with the lowest validation forecast NLL (over the
            whole horizon) is kept per session. Without validation data for a session,
            `default_ridge` is used.
        ridge: fix the ridge (skips the search).
        max_windows: windows per session used for fitting/selection (evenly spaced).
        max_samples: cap on autoregressive (history, next bin) training pairs per session.
        time_budget_s: wall-clock cap on `fit`, shared evenly by the remaining (session, ridge)
            fits; a fit out of time keeps its iterate so far (recorded in the model's info).

    Forecasts are capped at each unit's largest training count per bin (at least 1), so an
    autoregressive rollout whose feedback loop is unstable saturates instead of diverging.
    """

    def __init__(
        self,
        *,
        mode: str = "autoregressive",
        history: int = 5,
        transform: str = "log1p",
        ridges=(1e-3, 1e-2, 1e-1, 1.0),
        ridge: float | None = None,
        default_ridge: float = 1e-2,
        max_iter: int = 300,
        max_windows: int = 5000,
        max_samples: int = 50000,
        time_budget_s: float | None = None,
        seed: int = 0,
    ):
        if mode not in ("autoregressive", "direct"):
            raise ValueError(f"PoissonGLM: mode must be 'autoregressive' or 'direct', got {mode!r}")
        if transform not in ("log1p", "raw"):
            raise ValueError(f"PoissonGLM: transform must be 'log1p' or 'raw', got {transform!r}")
        self.mode, self.L, self.transform = mode, int(history), transform
        self.ridges = [ridge] if ridge is not None else sorted(ridges, reverse=True)
        self.default_ridge = default_ridge if ridge is None else ridge
        self.max_iter, self.max_windows, self.max_samples = max_iter, max_windows, max_samples
        self.seed, self.time_budget_s = seed, time_budget_s
        self.name = f"glm_{'ar' if mode == 'autoregressive' else 'direct'}"
        self.models: dict[tuple, dict] = {}

    # ------------------------------------------------------------------ fit
    def fit(self, train_dataset, valid_dataset=None) -> PoissonGLM:
        self._end = None if self.time_budget_s is None else time.monotonic() + self.time_budget_s
        train = collect_by_units(train_dataset, self.max_windows)
        valid = (
            collect_by_units(valid_dataset, self.max_windows) if valid_dataset is not None else {}
        )
        self._fits_left = sum(len(self.ridges) if key in valid else 1 for key in train)  # as in _fit_session
        for key, g in train.items():
            self.models[key] = self._fit_session(g, valid.get(key))
        return self

    def _deadline(self) -> float | None:
        """End of the next fit: an even share of the remaining budget."""
        if self._end is None:
            return None
        now = time.monotonic()
        share = max(self._end - now, 0.0) / max(self._fits_left, 1)
        self._fits_left -= 1
        return now + share

    def _fit_session(self, g: dict, valid: dict | None) -> dict:
        if g["context"].shape[1] < self.L:
            raise ValueError(
                f"PoissonGLM: context of {g['context'].shape[1]} bins is shorter "
                f"than history={self.L}"
            )
        X, Y = self._design(g["context"], g["target"])
        mu, sd = X.mean(0), X.std(0).clamp(min=1e-6)
        X = (X - mu) / sd
        cap = torch.cat([g["context"], g["target"]], 1).double().amax((0, 1)).clamp(min=1.0)  # (N,)
        ridges = self.ridges if valid is not None else [self.default_ridge]
        best, init, scores = None, None, {}
        for r in ridges:  # strongest first, each warm-starting the next
            W, b, info = fit_poisson_ridge(X, Y, r, init=init, max_iter=self.max_iter, deadline=self._deadline())
            init = (W, b)
            model = {
                "W": W,
                "b": b,
                "mu": mu,
                "sd": sd,
                "cap": cap,
                "ridge": r,
                "info": info,
                "horizon": g["target"].shape[1],
            }
            if valid is None:
                return model
            mean = self._forecast(model, valid["context"], valid["target"].shape[1])
            scores[r] = float((mean - valid["target"] * mean.log()).mean())
            if best is None or scores[r] < scores[best["ridge"]]:
                best = model
        best["valid_nll"] = scores
        return best

    def _features(self, hist: torch.Tensor) -> torch.Tensor:
        """(n, L, N) counts -> (n, L*N) transformed features (unstandardised)."""
        x = torch.log1p(hist) if self.transform == "log1p" else hist
        return x.reshape(len(x), -1)

    def _design(self, ctx: torch.Tensor, tgt: torch.Tensor):
        if self.mode == "direct":
            return self._features(ctx[:, -self.L :]), tgt.reshape(len(tgt), -1)
        seq = torch.cat([ctx, tgt], 1)  # (n, Tc+T, N)
        win = seq.unfold(1, self.L + 1, 1)  # (n, Tc+T-L, N, L+1)
        win = win.permute(0, 1, 3, 2).reshape(-1, self.L + 1, seq.shape[2])
        if len(win) > self.max_samples:
            keep = np.random.default_rng(self.seed).choice(len(win), self.max_samples, False)
            win = win[torch.from_numpy(np.sort(keep))]
        return self._features(win[:, : self.L]), win[:, self.L]

    # -------------------------------------------------------------- predict
    def _eta(self, model: dict, hist: torch.Tensor) -> torch.Tensor:
        x = (self._features(hist) - model["mu"]) / model["sd"]
        return (x @ model["W"] + model["b"]).clamp(*ETA_RANGE)

    def _rate(self, model: dict, hist: torch.Tensor) -> torch.Tensor:
        """Expected counts (n, K) from history, capped at each unit's largest training count."""
        rate = self._eta(model, hist).exp()
        return torch.minimum(rate.reshape(len(rate), -1, len(model["cap"])), model["cap"]).reshape(rate.shape)

    def _forecast(self, model: dict, ctx: torch.Tensor, T: int, generator=None) -> torch.Tensor:
        """(G, Tc, N) context -> (G, T, N) expected counts (sampled counts if generator)."""
        ctx = ctx.double()
        N = ctx.shape[2]
        if self.mode == "direct":
            if model["horizon"] < T:
                raise ValueError(
                    f"PoissonGLM(direct): fitted for {model['horizon']} bins, asked for {T}"
                )
            mean = self._rate(model, ctx[:, -self.L :]).reshape(len(ctx), -1, N)[:, :T]
            return mean if generator is None else torch.poisson(mean, generator=generator)
        hist, out = ctx[:, -self.L :], []
        for _ in range(T):
            step = self._rate(model, hist)
            if generator is not None:
                step = torch.poisson(step, generator=generator)
            out.append(step)
            hist = torch.cat([hist[:, 1:], step[:, None]], 1)
        return torch.stack(out, 1)

    def _run(self, batch: dict, n_samples: int | None, generator) -> torch.Tensor:
        if not self.models:
            raise RuntimeError(f"{self.name}: call fit() first")
        T = self._horizon(batch)
        B, _, N = batch["context_counts"].shape
        S = 1 if n_samples is None else n_samples
        out = torch.zeros(S, B, T, N, dtype=torch.float32)
        for key, (rows, cols) in group_rows(batch).items():
            if key not in self.models:
                raise KeyError(
                    f"{self.name}: no GLM for this unit set (session not in training "
                    f"data); units {list(key)[:5]}..."
                )
            ctx = take_cols(batch["context_counts"], rows, cols)
            gen = None if n_samples is None else generator or torch.Generator().manual_seed(0)
            val = torch.stack([self._forecast(self.models[key], ctx, T, gen) for _ in range(S)])
            put_cols(out, val, rows, cols)
        return out

    @torch.no_grad()
    def predict(self, batch: dict) -> torch.Tensor:
        return self._run(batch, None, None)[0]

    @torch.no_grad()
    def sample(self, batch: dict, n_samples: int = 1, generator=None) -> torch.Tensor:
        return self._run(batch, n_samples, generator)
