"""Condition-average prior: the training trials' PSTH as a log-rate offset for the model.

With `data.rate_prior=psth` every future bin of a window inside a trial gets the expected count
that the training trials of the same condition had at the same time from the trial event
(`data.align_event`); the model then forecasts the single-trial deviation from it. Bins outside
a trial, of an unseen condition, beyond the trials' time range, or in a trial that starts after the
forecast onset (whose condition is not known yet) get the unit's mean count.
It is the information the condition-given PSTH baseline has, fitted on the training split only.

The table is Gaussian-smoothed over time (sigma 2 bins) and shrunk 5 % toward the unit's mean
(the PSTH baseline's defaults), so no bin has an expected count of 0.

With `rank` (`data.rate_prior_rank`) the table is also denoised across units: its square root
(which makes Poisson noise roughly uniform) keeps only its top `rank` population modes. Units
of one population share a few latent dimensions, so this pools them: ~28 trials per condition
give each (unit, bin) only a few spikes. On the demo's reach data the prior alone then scores
0.135 / 0.215 / 0.163 bits/spike on the test go cues at 240 / 500 / 1000 ms, against 0.123 /
0.210 / 0.154 plain, and 0.141 / 0.225 / 0.172 for the plain table of 1,000 trials per condition.

Training windows lie inside the very trials the average is made of, so the plain table holds
1/n of each window's own future spikes (n ~ 28 trials per condition on the demo's reach): on
the demo's training trials at the go cue the in-sample table scores 0.21 bits/spike at 240 ms,
a cross-fitted one 0.14, the level it has on unseen trials. A model trained on it learns to
trust a prior that is better in training than it will ever be. `leave_one_out()` gives the
training windows what test windows get: the same average without the window's own trial.
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
    modes: PopulationModes | None = None  # the denoising of fit(rank=...), None without
    fit_stats: _FitStats | None = None  # what leave_one_out() needs; not saved

    @classmethod
    def fit(cls, recordings, intervals, vocab_index, *, bin_size: float, event: str,
            rank: int = 0) -> ConditionPrior:
        """From the trials of `recordings` inside `intervals` [(rec, start, end)] (the training
        split). vocab_index(rec) -> (N,) vocabulary index of each of its units. rank > 0 keeps
        the table's top `rank` population modes (module docstring); 0 keeps the plain table."""
        trials = [(i, j) for i, r in enumerate(recordings) for j in _usable_trials(r, event, intervals, i)]
        if not trials:
            raise ValueError(_no_usable_trials(recordings, event))
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
        stats = _FitStats(gaussian_filter1d(sums, SIGMA_BINS, axis=1, mode="constant"),
                          gaussian_filter1d(cover, SIGMA_BINS, axis=1, mode="constant"),
                          sums.sum((0, 1)), cover.sum((0, 1)), r0,
                          [np.isin(np.arange(_n_trials(r)), [j for i2, j in trials if i2 == i])
                           for i, r in enumerate(recordings)])
        unit_mean = stats.unit_sum / np.maximum(stats.unit_cover, 1)
        table = _shrunk_mean(stats.smooth_sum, stats.smooth_cover, unit_mean)
        modes = PopulationModes.fit(table, rank) if rank else None
        if modes is not None:
            table = modes.project(table)
        return cls(bin_size, event, r0 * bin_size, labels, table.astype(np.float32),
                   np.maximum(unit_mean, FLOOR).astype(np.float32), modes, stats)

    def leave_one_out(self) -> LeaveOneOutPrior:
        """This prior as training windows should see it: a bin inside a trial of the fit gets the
        average of the other trials (exactly what a fit without that trial gives there)."""
        if self.fit_stats is None:
            raise ValueError("leave_one_out needs a prior made by ConditionPrior.fit, not one loaded from a file")
        return LeaveOneOutPrior(self)

    def trial_conditions(self, rec) -> np.ndarray:
        """Row of `table` per trial of `rec` (-1: a condition the prior has not seen); empty when
        `rec` has no trials with conditions and the event. Computed once per recording."""
        tr = rec.trials
        if tr is None or tr.condition is None or not tr.events or self.event not in tr.events:
            return np.zeros(0, np.int64)
        label_index = {label: c for c, label in enumerate(self.labels)}
        return np.array([label_index.get(str(c), -1) for c in tr.condition], dtype=np.int64)

    def expected(self, rec, units: np.ndarray, starts: np.ndarray, conditions=None, rec_index=None,
                 *, onset: float | None = None, located=None) -> np.ndarray:
        """(T, N) prior expected counts of the bins starting at `starts` (T,) for vocabulary
        units `units` (N,) of recording `rec`; `conditions`: its `trial_conditions` (computed
        when not given); `onset`: the forecast onset (`locate`); `located`: `locate`'s answer,
        when already known. `rec_index` (its position among the fitted recordings) is unused
        here; `LeaveOneOutPrior.expected` needs it."""
        out = np.broadcast_to(self.unit_mean[units], (len(starts), len(units))).copy()
        rows, trial, cond, r = self.locate(rec, starts, conditions, onset=onset) if located is None else located
        out[rows] = self.table[cond[:, None], r[:, None], units[None, :]]
        return out

    def locate(self, rec, starts: np.ndarray, conditions=None, *, onset: float | None = None):
        """The bins starting at `starts` that the table covers: their positions `rows`, and for
        each its trial, the trial's table condition and the table row r (time from the event).

        Only trials that have started by `onset` (the forecast onset, s; default ``starts[0]``)
        count: a later trial's condition and event times are not known when the forecast is
        made, so its bins are left to the unit's mean like bins outside any trial."""
        conditions = self.trial_conditions(rec) if conditions is None else conditions
        if not len(conditions) or not len(starts):
            return (np.zeros(0, np.int64),) * 4
        tr = rec.trials
        onset = starts[0] if onset is None else onset
        centre = starts + self.bin_size / 2
        j = np.searchsorted(tr.start, centre, side="right") - 1
        # 1 µs of slack: bin edges computed from the event time can land a rounding error before the start
        inside = (j >= 0) & (centre < tr.end[np.maximum(j, 0)]) & (tr.start[np.maximum(j, 0)] <= onset + 1e-6)
        j = np.maximum(j, 0)
        cond = conditions[j]
        r = np.floor((centre - tr.events[self.event][j] - self.rel_start) / self.bin_size)
        ok = inside & (cond >= 0) & np.isfinite(r) & (r >= 0) & (r < self.table.shape[1])
        rows = np.flatnonzero(ok)
        return rows, j[rows], cond[rows], r[rows].astype(np.int64)

    def save(self, path: str | Path, **extra: np.ndarray) -> None:
        """To an .npz file, with `extra` arrays beside (e.g. data/factors.py's loadings)."""
        modes = {} if self.modes is None else {"centre": self.modes.centre, "basis": self.modes.basis}
        np.savez(path, bin_size=self.bin_size, event=self.event, rel_start=self.rel_start,
                 labels=np.array(self.labels, dtype=str), table=self.table, unit_mean=self.unit_mean, **modes, **extra)

    @classmethod
    def load(cls, path: str | Path) -> ConditionPrior:
        with np.load(path) as z:
            modes = PopulationModes(z["centre"], z["basis"]) if "basis" in z else None
            return cls(float(z["bin_size"]), str(z["event"]), float(z["rel_start"]), z["labels"].tolist(),
                       z["table"], z["unit_mean"], modes)


