"""From a data config to train/valid/test forecasting datasets, deterministically.

Training windows are drawn at random inside the training split (anew each epoch);
validation and test windows are trial-aligned to `align_event` when given, otherwise
sequential, non-overlapping windows covering the split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from neurohorizon.config import DataConfig
from neurohorizon.data.binning import BinningError
from neurohorizon.data.dataset import ForecastDataset, resolve_events
from neurohorizon.data.factors import FactorPrior
from neurohorizon.data.prior import ConditionPrior
from neurohorizon.data.recording import Recording
from neurohorizon.data.splits import (
    SPLITS,
    Splits,
    make_splits,
    outside_other_splits,
    windows_for_split,
)
from neurohorizon.data.windows import UnitVocab, WindowSpec


@dataclass
class PreparedData:
    recordings: list[Recording]
    spec: WindowSpec
    vocab: UnitVocab
    splits: Splits
    mode: str
    train: ForecastDataset
    valid: ForecastDataset
    test: ForecastDataset
    train_aligned: ForecastDataset | None = None  # training trials at the evaluation alignment (PSTH)
    events: tuple = ()  # the event types given to the model ("EVENT@condition" expanded)
    prior: ConditionPrior | FactorPrior | None = None  # data.rate_prior=psth / psth_factors
    # data.rate_prior_factors=auto: validation NLL per window of each number of factors tried
    factor_scores: dict | None = None


def window_spec(cfg: DataConfig, horizon_ms: float | None = None) -> WindowSpec:
    """The window geometry of data.context_ms / horizon_ms / bin_size_ms; a bad one is an error
    naming those keys."""
    try:
        return WindowSpec.from_ms(
            context_ms=cfg.context_ms, horizon_ms=horizon_ms or cfg.horizon_ms, bin_size_ms=cfg.bin_size_ms
        )
    except BinningError as err:
        raise BinningError(f"{err} (data.context_ms={cfg.context_ms:g}, data.horizon_ms={horizon_ms or cfg.horizon_ms:g}, "
                           f"data.bin_size_ms={cfg.bin_size_ms:g})") from None


def check_data_config(cfg: DataConfig) -> None:
    """A clear error naming the `data.` key whose value cannot work (before any data is read)."""
    if isinstance(cfg.split_seed, bool) or not isinstance(cfg.split_seed, int) or cfg.split_seed < 0:
        raise ValueError(f"data.split_seed must be an integer >= 0, got {cfg.split_seed!r}")
    for key, low in (("align_offset_ms", -math.inf), ("train_anchor_jitter_ms", 0.0)):
        value = getattr(cfg, key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value < math.inf:
            raise ValueError(f"data.{key} must be a finite number{' >= 0' if low == 0 else ''}, got {value!r}")
    bad = [e for e in cfg.events or [] if not isinstance(e, str)]
    if bad:
        raise ValueError(f"data.events lists trial event names (e.g. [target_on, go_cue]), got {bad!r}")


def prepare_data(
    cfg: DataConfig,
    *,
    recordings: list[Recording] | None = None,
    vocab: UnitVocab | None = None,
    splits: Splits | None = None,
    prior: ConditionPrior | FactorPrior | None = None,
) -> PreparedData:
    """Load (unless given), split, and window the data described by `cfg`.

    `prior`: a fitted rate prior (a run's prior.npz) used as it is instead of fitting
    data.rate_prior again: what evaluation does, so the model is scored with the prior it was
    trained with. Such a prior cannot leave each trial out, so every split, training windows
    included, gets it as it is (fine for evaluating, not for training)."""
    check_data_config(cfg)
    if not (isinstance(cfg.train_windows_per_epoch, int) and cfg.train_windows_per_epoch >= 1):
        raise ValueError(f"data.train_windows_per_epoch must be a whole number >= 1, got {cfg.train_windows_per_epoch!r}")
    if recordings is None:
        from neurohorizon.data.sources import load_data

        recordings = load_data(cfg.source, **cfg.options)
    if not any(len(r.spike_times) for r in recordings):
        raise ValueError(f"{cfg.source}: no unit has a single spike; there is nothing to forecast")
    spec = window_spec(cfg)
    if splits is None:  # make_splits resolves mode "auto" (held-out sessions need no trials)
        splits = make_splits(
            recordings, spec, seed=cfg.split_seed, fractions=tuple(cfg.fractions),
            holdout_sessions=tuple(cfg.holdout_sessions), mode=cfg.mode,
        )
    mode = splits.mode
    vocab = vocab or UnitVocab.from_recordings(recordings)
    offset = cfg.align_offset_ms / 1000
    events = resolve_events(cfg.events, recordings)
    given = prior is not None
    prior, factor_scores = (prior, None) if given else fit_prior(cfg, recordings, splits, vocab, spec)

    def fixed(split: str) -> ForecastDataset:
        windows = windows_for_split(recordings, splits, split, spec, seed=cfg.split_seed,
                                    event=cfg.align_event, offset_s=offset,
                                    mode="auto" if split != "train" else "trial")
        return ForecastDataset(recordings, windows=windows, spec=spec, vocab=vocab, events=events, prior=prior)

    intervals = splits.all_intervals("train")
    if not intervals:
        raise ValueError("split 'train' is empty: no training time in any recording")
    try:
        aligned = fixed("train") if cfg.align_event else None
        if cfg.train_anchor_fraction > 0 and aligned is None:
            raise ValueError("data.train_anchor_fraction > 0 needs data.align_event, the trial event to anchor to")
        if cfg.train_anchor_jitter_ms and not cfg.train_anchor_fraction > 0:
            raise ValueError("data.train_anchor_jitter_ms jitters the anchored training windows: it needs "
                             "data.train_anchor_fraction > 0")
        if cfg.align_offset_ms and aligned is None:
            raise ValueError("data.align_offset_ms places windows relative to data.align_event: set that too")
        leave_out = prior is not None and cfg.rate_prior_leave_one_out and not given
        train_prior = prior.leave_one_out() if leave_out else prior
        train = ForecastDataset(recordings, windows=[], spec=spec, vocab=vocab, random_windows_per_epoch=cfg.train_windows_per_epoch,
                                intervals=intervals, seed=cfg.split_seed, events=events, prior=train_prior,
                                anchors=_anchors(aligned, splits, spec, cfg), anchor_fraction=cfg.train_anchor_fraction,
                                anchor_jitter_s=cfg.train_anchor_jitter_ms / 1000)
        valid, test = fixed("valid"), fixed("test")
    except ValueError as err:
        if not _window_does_not_fit(err):
            raise
        raise ValueError(f"{err}; {_window_fit_hint(cfg, spec, splits)}") from err
    return PreparedData(
        recordings=recordings, spec=spec, vocab=vocab, splits=splits, mode=mode,
        train=train, valid=valid, test=test,
        train_aligned=aligned, events=tuple(events), prior=prior, factor_scores=factor_scores,
    )


def _anchors(aligned: ForecastDataset | None, splits: Splits, spec, cfg: DataConfig) -> list:
    """Training anchors whose jittered windows stay out of the validation and test trials."""
    if aligned is None or cfg.train_anchor_fraction == 0:
        return []
    names = [r.source for r in aligned.recordings]
    kept = outside_other_splits(aligned.windows, splits, "train", spec, names,
                                margin_s=cfg.train_anchor_jitter_ms / 1000, what="jittered anchor windows")
    if not kept:
        raise ValueError(f"data.train_anchor_fraction={cfg.train_anchor_fraction:g}: every training anchor, jittered "
                         f"by up to {cfg.train_anchor_jitter_ms:g} ms, reaches into another split's trials; lower "
                         "data.train_anchor_jitter_ms")
    return kept


def _window_does_not_fit(err: ValueError) -> bool:
    """A context + horizon window longer than the data allows (raised or wrapped by the splits)."""
    return isinstance(err, BinningError) or isinstance(err.__cause__, BinningError)


def _window_fit_hint(cfg: DataConfig, spec: WindowSpec, splits: Splits) -> str:
    """Which setting to change; without an alignment event, the longest horizon every split fits."""
    if cfg.align_event:
        return ("shorten data.horizon_ms or data.context_ms, or change data.align_event / data.align_offset_ms "
                "so every trial's window stays inside the recording")
    longest = [max(e - s for _, s, e in ivs) for ivs in map(splits.all_intervals, SPLITS) if ivs]
    bins = int(np.floor((min(longest, default=0.0) - spec.context_s) / spec.bin_size + 1e-9))
    if bins < 1:
        return f"shorten data.context_ms ({cfg.context_ms:g} ms) and data.horizon_ms"
    return (f"data.horizon_ms={bins * cfg.bin_size_ms:g} is the longest horizon that fits every split with "
            f"data.context_ms={cfg.context_ms:g} (or shorten data.context_ms)")


FACTOR_CHOICES = (0, 1, 2, 4, 8)  # numbers of factors data.rate_prior_factors=auto tries (0: the plain prior)


def fit_prior(cfg: DataConfig, recordings, splits: Splits, vocab: UnitVocab, spec):
    """The condition-average prior of data.rate_prior, from the training split only, and for
    data.rate_prior_factors=auto the validation NLL of each number of factors tried (else None)."""
    if not check_rate_prior(cfg):
        return None, None
    intervals, vocab_index = splits.all_intervals("train"), lambda r: vocab.index(r.unit_ids)
    prior = ConditionPrior.fit(recordings, intervals, vocab_index, bin_size=spec.bin_size, event=cfg.align_event,
                               rank=cfg.rate_prior_rank)
    if cfg.rate_prior != "psth_factors":
        return prior, None
    shape = dict(seed=cfg.split_seed, context_bins=spec.context_bins, horizon_bins=spec.horizon_bins,
                 onset_rows=_onset_rows(cfg, spec))
    if cfg.rate_prior_factors == "auto":
        prior, scores = FactorPrior.choose(prior, recordings, intervals, splits.all_intervals("valid"), vocab_index,
                                           ks=FACTOR_CHOICES, **shape)
    else:
        prior, scores = FactorPrior.fit(prior, recordings, intervals, vocab_index, k=cfg.rate_prior_factors,
                                        **shape), None
    if cfg.rate_prior_dynamics:
        prior = prior if isinstance(prior, FactorPrior) else FactorPrior.fit(prior, recordings, intervals,
                                                                            vocab_index, k=0, **shape)
        prior = prior.with_dynamics(recordings, intervals, vocab_index, k=cfg.rate_prior_dynamics, seed=cfg.split_seed,
                                    tau_bins=cfg.rate_prior_dynamics_tau_ms / 1000 / spec.bin_size)
    return prior, scores


def _onset_rows(cfg: DataConfig, spec, reach_bins: int = 5) -> range:
    """Window onsets (bins from the align event) whose forecast profile a factor prior refits:
    the evaluation's alignment, +-`reach_bins` (where anchored training windows fall too)."""
    at = int(round(cfg.align_offset_ms / 1000 / spec.bin_size))
    return range(at - reach_bins, at + reach_bins + 1)


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _check_dynamics(cfg: DataConfig) -> None:
    dyn = cfg.rate_prior_dynamics
    if not _is_count(dyn):
        raise ValueError(f"data.rate_prior_dynamics must be an integer >= 0, got {dyn!r}")
    if dyn and cfg.rate_prior != "psth_factors":
        raise ValueError(f"data.rate_prior_dynamics moves the factor prior: set data.rate_prior=psth_factors "
                         f"(got {cfg.rate_prior!r})")
    if dyn and not (isinstance(cfg.rate_prior_dynamics_tau_ms, (int, float)) and cfg.rate_prior_dynamics_tau_ms > 0):
        raise ValueError(f"data.rate_prior_dynamics_tau_ms must be a number > 0, got {cfg.rate_prior_dynamics_tau_ms!r}")


def check_rate_prior(cfg: DataConfig) -> bool:
    """Whether data.rate_prior asks for a prior; a bad setting is a clear error."""
    if not _is_count(cfg.rate_prior_rank):
        raise ValueError(f"data.rate_prior_rank must be an integer >= 0, got {cfg.rate_prior_rank!r}")
    _check_dynamics(cfg)
    k = cfg.rate_prior_factors
    if cfg.rate_prior != "psth_factors" and k not in (0, DataConfig.rate_prior_factors):
        raise ValueError(f"data.rate_prior_factors={k!r} sets the factors of data.rate_prior=psth_factors, not of "
                         f"data.rate_prior={cfg.rate_prior}")
    if cfg.rate_prior == "none":
        if cfg.rate_prior_rank:
            raise ValueError("data.rate_prior_rank denoises the condition prior: set data.rate_prior=psth too")
        return False
    if cfg.rate_prior not in ("psth", "psth_factors"):
        raise ValueError(f"data.rate_prior must be 'none', 'psth' or 'psth_factors', got {cfg.rate_prior!r}")
    k, dyn = cfg.rate_prior_factors, cfg.rate_prior_dynamics
    if cfg.rate_prior == "psth_factors" and k != "auto" and (not _is_count(k) or k < (0 if dyn else 1)):
        raise ValueError(f"data.rate_prior_factors must be an integer >= 1 (>= 0 with data.rate_prior_dynamics) "
                         f"or 'auto', got {k!r}")
    if not cfg.align_event:
        raise ValueError(f"data.rate_prior={cfg.rate_prior} needs data.align_event, the trial event the average is "
                         "aligned to")
    return True
