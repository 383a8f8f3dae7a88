"""Shared pieces of the neural baselines (GRU seq2seq, NDT-like transformer).

Units enter through per-unit embeddings indexed by the global vocab index, so a single
network serves several sessions: the population vector of a bin is read in as
sum_n log1p(count_n) * E[unit_n] / sqrt(N_real), and read out as per-unit likelihood
parameters h_t . R[unit_n] + c[unit_n].
"""

from __future__ import annotations

import copy
import math
import time
from abc import abstractmethod

import torch
from torch import nn

from neurohorizon.losses import build_likelihood, masked_nll_sum, reduce_nll

from ._data import forever, iter_batches
from .base import Baseline
from .simple import MeanRate


class UnitReadin(nn.Module):
    """counts (B, T, N), units (B, N), mask (B, N) -> (B, T, D)."""

    def __init__(self, n_vocab: int, dim: int):
        super().__init__()
        self.emb = nn.Embedding(n_vocab, dim)
        nn.init.normal_(self.emb.weight, std=1.0)

    def forward(self, counts, units, mask):
        m = mask.float()
        w = self.emb(units) * m[..., None] / m.sum(1).clamp(min=1).sqrt()[:, None, None]
        return torch.einsum("btn,bnd->btd", torch.log1p(counts.float()), w)


class UnitReadout(nn.Module):
    """h (B, T, D), units (B, N) -> params (B, T, N, P)."""

    def __init__(self, n_vocab: int, dim: int, n_params: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_vocab, dim, n_params) * 0.1 / math.sqrt(dim))
        self.bias = nn.Parameter(torch.zeros(n_vocab, n_params))

    def forward(self, h, units):
        return torch.einsum("btd,bndp->btnp", h, self.weight[units]) + self.bias[units][:, None]


class NeuralBaseline(Baseline):
    """Training loop and interface plumbing; subclasses build `self.net` and `_params`.

    Args (keyword-only, shared):
        likelihood: name for `build_likelihood` (or a likelihood object).
        dim: hidden size. lr, batch_size: Adam settings.
        max_steps, time_budget_s: training stops at whichever comes first.
        eval_every: steps between validation checks (best validation state is kept).
        seed: initialisation and batch-order seed.
    """

    def __init__(
        self,
        *,
        likelihood="poisson",
        dim: int = 64,
        lr: float = 3e-3,
        batch_size: int = 32,
        max_steps: int = 300,
        time_budget_s: float | None = None,
        eval_every: int = 50,
        seed: int = 0,
    ):
        self.likelihood = (
            build_likelihood(likelihood) if isinstance(likelihood, str) else likelihood
        )
        self.dim, self.lr, self.batch_size = dim, lr, batch_size
        self.max_steps, self.time_budget_s, self.eval_every = max_steps, time_budget_s, eval_every
        self.seed = seed
        self.net: nn.Module | None = None
        self.history: list[float] = []
        self.valid_history: list[tuple[int, float]] = []

    @abstractmethod
    def build(self, n_vocab: int, context: int, horizon: int) -> nn.Module:
        ...

    @abstractmethod
    def _params(self, batch: dict, generator=None, sample: bool = False):
        """-> (params (B, T, N, P), counts (B, T, N) fed back or None)."""
        ...

    def loss(self, batch: dict) -> torch.Tensor:
        params, _ = self._params(batch)
        nll = self.likelihood.nll(params, batch["target_counts"].float())
        return reduce_nll(nll, batch["unit_mask"])

    def fit(
        self,
        train_dataset,
        valid_dataset=None,
        *,
        max_steps: int | None = None,
        time_budget_s: float | None = None,
    ) -> NeuralBaseline:
        torch.manual_seed(self.seed)
        max_steps = max_steps or self.max_steps
        budget = time_budget_s if time_budget_s is not None else self.time_budget_s
        first = next(iter_batches(train_dataset, self.batch_size))
        mean_rate = MeanRate().fit(train_dataset)
        self.n_vocab = len(mean_rate.bins)
        self.context = first["context_counts"].shape[1]
        self.horizon = first["target_counts"].shape[1]
        self.net = self.build(self.n_vocab, self.context, self.horizon)
        self._init_bias(mean_rate)
        opt = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        best = (math.inf, None)
        start = time.monotonic()
        for step, batch in enumerate(forever(train_dataset, self.batch_size, self.seed), 1):
            self.net.train()
            loss = self.loss(batch)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
            opt.step()
            self.history.append(float(loss.detach()))
            done = step >= max_steps or (budget is not None and time.monotonic() - start > budget)
            if valid_dataset is not None and (step % self.eval_every == 0 or done):
                v = self.evaluate(valid_dataset)
                self.valid_history.append((step, v))
                if v < best[0]:
                    best = (v, copy.deepcopy(self.net.state_dict()))
            if done:
                break
        if best[1] is not None:
            self.net.load_state_dict(best[1])
        self.net.eval()
        return self

    def _init_bias(self, mean_rate: MeanRate) -> None:
        """Start the log-rate parameter at each unit's log mean rate (faster, stabler start)."""
        if not self.likelihood.log_rate_first:
            return
        rate = (mean_rate.total / mean_rate.bins.clamp(min=1)).clamp(min=1e-3)
        with torch.no_grad():
            self.net.readout.bias[:, 0] = rate.log().float()

    @torch.no_grad()
    def evaluate(self, dataset) -> float:
        """Mean NLL per (bin, real unit) of the forecast on `dataset`."""
        self.net.eval()
        total, count = 0.0, 0.0
        for batch in iter_batches(dataset, 256):
            params, _ = self._params(batch)
            nll_sum, n = masked_nll_sum(self.likelihood.nll(params, batch["target_counts"].float()),
                                        batch["unit_mask"])
            total, count = total + float(nll_sum), count + float(n)
        return total / max(count, 1.0)

    def _check(self, batch: dict) -> None:
        if self.net is None:
            raise RuntimeError(f"{self.name}: call fit() first")
        if int(batch["units"].max()) >= self.n_vocab:
            raise KeyError(
                f"{self.name}: batch has unit vocab indices beyond the "
                f"{self.n_vocab} seen in training"
            )

    @torch.no_grad()
    def predict(self, batch: dict) -> torch.Tensor:
        self._check(batch)
        self.net.eval()
        params, _ = self._params(batch)
        return self.likelihood.mean(params) * batch["unit_mask"][:, None, :]

    @torch.no_grad()
    def sample(self, batch: dict, n_samples: int = 1, generator=None) -> torch.Tensor:
        self._check(batch)
        self.net.eval()
        out = [self._params(batch, generator, sample=True)[1] for _ in range(n_samples)]
        return torch.stack(out) * batch["unit_mask"][:, None, :]