def _usable_trials(rec, event: str, intervals, index: int) -> list[int]:
    """Trials of `rec` with a condition and a finite `event` time, lying inside `intervals`."""
    tr = rec.trials
    if tr is None or tr.condition is None or not tr.events or event not in tr.events:
        return []
    spans = [(s, e) for i, s, e in intervals if i == index]
    ok = np.isfinite(tr.events[event])
    inside = np.array([any(s - 1e-9 <= a and b <= e + 1e-9 for s, e in spans) for a, b in zip(tr.start, tr.end)])
    return np.flatnonzero(ok & inside).tolist()


def _no_usable_trials(recordings, event: str) -> str:
    """The error when no training trial qualifies, with the events and conditions there are."""
    trials = [r.trials for r in recordings if r.trials is not None]
    events = sorted({name for tr in trials for name in (tr.events or {})})
    labels = {str(c) for tr in trials if tr.condition is not None for c in tr.condition}
    have = (f"data.rate_prior=psth: no training trial with a condition and a {event!r} time; the recordings "
            f"have {sum(len(tr.start) for tr in trials)} trial(s), trial events {events or 'none'} and "
            f"{len(labels)} condition label(s)")
    if not labels:  # the event is not the problem: the prior averages per condition
        return (have + ": the prior needs condition labels (an NWB trials column named by "
                "data.options.condition_column), or use data.rate_prior=none")
    return have + ": set data.align_event to one of those events"


def _add_trial(sums, cover, rec, j, units, labels, event, bin_size, r0) -> None:
    """Add trial j's counts in whole bins of the time from its event to (C, R, V) sums/cover."""
    c = labels.index(str(rec.trials.condition[j]))
    a, b = _whole_bins(rec, j, event, bin_size, r0)
    if b <= a:
        return
    r, local = _trial_spikes(rec, j, event, bin_size, r0, a, b)
    np.add.at(sums[c], (r, units[local]), 1.0)
    cover[c, a:b, units] += 1.0


