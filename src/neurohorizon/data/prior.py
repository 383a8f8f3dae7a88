"""Condition-average prior: the training trials' PSTH as a log-rate offset for the model.

With `data.rate_prior=psth` every future bin of a window inside a trial gets the expected count
that the training trials of the same condition had at the same time from the trial event
(`data.align_event`); the model then forecasts the single-trial deviation from it. Bins outside
a trial, of an unseen condition, or beyond the trials' time range get the unit's mean count.
It is the information the condition-given PSTH baseline has, fitted on the training split only.

The table is Gaussian-smoothed over time (sigma 2 bins) and shrunk 5 % toward the unit's mean
(the PSTH baseline's defaults), so no bin has an expected count of 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter1d

SIGMA_BINS, SHRINK, FLOOR = 2.0, 0.05, 1e-4


@dataclass
class ConditionPrior:
    """table (C, R, V) expected counts per bin for condition c, bin r of the time from the event
    (r = 0 at `rel_start` s), vocabulary unit v; unit_mean (V,) the fallback."""

    bin_size: float
    event: str
    rel_start: float
    labels: list
    table: np.ndarray
    unit_mean: np.ndarray

    @classmethod
    def fit(cls, recordings, intervals, vocab_index, *, bin_size: float, event: str) -> ConditionPrior:
        """From the trials of `recordings` inside `intervals` [(rec, start, end)] (the training
        split). vocab_index(rec) -> (N,) vocabulary index of each of its units."""
        trials = [(i, j) for i, r in enumerate(recordings) for j in _usable_trials(r, event, intervals, i)]
        if not trials:
            raise ValueError(f"data.rate_prior=psth: no training trial with a condition and a {event!r} time")
        rel = np.array([np.array([recordings[i].trials.start[j], recordings[i].trials.end[j]])
                        - recordings[i].trials.events[event][j] for i, j in trials])
        r0 = int(np.floor(rel[:, 0].min() / bin_size + 1e-9))
        r1 = int(np.ceil(rel[:, 1].max() / bin_size - 1e-9))
        labels = sorted({str(recordings[i].trials.condition[j]) for i, j in trials})
        V = 1 + max(int(vocab_index(r).max()) for r in recordings)
        sums = np.zeros((len(labels), r1 - r0, V))
        cover = np.zeros((len(labels), r1 - r0, V))
        for i, j in trials:
            _add_trial(sums, cover, recordings[i], j, vocab_index(recordings[i]), labels, event, bin_size, r0)
        unit_mean = sums.sum((0, 1)) / np.maximum(cover.sum((0, 1)), 1)
        smooth_sum = gaussian_filter1d(sums, SIGMA_BINS, axis=1, mode="constant")
        smooth_cover = gaussian_filter1d(cover, SIGMA_BINS, axis=1, mode="constant")
        seen = smooth_cover > 1e-3
        mean = np.where(seen, smooth_sum / np.where(seen, smooth_cover, 1), unit_mean)
        table = (1 - SHRINK) * mean + SHRINK * unit_mean
        return cls(bin_size, event, r0 * bin_size, labels, np.maximum(table, FLOOR).astype(np.float32),
                   np.maximum(unit_mean, FLOOR).astype(np.float32))

    def trial_conditions(self, rec) -> np.ndarray:
        """Row of `table` per trial of `rec` (-1: a condition the prior has not seen); empty when
        `rec` has no trials with conditions and the event. Computed once per recording."""
        tr = rec.trials
        if tr is None or tr.condition is None or not tr.events or self.event not in tr.events:
            return np.zeros(0, np.int64)
        label_index = {label: c for c, label in enumerate(self.labels)}
        return np.array([label_index.get(str(c), -1) for c in tr.condition], dtype=np.int64)

    def expected(self, rec, units: np.ndarray, starts: np.ndarray, conditions=None) -> np.ndarray:
        """(T, N) prior expected counts of the bins starting at `starts` (T,) for vocabulary
        units `units` (N,) of recording `rec`; `conditions`: its `trial_conditions` (computed
        when not given)."""
        out = np.broadcast_to(self.unit_mean[units], (len(starts), len(units))).copy()
        conditions = self.trial_conditions(rec) if conditions is None else conditions
        if not len(conditions):
            return out
        tr = rec.trials
        centre = starts + self.bin_size / 2
        j = np.searchsorted(tr.start, centre, side="right") - 1
        inside = (j >= 0) & (centre < tr.end[np.maximum(j, 0)])
        j = np.maximum(j, 0)
        cond = conditions[j]
        r = np.floor((centre - tr.events[self.event][j] - self.rel_start) / self.bin_size)
        ok = inside & (cond >= 0) & np.isfinite(r) & (r >= 0) & (r < self.table.shape[1])
        rows = np.flatnonzero(ok)
        out[rows] = self.table[cond[rows][:, None], r[rows].astype(int)[:, None], units[None, :]]
        return out

    def save(self, path: str | Path) -> None:
        np.savez(path, bin_size=self.bin_size, event=self.event, rel_start=self.rel_start,
                 labels=np.array(self.labels, dtype=str), table=self.table, unit_mean=self.unit_mean)

    @classmethod
    def load(cls, path: str | Path) -> ConditionPrior:
        with np.load(path) as z:
            return cls(float(z["bin_size"]), str(z["event"]), float(z["rel_start"]), z["labels"].tolist(),
                       z["table"], z["unit_mean"])


def _usable_trials(rec, event: str, intervals, index: int) -> list[int]:
    """Trials of `rec` with a condition and a finite `event` time, lying inside `intervals`."""
    tr = rec.trials
    if tr is None or tr.condition is None or not tr.events or event not in tr.events:
        return []
    spans = [(s, e) for i, s, e in intervals if i == index]
    ok = np.isfinite(tr.events[event])
    inside = np.array([any(s - 1e-9 <= a and b <= e + 1e-9 for s, e in spans) for a, b in zip(tr.start, tr.end)])
    return np.flatnonzero(ok & inside).tolist()


def _add_trial(sums, cover, rec, j, units, labels, event, bin_size, r0) -> None:
    """Add trial j's counts in whole bins of the time from its event to (C, R, V) sums/cover."""
    tr = rec.trials
    e, c = tr.events[event][j], labels.index(str(tr.condition[j]))
    a = int(np.ceil((tr.start[j] - e) / bin_size - 1e-9)) - r0  # first whole bin inside the trial
    b = int(np.floor((tr.end[j] - e) / bin_size + 1e-9)) - r0
    if b <= a:
        return
    lo, hi = np.searchsorted(rec.spike_times, [e + (a + r0) * bin_size, e + (b + r0) * bin_size])
    r = np.floor((rec.spike_times[lo:hi] - e) / bin_size).astype(int) - r0
    np.add.at(sums[c], (r, units[rec.spike_units[lo:hi]]), 1.0)
    cover[c, a:b, units] += 1.0
