"""Forecast windows: specification, unit vocabulary and sampling (data/dataset.py turns them
into model inputs).

A window is anchored at its forecast onset t0: the context is [t0 - context_s, t0) and
the future is [t0, t0 + horizon_s). Bins lie on the exact grid t0 + k * bin_size,
k = -Tc..T; onsets are never snapped to a global grid.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from neurohorizon.data.binning import (
    DEFAULT_BIN_SIZE,
    BinningError,
    n_bins,
)
from neurohorizon.runs import write_text_atomic

PAD_TOKEN = "NA"


# ---------------------------------------------------------------- specification
@dataclass(frozen=True)
class WindowSpec:
    """Window geometry in bins: `context_bins` before the onset, `horizon_bins` after."""

    bin_size: float = DEFAULT_BIN_SIZE
    context_bins: int = 25
    horizon_bins: int = 50

    def __post_init__(self):
        if self.bin_size <= 0 or self.context_bins < 1 or self.horizon_bins < 1:
            raise BinningError(f"invalid window spec {self}")

    @classmethod
    def from_ms(
        cls, context_ms: float = 500, horizon_ms: float = 1000, bin_size_ms: float = 20
    ) -> WindowSpec:
        """Build from milliseconds; raises BinningError unless both are whole numbers of bins."""
        bs = bin_size_ms / 1000
        return cls(
            bin_size=bs,
            context_bins=n_bins(context_ms / 1000, bs, what="context"),
            horizon_bins=n_bins(horizon_ms / 1000, bs, what="horizon"),
        )

    @property
    def context_s(self) -> float:
        return self.context_bins * self.bin_size

    @property
    def horizon_s(self) -> float:
        return self.horizon_bins * self.bin_size

    @property
    def total_s(self) -> float:
        return (self.context_bins + self.horizon_bins) * self.bin_size

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------- unit vocabulary
class UnitVocab:
    """Global unit ids -> int indices; index 0 is padding ("NA").

    Args:
        unit_ids: global ids (`session/unit`); stored sorted and unique.
    """

    def __init__(self, unit_ids):
        ids = sorted({str(u) for u in unit_ids})
        if PAD_TOKEN in ids:
            raise ValueError(f"unit id {PAD_TOKEN!r} is reserved for padding")
        self.tokens = [PAD_TOKEN, *ids]
        self._index = {u: i for i, u in enumerate(self.tokens)}

    @classmethod
    def from_recordings(cls, recordings) -> UnitVocab:
        return cls(u for rec in recordings for u in rec.unit_ids)

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, unit_id) -> bool:
        return str(unit_id) != PAD_TOKEN and str(unit_id) in self._index

    def known(self, ids) -> np.ndarray:
        """(N,) bool: which ids are in the vocabulary (for keep-known-units evaluation)."""
        return np.array([str(u) in self for u in ids], dtype=bool)

    def index(self, ids) -> np.ndarray:
        """(N,) int64 indices of `ids`; KeyError listing every unknown id."""
        ids = [str(u) for u in ids]
        unknown = [u for u in ids if u not in self]
        if unknown:
            raise KeyError(f"{len(unknown)} unit id(s) not in the vocabulary: {unknown[:10]}")
        return np.array([self._index[u] for u in ids], dtype=np.int64)

    def to_dict(self) -> dict:
        return {"tokens": self.tokens}

    @classmethod
    def from_dict(cls, d: dict) -> UnitVocab:
        tokens = list(d["tokens"])
        if not tokens or tokens[0] != PAD_TOKEN:
            raise ValueError(f"vocabulary must start with the padding token {PAD_TOKEN!r}")
        return cls(tokens[1:])

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        write_text_atomic(path, json.dumps(self.to_dict()))
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> UnitVocab:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f"{path}: not a unit vocabulary ({e})") from e


# ---------------------------------------------------------------------- windows
class Window(NamedTuple):
    """One forecast window: recording index, onset (s, start of the forecast), condition."""

    rec: int
    onset: float
    condition: int = -1


def _usable(intervals, spec: WindowSpec):
    """(rec, first onset, last onset) for intervals that hold at least one window."""
    out = []
    for rec, start, end in intervals:
        lo, hi = start + spec.context_s, end - spec.horizon_s
        if hi >= lo - 1e-9:
            out.append((int(rec), lo, max(lo, hi)))
    return out


def _too_short(intervals, spec: WindowSpec, names=None) -> BinningError:
    longest = max(((e - s), r) for r, s, e in intervals) if intervals else (0.0, None)
    where = names[longest[1]] if names is not None and longest[1] is not None else longest[1]
    return BinningError(
        f"no interval holds a {spec.total_s * 1000:g} ms window "
        f"(context {spec.context_s * 1000:g} ms + horizon {spec.horizon_s * 1000:g} ms); "
        f"longest is {longest[0] * 1000:g} ms (recording {where})"
    )


def random_windows(
    intervals, spec: WindowSpec, n: int, rng: np.random.Generator, *, grid=None, names=None
) -> list[Window]:
    """Draw `n` onsets uniformly over all positions where context + future fit an interval.

    Args:
        intervals: iterable of (rec index, start s, end s).
        grid: optional step (s); onsets are then drawn uniformly from multiples of it
            (needed when oracle rates live on a fine grid, e.g. 1/200 s).
        names: optional recording names for error messages.
    """
    intervals = [(int(r), float(s), float(e)) for r, s, e in intervals]
    usable = _usable(intervals, spec)
    if grid is not None:  # keep only intervals that contain a grid point
        usable = [(r, np.ceil(lo / grid - 1e-9) * grid, hi) for r, lo, hi in usable]
        usable = [(r, lo, hi) for r, lo, hi in usable if lo <= hi + 1e-9]
    if not usable:
        raise _too_short(intervals, spec, names)
    recs = np.array([u[0] for u in usable])
    lo = np.array([u[1] for u in usable])
    hi = np.array([u[2] for u in usable])
    if grid is None:
        weight = hi - lo
        weight = weight + (weight.sum() == 0)  # all zero-length: uniform over intervals
        pick = rng.choice(len(usable), size=n, p=weight / weight.sum())
        onsets = lo[pick] + rng.random(n) * (hi - lo)[pick]
    else:
        counts = np.floor((hi - lo) / grid + 1e-9).astype(np.int64) + 1
        pick = rng.choice(len(usable), size=n, p=counts / counts.sum())
        onsets = lo[pick] + rng.integers(0, counts[pick]) * grid
    return [Window(int(recs[i]), float(t)) for i, t in zip(pick, onsets)]


def sequential_windows(intervals, spec: WindowSpec, *, names=None) -> list[Window]:
    """Non-overlapping windows tiling each interval from its start (stride = total_s).

    Intervals shorter than one window are skipped; BinningError if none holds one.
    """
    intervals = [(int(r), float(s), float(e)) for r, s, e in intervals]
    out = []
    for rec, start, end in intervals:
        n = int(np.floor((end - start) / spec.total_s + 1e-9))
        onsets = start + spec.context_s + np.arange(n) * spec.total_s
        out += [Window(rec, float(t)) for t in onsets]
    if not out:
        raise _too_short(intervals, spec, names)
    return out


def condition_labels(recording) -> list[str]:
    """Sorted condition labels of a recording's trials (index = condition id)."""
    trials = recording.trials
    if trials is None or trials.condition is None:
        return []
    return sorted(set(trials.condition.tolist()))