def _whole_bins(rec, j, event, bin_size, r0) -> tuple[int, int]:
    """Table rows [a, b) of the whole bins inside trial j."""
    tr = rec.trials
    e = tr.events[event][j]
    a = int(np.ceil((tr.start[j] - e) / bin_size - 1e-9)) - r0
    b = int(np.floor((tr.end[j] - e) / bin_size + 1e-9)) - r0
    return a, b


def _trial_spikes(rec, j, event, bin_size, r0, a, b) -> tuple[np.ndarray, np.ndarray]:
    """Table row and local unit of each spike of trial j in rows [a, b)."""
    e = rec.trials.events[event][j]
    lo, hi = np.searchsorted(rec.spike_times, [e + (a + r0) * bin_size, e + (b + r0) * bin_size])
    r = np.floor((rec.spike_times[lo:hi] - e) / bin_size).astype(int) - r0
    return r, rec.spike_units[lo:hi]


def _n_trials(rec) -> int:
    return 0 if rec.trials is None else len(rec.trials.start)


def _shrunk_mean(smooth_sum, smooth_cover, unit_mean) -> np.ndarray:
    """The smoothed average where covered (else the unit's mean), shrunk toward the unit's mean."""
    seen = smooth_cover > 1e-3
    mean = np.where(seen, smooth_sum / np.where(seen, smooth_cover, 1), unit_mean)
    return np.maximum((1 - SHRINK) * mean + SHRINK * unit_mean, FLOOR)


@dataclass
class PopulationModes:
    """The top population modes of a (..., V) table of expected counts, in the square-root
    domain: centre (V,) the mean root per unit, basis (rank, V) orthonormal rows."""

    centre: np.ndarray
    basis: np.ndarray

    @classmethod
    def fit(cls, table: np.ndarray, rank: int) -> PopulationModes:
        if rank < 1:
            raise ValueError(f"population modes need a rank >= 1, got {rank}")
        roots = np.sqrt(table.reshape(-1, table.shape[-1]).astype(np.float64))
        centre = roots.mean(0)
        basis = np.linalg.svd(roots - centre, full_matrices=False)[2][:rank]
        return cls(centre, basis)

    def project(self, table: np.ndarray) -> np.ndarray:
        """The (..., V) table with only these modes kept (floored, so no count is 0)."""
        roots = np.sqrt(table.astype(np.float64)) - self.centre
        kept = roots @ self.basis.T @ self.basis + self.centre
        return np.maximum(np.square(kept), FLOOR)


def _gaussian_weights() -> np.ndarray:
    """gaussian_filter1d's kernel for SIGMA_BINS (truncate 4), w[k + radius] for lag k."""
    radius = int(4.0 * SIGMA_BINS + 0.5)
    w = np.exp(-0.5 * (np.arange(-radius, radius + 1) / SIGMA_BINS) ** 2)
    return w / w.sum()


@dataclass
class _FitStats:
    """Sufficient statistics of a fit: the smoothed (C, R, V) sums and cover, the (V,) totals
    behind unit_mean, the first table row r0, and per fitted recording which trials are in."""

    smooth_sum: np.ndarray
    smooth_cover: np.ndarray
    unit_sum: np.ndarray
    unit_cover: np.ndarray
    r0: int
    fitted: list


