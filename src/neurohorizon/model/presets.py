"""Model size presets. Parameter counts quoted for a 100-unit vocabulary and a Poisson
likelihood (P = 1); benchmarks/bench_model.py prints the exact count of "small"."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from torch import nn

from neurohorizon.model.neurohorizon import NeuroHorizon

_DEFAULT = {name: p.default for name, p in inspect.signature(NeuroHorizon).parameters.items()}


@dataclass(frozen=True)
class ModelConfig:
    """The size and shape of a NeuroHorizon; unset fields take the model's own defaults."""

    dim: int = _DEFAULT["dim"]
    depth_enc: int = _DEFAULT["depth_enc"]
    depth_dec: int = _DEFAULT["depth_dec"]
    heads: int = _DEFAULT["heads"]
    latent_step: float = _DEFAULT["latent_step"]  # s between encoder latent groups
    n_latents_per_step: int = _DEFAULT["n_latents_per_step"]
    ffn_mult: int = _DEFAULT["ffn_mult"]
    dropout: float = _DEFAULT["dropout"]
    decoder: str = _DEFAULT["decoder"]
    bin_size: float = _DEFAULT["bin_size"]
    max_bins: int = _DEFAULT["max_bins"]


PRESETS: dict[str, ModelConfig] = {
    # ~50k params: unit tests
    "tiny": ModelConfig(
        dim=32, depth_enc=1, depth_dec=1, heads=2, n_latents_per_step=2, ffn_mult=2
    ),
    # ~0.16M params: small datasets (~100 trials) and low-dimensional dynamics, where "small"
    # overfits or trains too few steps in a CPU budget (docs/results.md: pmd, lorenz; not reach)
    "compact": ModelConfig(
        dim=64, depth_enc=1, depth_dec=1, heads=4, n_latents_per_step=4, ffn_mult=2, dropout=0.1
    ),
    # ~4.2M params: CPU training
    "small": ModelConfig(
        dim=256, depth_enc=2, depth_dec=2, heads=4, n_latents_per_step=4, ffn_mult=3, dropout=0.1
    ),
    # ~20M params: GPU training
    "base": ModelConfig(
        dim=512, depth_enc=3, depth_dec=3, heads=8, n_latents_per_step=8, ffn_mult=3, dropout=0.1
    ),
}


def _unit_ids(unit_vocab) -> list[str]:
    """Global unit ids in vocabulary order, without the padding token at index 0."""
    tokens = list(getattr(unit_vocab, "tokens", unit_vocab))
    if tokens and tokens[0] == "NA":
        tokens = tokens[1:]
    if not tokens or not all(isinstance(t, str) for t in tokens):
        raise ValueError("unit_vocab must hold a non-empty list of str unit ids")
    return tokens


def from_config(
    cfg: ModelConfig | str,
    unit_vocab: Sequence[str],
    *,
    n_params: int,
    unit_only_params: int = 0,
    **overrides,
) -> NeuroHorizon:
    """Build a NeuroHorizon from a preset name or ModelConfig.

    unit_vocab: a UnitVocab (its ``tokens``) or a list of global unit ids; a leading "NA"
    padding token is dropped so that dataset index i maps to embedding index i.
    overrides: any ModelConfig field or NeuroHorizon keyword (e.g. decoder="parallel").
    """
    if isinstance(cfg, str):
        if cfg not in PRESETS:
            raise ValueError(f"unknown model preset {cfg!r}; choose from {sorted(PRESETS)}")
        cfg = PRESETS[cfg]
    kwargs = {**asdict(cfg), **overrides}
    return NeuroHorizon(
        unit_ids=_unit_ids(unit_vocab),
        n_params=n_params,
        unit_only_params=unit_only_params,
        **kwargs,
    )


SET_ELSEWHERE = {  # NeuroHorizon keywords that model.overrides must not set: the run sets them
    "unit_ids": "the data's units", "n_params": "loss.likelihood", "unit_only_params": "loss.options.dispersion",
    "decoder": "model.decoder", "bin_size": "data.bin_size_ms", "event_names": "data.events",
    "rate_prior": "data.rate_prior",
}


def check_model_overrides(overrides: dict, preset: str | None = None, horizon_bins: int | None = None) -> None:
    """model.overrides may set any other NeuroHorizon keyword; a typo or a value of the wrong kind
    is an error, not a traceback. With `preset` and `horizon_bins`: the model must reach that far."""
    allowed = set(inspect.signature(NeuroHorizon.__init__).parameters) - {"self", *SET_ELSEWHERE}
    for key, value in overrides.items():
        if key in SET_ELSEWHERE:
            raise ValueError(f"model.overrides.{key}: set {SET_ELSEWHERE[key]} instead")
        if key not in allowed:
            raise ValueError(f"model.overrides.{key}: not a model setting; valid: {sorted(allowed)}")
        _check_value(key, value)
    if preset in PRESETS and horizon_bins is not None:
        max_bins = overrides.get("max_bins", PRESETS[preset].max_bins)
        if horizon_bins > max_bins:
            raise ValueError(f"data.horizon_ms is {horizon_bins} bins, more than the model's max_bins={max_bins}: "
                             f"raise model.overrides.max_bins or shorten data.horizon_ms")


_FRACTIONS = ("dropout",)  # in [0, 1)
_OPTIONAL = ("readout_dim",)  # None keeps the model's default
_MAY_BE_ZERO = ("depth_enc",)  # no encoder self-attention: cross-attention only


def _check_value(key: str, value) -> None:
    """Whole numbers > 0 (depth_enc: >= 0) where the model's default is one, numbers > 0 (dropout: in
    [0, 1)) where it is a float."""
    default = _DEFAULT[key]
    if value is None and key in _OPTIONAL:
        return
    if isinstance(default, int) or key in _OPTIONAL:
        least = 0 if key in _MAY_BE_ZERO else 1
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= least
        kind = f"a whole number >= {least}"
    else:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (
            0 <= value < 1 if key in _FRACTIONS else value > 0)
        kind = "a number in [0, 1)" if key in _FRACTIONS else "a number > 0"
    if not ok:
        raise ValueError(f"model.overrides.{key} must be {kind}, got {value!r}")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
