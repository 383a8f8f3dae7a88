"""Scheduled sampling (Bengio et al. 2015): how often the decoder is fed ground truth.

epsilon is the probability of feeding GROUND TRUTH for a (sample, bin). It starts at 1 (pure teacher
forcing) during `warmup`, then decays with progress i (steps or epochs counted from the end of
warm-up) and never drops below `floor`:

    constant         eps = value
    linear           eps = 1 - i / n
    exponential      eps = k ** i                     (0 < k < 1)
    inverse_sigmoid  eps = k / (k + exp(i / k))       (k >= 1)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

KINDS = ("constant", "linear", "exponential", "inverse_sigmoid")
UNITS = ("step", "epoch")


@dataclass(frozen=True)
class ScheduleConfig:
    """Teacher-forcing schedule.

    kind: one of KINDS. unit: "step" or "epoch" drives progress i.
    warmup: progress units of pure teacher forcing (eps = 1) before the decay starts.
    floor: eps never goes below this (the linear eps_min). value: eps for "constant".
    n: linear decay length N. k: base for "exponential" (0 < k < 1) or "inverse_sigmoid" (k >= 1).
    """

    kind: str = "constant"
    unit: str = "epoch"
    warmup: int = 0
    floor: float = 0.0
    value: float = 1.0
    n: float | None = None
    k: float | None = None

    def __post_init__(self):
        def bad(msg):
            raise ValueError(f"scheduled sampling config: {msg}")

        if self.kind not in KINDS:
            bad(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.unit not in UNITS:
            bad(f"unit must be 'step' or 'epoch', got {self.unit!r}")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            bad(f"warmup must be an integer >= 0, got {self.warmup!r}")
        if not 0.0 <= self.floor <= 1.0:
            bad(f"floor must be in [0, 1], got {self.floor!r}")
        if self.kind == "constant" and not 0.0 <= self.value <= 1.0:
            bad(f"value must be in [0, 1] for a constant schedule, got {self.value!r}")
        if self.kind == "linear" and (self.n is None or not self.n > 0):
            bad(f"linear schedule needs decay length n > 0, got {self.n!r}")
        if self.kind == "exponential" and (self.k is None or not 0.0 < self.k < 1.0):
            bad(f"exponential schedule needs 0 < k < 1, got {self.k!r}")
        if self.kind == "inverse_sigmoid" and (self.k is None or not self.k >= 1.0):
            bad(f"inverse_sigmoid schedule needs k >= 1, got {self.k!r}")


def _decay(cfg: ScheduleConfig, i: int) -> float:
    if cfg.kind == "constant":
        return cfg.value
    if cfg.kind == "linear":
        return 1.0 - i / cfg.n
    if cfg.kind == "exponential":
        return cfg.k**i  # underflows to 0.0, never raises
    # k / (k + exp(i/k)) == sigmoid(log k - i/k); this form cannot overflow for large i
    x = math.log(cfg.k) - i / cfg.k
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def teacher_forcing_prob(cfg: ScheduleConfig, step: int, epoch: int) -> float:
    """Probability of feeding ground truth at global `step` / `epoch` (both counted from 0)."""
    if step < 0 or epoch < 0:
        raise ValueError(f"step and epoch must be >= 0, got step={step}, epoch={epoch}")
    progress = step if cfg.unit == "step" else epoch
    if progress < cfg.warmup:
        return 1.0
    return max(cfg.floor, _decay(cfg, progress - cfg.warmup))


def mix_inputs(
    truth: torch.Tensor,
    predicted: torch.Tensor,
    eps: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (sample, bin), feed ground truth with probability eps, else the model's prediction.

    truth, predicted: (B, T, N). A whole bin row (all units) is taken from one source, matching
    inference where a step's input is either all observed or all predicted. Detach `predicted`
    first if gradients should not flow through the model's own outputs. `generator` must live on
    truth.device.

    Returns (mixed (B, T, N), use_truth (B, T, 1) bool).
    """
    if truth.dim() != 3 or truth.shape != predicted.shape:
        raise ValueError(
            f"mix_inputs expects truth and predicted of the same (B, T, N) shape, got "
            f"{tuple(truth.shape)} and {tuple(predicted.shape)}"
        )
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"mix_inputs: eps must be in [0, 1], got {eps}")
    b, t, _ = truth.shape
    u = torch.rand((b, t, 1), generator=generator, device=truth.device)
    use_truth = u < eps  # u in [0, 1): eps=1 -> always truth, eps=0 -> never
    return torch.where(use_truth, truth, predicted), use_truth
