"""Base class of the baseline forecasters (forecaster interface, docs/architecture.md)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch


class Baseline(ABC):
    """name; fit(train, valid=None); predict(batch) -> (B, T, N) expected counts;
    sample(batch, n_samples, generator) -> (n_samples, B, T, N).

    Padded unit columns (unit_mask False) are predicted as 0. The default `sample` draws
    independent Poisson counts around `predict` (for baselines without a richer model).
    """

    name = "baseline"

    def fit(self, train_dataset, valid_dataset=None) -> Baseline:
        return self

    @abstractmethod
    def predict(self, batch: dict) -> torch.Tensor:
        ...

    def sample(self, batch: dict, n_samples: int = 1, generator: torch.Generator | None = None):
        mean = self.predict(batch)
        return torch.poisson(mean.expand(n_samples, *mean.shape).contiguous(), generator=generator)

    def _horizon(self, batch: dict, fitted: int | None = None) -> int:
        if "target_counts" in batch:
            return batch["target_counts"].shape[1]
        if "n_steps" in batch:  # forecasting queries carry the horizon, never the future counts
            return int(batch["n_steps"])
        if fitted is None:
            raise ValueError(f"{self.name}: batch has no target_counts and no fitted horizon")
        return fitted
