"""Simple baselines: MeanRate (the null), condition PSTH, and Persistence.

Per-neuron parameters are indexed by the global unit vocab index (batch["units"]), so one
fitted baseline serves windows from many sessions.
"""

from __future__ import annotations

import torch

from neurohorizon.data.prior import PopulationModes

from ._data import iter_batches
from .base import Baseline


def _grow(x: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad the last axis of x to `size`."""
    if x.shape[-1] >= size:
        return x
    pad = torch.zeros(*x.shape[:-1], size - x.shape[-1], dtype=x.dtype)
    return torch.cat([x, pad], -1)


def poisson_nll(rate: torch.Tensor, batch: dict) -> float:
    """Poisson NLL (without log k!) of the batch's target counts under `rate` (B, T, N), real units only."""
    rate = rate.double().clamp_min(1e-9)
    return float(((rate - batch["target_counts"].double() * rate.log()) * _masked(batch)).sum())


def _masked(batch: dict) -> torch.Tensor:
    """(B, 1, N) float mask of real units."""
    return batch["unit_mask"][:, None, :].double()


class MeanRate(Baseline):
    """Null forecaster: each neuron's mean count per bin over the training target bins.

    Args:
        unseen: what to do for a unit absent from training: "error" or "global" (use the
            mean over all training units).
    """

    name = "mean_rate"

    def __init__(self, *, unseen: str = "error"):
        if unseen not in ("error", "global"):
            raise ValueError(f"MeanRate: unseen must be 'error' or 'global', got {unseen!r}")
        self.unseen = unseen
        self.total = torch.zeros(0, dtype=torch.float64)  # (V,) summed counts
        self.bins = torch.zeros(0, dtype=torch.float64)  # (V,) bins observed

    def fit(self, train_dataset, valid_dataset=None) -> MeanRate:
        for batch in iter_batches(train_dataset, 256):
            self.update(batch["target_counts"], batch)
        if not (self.bins > 0).any():
            raise ValueError("MeanRate: training data has no real units")
        return self

    def update(self, counts: torch.Tensor, batch: dict) -> None:
        """Accumulate counts (B, T, N) of the batch's real units."""
        V = int(batch["units"].max()) + 1
        self.total, self.bins = _grow(self.total, V), _grow(self.bins, V)
        m = _masked(batch)
        units = batch["units"].reshape(-1)
        self.total.index_add_(0, units, (counts.double() * m).sum(1).reshape(-1))
        self.bins.index_add_(0, units, (m * counts.shape[1]).expand(-1, 1, -1).reshape(-1))

    def rates(self, units: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean count per bin of `units` (any shape) as float64; padding (mask False) -> 0."""
        mask = units > 0 if mask is None else mask
        V = len(self.bins)
        known = (units < V) & (self.bins[units.clamp(max=max(V - 1, 0))] > 0)
        if (mask & ~known).any() and self.unseen == "error":
            bad = sorted(set(units[mask & ~known].tolist()))[:5]
            raise KeyError(f"{self.name}: unit vocab indices {bad} were not in training data")
        rate = torch.where(
            known,
            self.total[units.clamp(max=V - 1)] / self.bins[units.clamp(max=V - 1)].clamp(min=1),
            self.global_rate(),
        )
        return torch.where(mask, rate, torch.zeros_like(rate))

    def global_rate(self) -> torch.Tensor:
        return self.total.sum() / self.bins.sum()

    def predict(self, batch: dict) -> torch.Tensor:
        T = self._horizon(batch)
        rate = self.rates(batch["units"], batch["unit_mask"])
        return rate[:, None, :].expand(-1, T, -1).float()


class PSTH(Baseline):
    """Condition average of the target bins, per (condition, bin offset, unit).

    Trial-aligned windows share one alignment, so target bin t always sits at the same
    offset from the trial event and the condition PSTH is well defined. Windows with
    condition -1 (continuous data), a condition or unit never seen in training, or a bin
    beyond the trained horizon fall back to the unit's MeanRate. Conditions are keyed by
    the batch's condition index, which must mean the same condition in train and test.

    A raw PSTH from a few dozen trials has bins where every trial was silent; a predicted
    rate of 0 there costs ~30 bits per spike. So the PSTH is Gaussian-smoothed over bins
    and shrunk slightly toward the unit's mean rate, and optionally keeps only its top
    `rank` population modes (the square-root denoising of `data.rate_prior_rank`,
    data/prior.py), all three chosen on validation NLL.
    """

    name = "psth"

    def __init__(self, *, sigma=None, shrink=None, rank=None, sigmas=(0.0, 1.0, 2.0, 4.0),
                 shrinks=(0.01, 0.05, 0.2), ranks=(0, 8, 16)):
        """sigma (bins), shrink and rank (0: no denoising) fix the choice; otherwise they are
        picked on validation from `sigmas` x `shrinks` x `ranks` (defaults 2 bins, 0.05 and 0
        without validation data)."""
        self.fixed = sigma is not None and shrink is not None
        self.sigmas, self.shrinks = tuple(sigmas), tuple(shrinks)
        self.ranks = (int(rank),) if rank is not None else tuple(ranks)
        self.sigma = 2.0 if sigma is None else float(sigma)
        self.shrink = 0.05 if shrink is None else float(shrink)
        self.rank = 0 if rank is None else int(rank)
        self.mean_rate = MeanRate(unseen="global")
        self.sums: dict[int, torch.Tensor] = {}  # condition -> (T, V) summed counts
        self.reps: dict[int, torch.Tensor] = {}  # condition -> (V,) number of windows
        self._cache: tuple = (None, {})  # (sigma, shrink, rank) -> condition -> (T, V) table

    def fit(self, train_dataset, valid_dataset=None) -> PSTH:
        for batch in iter_batches(train_dataset, 256):
            self.mean_rate.update(batch["target_counts"], batch)
            V = int(batch["units"].max()) + 1
            for c in batch["condition"].unique().tolist():
                if c < 0:
                    continue
                rows = batch["condition"] == c
                T = batch["target_counts"].shape[1]
                s = _grow(self.sums.get(c, torch.zeros(T, 0, dtype=torch.float64)), V)
                r = _grow(self.reps.get(c, torch.zeros(0, dtype=torch.float64)), V)
                m = batch["unit_mask"][rows].double()
                counts = batch["target_counts"][rows].double() * m[:, None, :]
                units = batch["units"][rows].reshape(-1)
                s.index_add_(1, units, counts.permute(1, 0, 2).reshape(T, -1))
                r.index_add_(0, units, m.reshape(-1))
                self.sums[c], self.reps[c] = s, r
        V = max(s.shape[1] for s in self.sums.values()) if self.sums else 0
        self.sums = {c: _grow(s, V) for c, s in self.sums.items()}
        self.reps = {c: _grow(r, V) for c, r in self.reps.items()}
        self._cache = (None, {})  # tables of an earlier fit are stale
        if valid_dataset is not None and not self.fixed:
            self._select(valid_dataset)
        return self

    def _select(self, valid_dataset) -> None:
        """Pick (sigma, shrink, rank) with the lowest Poisson NLL on validation windows."""
        batches = list(iter_batches(valid_dataset, 256))
        best = None
        for sigma in self.sigmas:
            for shrink in self.shrinks:
                for rank in self.ranks:
                    self.sigma, self.shrink, self.rank = sigma, shrink, rank
                    nll = sum(poisson_nll(self.predict(batch), batch) for batch in batches)
                    if best is None or nll < best[0]:
                        best = (nll, sigma, shrink, rank)
        _, self.sigma, self.shrink, self.rank = best

    def chosen(self) -> dict:
        """The smoothing (bins), shrinkage and rank in use."""
        return {"sigma": self.sigma, "shrink": self.shrink, "rank": self.rank}

    def _psth(self, c: int) -> torch.Tensor:
        """(T, V) smoothed condition average of condition c."""
        mean = self.sums[c] / self.reps[c].clamp_min(1)
        if self.sigma <= 0:
            return mean
        half = max(1, int(3 * self.sigma + 0.999))
        kernel = torch.exp(-0.5 * (torch.arange(-half, half + 1, dtype=torch.float64) / self.sigma) ** 2)
        x = mean.T[:, None, :]  # (V, 1, T)
        num = torch.nn.functional.conv1d(x, kernel.view(1, 1, -1), padding=half)
        den = torch.nn.functional.conv1d(torch.ones_like(x[:1]), kernel.view(1, 1, -1), padding=half)
        return (num / den)[:, 0].T  # renormalised at the window edges

    def _tables(self) -> dict:
        """condition -> (T, V) forecast: the smoothed PSTH shrunk toward the unit's mean (the
        mean alone for a unit the condition never had), then denoised when rank > 0."""
        key = (self.sigma, self.shrink, self.rank)
        if self._cache[0] == key:
            return self._cache[1]
        V = len(next(iter(self.reps.values()))) if self.reps else 0
        unit_mean = self.mean_rate.rates(torch.arange(V))
        tables = {c: torch.where(self.reps[c] > 0, (1 - self.shrink) * self._psth(c) + self.shrink * unit_mean,
                                 unit_mean) for c in self.sums}
        if self.rank and tables:
            stacked = torch.cat(list(tables.values())).clamp_min(1e-4).numpy()
            modes = PopulationModes.fit(stacked, self.rank)
            tables = {c: torch.from_numpy(modes.project(t.clamp_min(1e-4).numpy())) for c, t in tables.items()}
        self._cache = (key, tables)
        return tables

    def predict(self, batch: dict) -> torch.Tensor:
        out = self.mean_rate.predict(batch).double().clone()
        T = out.shape[1]
        tables = self._tables()
        for b, c in enumerate(batch["condition"].tolist()):
            if c not in tables:
                continue
            r, table = self.reps[c], tables[c]
            units, mask = batch["units"][b], batch["unit_mask"][b]
            idx = units.clamp(max=len(r) - 1)
            ok = mask & (units < len(r)) & (r[idx] > 0)
            Tk = min(T, table.shape[0])
            out[b, :Tk, ok] = table[:Tk, units[ok]]
        return out.float()


class Persistence(Baseline):
    """Recent smoothed rate of each unit, held constant over the horizon.

    Candidates: boxcar over the last k context bins (k = inf: the whole context), or an exponential average with time
    constant tau bins; the candidate with the lowest Poisson NLL on the validation set
    (training set when none) is kept. Rates are floored at `min_rate` so a silent unit
    does not get an infinite NLL.
    """

    name = "persistence"

    def __init__(
        self,
        *,
        ks=(1, 2, 3, 5, 10, 25, 50, float("inf")),
        taus=(1.0, 3.0, 10.0),
        min_rate: float = 1e-3,
        kind: str | None = None,
        k: float | None = None,
    ):
        self.candidates = [("boxcar", float(x)) for x in ks] + [("exp", float(t)) for t in taus]
        self.min_rate = min_rate
        self.choice = (kind, k) if kind is not None else None
        self.scores: dict[str, float] = {}

    def fit(self, train_dataset, valid_dataset=None) -> Persistence:
        if self.choice is not None:
            return self
        data = valid_dataset if valid_dataset is not None else train_dataset
        nll = {}
        for batch in iter_batches(data, 256):
            Tc = batch["context_counts"].shape[1]
            for c in self.candidates:
                if c[0] == "boxcar" and Tc < c[1] < float("inf"):
                    continue
                nll.setdefault(c, 0.0)
                mean = self._smooth(batch["context_counts"], c)[:, None, :]
                k = batch["target_counts"]
                nll[c] += float(((mean - k * mean.log()) * _masked(batch)).sum())
        self.choice = min(nll, key=nll.get)
        self.scores = {f"{kind}:{k:g}": v for (kind, k), v in nll.items()}
        return self

    def _smooth(self, ctx: torch.Tensor, choice) -> torch.Tensor:
        """(B, Tc, N) -> (B, N) float64 smoothed recent rate."""
        kind, k = choice
        Tc = ctx.shape[1]
        age = torch.arange(Tc - 1, -1, -1, dtype=torch.float64)  # 0 = most recent bin
        w = (age < k).double() if kind == "boxcar" else torch.exp(-age / k)
        w = w / w.sum()
        return torch.einsum("btn,t->bn", ctx.double(), w).clamp(min=self.min_rate)

    def predict(self, batch: dict) -> torch.Tensor:
        if self.choice is None:
            raise RuntimeError("Persistence: call fit() first (or pass kind= and k=)")
        T = self._horizon(batch)
        rate = self._smooth(batch["context_counts"], self.choice) * batch["unit_mask"]
        return rate[:, None, :].expand(-1, T, -1).float()
