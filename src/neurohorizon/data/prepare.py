"""From a data config to train/valid/test forecasting datasets, deterministically.

Training windows are drawn at random inside the training split (anew each epoch);
validation and test windows are trial-aligned to `align_event` when given, otherwise
sequential, non-overlapping windows covering the split.
"""

from __future__ import annotations

from dataclasses import dataclass

from neurohorizon.config import DataConfig
from neurohorizon.data.recording import Recording
from neurohorizon.data.splits import Splits, make_splits, windows_for_split
from neurohorizon.data.windows import ForecastDataset, UnitVocab, WindowSpec, resolve_events


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


def resolve_mode(recordings: list[Recording], mode: str) -> str:
    if mode != "auto":
        return mode
    return "trials" if all(r.trials is not None and len(r.trials.start) for r in recordings) else "continuous"


def window_spec(cfg: DataConfig, horizon_ms: float | None = None) -> WindowSpec:
    return WindowSpec.from_ms(
        context_ms=cfg.context_ms, horizon_ms=horizon_ms or cfg.horizon_ms, bin_size_ms=cfg.bin_size_ms
    )


def prepare_data(
    cfg: DataConfig,
    *,
    recordings: list[Recording] | None = None,
    vocab: UnitVocab | None = None,
    splits: Splits | None = None,
) -> PreparedData:
    """Load (unless given), split, and window the data described by `cfg`."""
    if recordings is None:
        from neurohorizon.data.sources import load_data

        recordings = load_data(cfg.source, **cfg.options)
    spec = window_spec(cfg)
    mode = resolve_mode(recordings, cfg.mode)
    if splits is None:
        splits = make_splits(
            recordings, spec, seed=cfg.split_seed, fractions=tuple(cfg.fractions),
            holdout_sessions=tuple(cfg.holdout_sessions), mode=mode,
        )
    vocab = vocab or UnitVocab.from_recordings(recordings)
    offset = cfg.align_offset_ms / 1000
    events = resolve_events(cfg.events, recordings)

    def fixed(split: str) -> ForecastDataset:
        windows = windows_for_split(recordings, splits, split, spec, seed=cfg.split_seed,
                                    event=cfg.align_event, offset_s=offset,
                                    mode="auto" if split != "train" else "trial")
        return ForecastDataset(recordings, windows, spec, vocab, events=events)

    intervals = splits.all_intervals("train")
    if not intervals:
        raise ValueError("split 'train' is empty: no training time in any recording")
    train = ForecastDataset(recordings, [], spec, vocab, random_windows_per_epoch=cfg.train_windows_per_epoch,
                            intervals=intervals, seed=cfg.split_seed, events=events)
    return PreparedData(
        recordings=recordings, spec=spec, vocab=vocab, splits=splits, mode=mode,
        train=train, valid=fixed("valid"), test=fixed("test"),
        train_aligned=fixed("train") if cfg.align_event else None, events=tuple(events),
    )