def trial_windows(
    recording,
    spec: WindowSpec,
    event: str = "go_cue",
    offset_s: float = 0.0,
    trials=None,
    *,
    rec_index: int = 0,
) -> list[Window]:
    """One window per trial with onset = event time + offset_s (event "start"/"end": trial edges).

    The whole window must lie inside the recording's domain; trials whose event time
    is NaN, or whose window crosses unrecorded time (a recording made of separate pieces,
    e.g. one per trial), are skipped with a warning: unrecorded bins are not silence.
    Windows carry the trial's condition index.
    """
    tr = recording.trials
    src = recording.source
    if tr is None or len(tr.start) == 0:
        raise ValueError(f"{src}: recording has no trials; use continuous windows instead")
    idx = np.arange(len(tr.start)) if trials is None else np.asarray(trials, dtype=np.int64)
    if event in ("start", "end"):
        times = tr.start if event == "start" else tr.end
    elif tr.events and event in tr.events:
        times = tr.events[event]
    else:
        have = ["start", "end", *sorted(tr.events or {})]
        raise ValueError(f"{src}: no trial event {event!r}; available: {have}")
    onsets = np.asarray(times, dtype=np.float64)[idx] + offset_s
    bad = ~np.isfinite(onsets)
    if bad.any():
        warnings.warn(
            f"{src}: skipping {int(bad.sum())} trial(s) with no {event!r} time", stacklevel=2
        )
    labels = np.array(condition_labels(recording))
    cond = (
        np.searchsorted(labels, tr.condition[idx])
        if len(labels)
        else np.full(len(idx), -1, dtype=np.int64)
    )
    d0, d1 = recording.domain
    out, gaps = [], []
    for t, c, i in zip(onsets[~bad], cond[~bad], idx[~bad]):
        if t - spec.context_s < d0 - 1e-9 or t + spec.horizon_s > d1 + 1e-9:
            raise BinningError(
                f"{src}: trial {i} window [{t - spec.context_s:.3f}, {t + spec.horizon_s:.3f}) s "
                f"({spec.total_s * 1000:g} ms) leaves the recording domain [{d0:.3f}, {d1:.3f}] s"
            )
        if recording.span_of(t - spec.context_s, t + spec.horizon_s) is None:
            gaps.append(int(i))
            continue
        out.append(Window(rec_index, float(t), int(c)))
    if gaps:
        warnings.warn(
            f"{src}: skipping {len(gaps)} trial(s) (e.g. trial {gaps[0]}) whose {spec.total_s * 1000:g} ms window "
            f"around {event!r}{offset_s * 1000:+g} ms crosses unrecorded time (the recording is "
            f"{len(recording.recorded_spans)} separate intervals); a shorter data.horizon_ms or data.context_ms, or "
            "another align event or offset, keeps them",
            stacklevel=2,
        )
    return out
