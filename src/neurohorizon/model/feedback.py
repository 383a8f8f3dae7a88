"""What an autoregressive step feeds back: ONE function used by training and rollout alike.

A mismatch between the counts fed back in scheduled-sampling training and in rollout is
exactly the train/inference gap this project must avoid, so both call `feedback_counts`.
"""

from __future__ import annotations

import torch

FEEDBACK_MODES = ("mean", "sample")


def feedback_counts(likelihood, params: torch.Tensor, mode: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Counts to feed back from predicted params (..., P): expected counts or a sample."""
    if mode == "mean":
        return likelihood.mean(params)
    if mode == "sample":
        return likelihood.sample(params, generator=generator)
    raise ValueError(f"unknown feedback mode {mode!r}; valid: {FEEDBACK_MODES}")
