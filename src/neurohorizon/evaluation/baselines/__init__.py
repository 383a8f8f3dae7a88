"""Classical baselines with the forecaster interface (docs/architecture.md).

BASELINES: name -> class;  build_baseline(name, **opts) -> instance
"""

from __future__ import annotations

from .base import Baseline
from .factors import PSTHFactors
from .glm import PoissonGLM, fit_poisson_ridge
from .gru import GRUSeq2Seq
from .ndt import NDTForward
from .simple import PSTH, MeanRate, Persistence


def _glm_ar(**opts):
    return PoissonGLM(mode="autoregressive", **opts)


def _glm_direct(**opts):
    return PoissonGLM(mode="direct", **opts)


BASELINES = {
    "mean_rate": MeanRate,
    "psth": PSTH,
    "psth_factors": PSTHFactors,
    "persistence": Persistence,
    "glm_ar": _glm_ar,
    "glm_direct": _glm_direct,
    "gru_seq2seq": GRUSeq2Seq,
    "ndt_forward": NDTForward,
}


def build_baseline(name: str, **opts) -> Baseline:
    """Baseline by name (keys of BASELINES) with keyword options."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; valid names: {', '.join(BASELINES)}")
    try:
        return BASELINES[name](**opts)
    except TypeError as err:
        raise ValueError(f"bad options {opts} for baseline {name!r}: {err}") from None


__all__ = [
    "BASELINES",
    "Baseline",
    "GRUSeq2Seq",
    "MeanRate",
    "NDTForward",
    "PSTH",
    "PSTHFactors",
    "Persistence",
    "PoissonGLM",
    "build_baseline",
    "fit_poisson_ridge",
]
