"""What an autoregressive step feeds back: ONE function used by training and rollout alike.

A mismatch between the counts fed back in scheduled-sampling training and in rollout is
exactly the train/inference gap this project must avoid, so both call `feedback_counts`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

FEEDBACK_MODES = ("mean", "sample")


def feedback_counts(likelihood, params: torch.Tensor, mode: str,
                    generator: torch.Generator | WindowGenerators | None = None) -> torch.Tensor:
    """Counts to feed back from predicted params (..., P): expected counts or a sample."""
    if mode == "mean":
        return likelihood.mean(params)
    if mode == "sample":
        if isinstance(generator, WindowGenerators):
            return generator.sample(likelihood, params)
        return likelihood.sample(params, generator=generator)
    raise ValueError(f"unknown feedback mode {mode!r}; valid: {FEEDBACK_MODES}")


def window_seed(seed: int, session_id: str, onset_s: float) -> int:
    """A seed that names one forecast window: the same (seed, session, onset) gives the same draws."""
    key = f"{seed}/{session_id}/{round(onset_s * 1e6)}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1  # < 2**63


@dataclass
class WindowGenerators:
    """One random stream per window of a batch. A window's sampled trajectories then depend on its
    seed alone: not on which windows share its batch, nor on their padding (each window draws for
    its own units only), so `forecast()` on one window reproduces evaluation's draws for it.

    generators: one per window (B). n_units: each window's real units; the rest of N is padding.
    """

    generators: list[torch.Generator]
    n_units: list[int]

    @classmethod
    def for_batch(cls, batch: dict, session_ids: list[str], *, seed: int, device) -> WindowGenerators:
        """Streams for a collated batch; session_ids maps its `session` index to the session's id."""
        seeds = [window_seed(seed, session_ids[int(s)], float(t)) for s, t in zip(batch["session"], batch["start"])]
        return cls([torch.Generator(device=device).manual_seed(s) for s in seeds],
                   [int(n) for n in batch["unit_mask"].sum(1)])

    def sample(self, likelihood, params: torch.Tensor) -> torch.Tensor:
        """Counts drawn from params (S*B, ..., N, P), sample-major as rollout stacks them."""
        B = len(self.generators)
        per_window = params.reshape(-1, B, *params.shape[1:])  # (S, B, ..., N, P)
        out = torch.zeros(per_window.shape[:-1], dtype=params.dtype, device=params.device)
        for b, (gen, n) in enumerate(zip(self.generators, self.n_units)):
            out[:, b, ..., :n] = likelihood.sample(per_window[:, b, ..., :n, :], generator=gen).to(params.dtype)
        return out.reshape(params.shape[:-1])