class LeaveOneOutPrior:
    """A fitted `ConditionPrior` minus each bin's own trial, for training windows (see the module
    docstring). Same interface as ConditionPrior; `expected` needs `rec_index`."""

    CACHE_BYTES = 128 * 2**20  # per process (each DataLoader worker has its own)

    def __init__(self, prior: ConditionPrior):
        self.prior, self.stats = prior, prior.fit_stats
        self.weights = _gaussian_weights()
        self._own_totals = {}  # (recording, trial) -> (spikes per local unit, whole bins): fixed per trial
        # (recording, trial) -> (first row, its leave-one-out table rows): the same for every window
        # of the trial, so computed once (training windows revisit each trial many times an epoch)
        self._tables, self._table_bytes = {}, 0

    def trial_conditions(self, rec) -> np.ndarray:
        return self.prior.trial_conditions(rec)

    def expected(self, rec, units: np.ndarray, starts: np.ndarray, conditions=None, rec_index=None,
                 *, onset: float | None = None) -> np.ndarray:
        if rec_index is None:
            raise ValueError("LeaveOneOutPrior.expected needs rec_index, the recording's position in the fit")
        if len(units) != rec.n_units:  # the trial's own spikes are counted per local unit
            raise ValueError(f"LeaveOneOutPrior.expected needs all {rec.n_units} units of {rec.source} in their "
                             f"order, got {len(units)}")
        located = self.prior.locate(rec, starts, conditions, onset=onset)
        out = self.prior.expected(rec, units, starts, located=located)
        rows, trial, cond, r = located
        fitted = self.stats.fitted[rec_index]
        for j in np.unique(trial):
            if fitted[j]:
                pick = trial == j
                out[rows[pick]] = self._trial_rows(rec, rec_index, j, units, cond[pick][0], r[pick])
        return out

    def _trial_rows(self, rec, rec_index, j, units, c, r) -> np.ndarray:
        """`_without_trial` at rows r, from a table of every row trial j's bins can fall on."""
        first, table = self._tables.get((rec_index, j)) or self._trial_table(rec, rec_index, j, units, c)
        if ((r >= first) & (r < first + len(table))).all():
            return table[r - first]
        return self._without_trial(rec, rec_index, j, units, c, r)  # not expected; exact all the same

    def _trial_table(self, rec, rec_index, j, units, c) -> tuple:
        """(first row, leave-one-out rows of trial j from there), kept within CACHE_BYTES (oldest
        out first; a table larger than the whole bound is used once and not kept)."""
        a, b = _whole_bins(rec, j, self.prior.event, self.prior.bin_size, self.stats.r0)
        first = max(a - 1, 0)  # a bin centred inside the trial lies at most one row outside [a, b)
        rows = np.arange(first, min(b + 1, self.prior.table.shape[1]))
        table = self._without_trial(rec, rec_index, j, units, c, rows).astype(np.float32)
        if table.nbytes <= self.CACHE_BYTES:
            while self._tables and self._table_bytes + table.nbytes > self.CACHE_BYTES:
                self._table_bytes -= self._tables.pop(next(iter(self._tables)))[1].nbytes
            self._tables[rec_index, j], self._table_bytes = (first, table), self._table_bytes + table.nbytes
        return first, table

    def _without_trial(self, rec, rec_index, j, units, c, r) -> np.ndarray:
        """(len(r), N) the table at rows r of condition c, as a fit without trial j makes it."""
        if self.prior.modes is None:
            return self._plain_without(rec, rec_index, j, units, c, r)[0]
        return self._denoised_without(rec, rec_index, j, units, c, r)

    def _plain_without(self, rec, rec_index, j, units, c, r) -> tuple:
        """The plain (not denoised) table at rows r of condition c without trial j's spikes,
        and the units' mean count without the trial."""
        st, p = self.stats, self.prior
        a, b = _whole_bins(rec, j, p.event, p.bin_size, st.r0)
        radius = len(self.weights) // 2
        lo, hi = max(a, r.min() - radius), min(b, r.max() + radius + 1)
        counts = np.zeros((max(hi - lo, 0), len(units)))
        if hi > lo:
            rr, local = _trial_spikes(rec, j, p.event, p.bin_size, st.r0, lo, hi)
            np.add.at(counts, (rr - lo, local), 1.0)
        lag = r[:, None] - np.arange(lo, hi)[None, :] + radius  # (len(r), hi - lo) kernel index
        w = np.where((lag >= 0) & (lag < len(self.weights)), self.weights[np.clip(lag, 0, len(self.weights) - 1)], 0)
        own_sum, own_cover = w @ counts, w.sum(1)[:, None]
        if (rec_index, j) not in self._own_totals:
            spikes = _trial_spikes(rec, j, p.event, p.bin_size, st.r0, a, b)[1]
            self._own_totals[rec_index, j] = np.bincount(spikes, minlength=len(units))
        n_own = self._own_totals[rec_index, j]
        unit_mean = (st.unit_sum[units] - n_own) / np.maximum(st.unit_cover[units] - (b - a), 1)
        rows = _shrunk_mean(st.smooth_sum[c][r][:, units] - own_sum, st.smooth_cover[c][r][:, units] - own_cover,
                            unit_mean)
        return rows, unit_mean

    def _denoised_without(self, rec, rec_index, j, units, c, r) -> np.ndarray:
        """Rows r of condition c of the denoised table that a fit without trial j makes: the
        whole plain table without the trial (its condition's rows, and every unit's mean, which
        the other conditions are shrunk toward), then modes refitted on it and projected."""
        st = self.stats
        all_rows = np.arange(st.smooth_sum.shape[1])
        own_rows, own_mean = self._plain_without(rec, rec_index, j, units, c, all_rows)
        unit_mean = st.unit_sum / np.maximum(st.unit_cover, 1)
        unit_mean[units] = own_mean
        table = _shrunk_mean(st.smooth_sum, st.smooth_cover, unit_mean)
        table[c][:, units] = own_rows
        modes = PopulationModes.fit(table, len(self.prior.modes.basis))
        return modes.project(table[c][r])[:, units]
