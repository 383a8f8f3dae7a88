"""The forecasting dataset: windows (data/windows.py) turned into binned counts, spikes, trial
events and prior rates, and `collate`, which pads them into batches."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from neurohorizon.data.binning import BinningError, bin_spikes_at_edges
from neurohorizon.data.windows import (
    UnitVocab,
    Window,
    WindowSpec,
    random_windows,
)

CONDITION_EVENT = "@condition"  # "go_cue@condition": a go-cue token typed by the trial's condition


def resolve_events(events, recordings) -> list[str]:
    """Expand each "EVENT@condition" into one event type per trial condition label found in
    `recordings` ("EVENT@condition=LABEL"), so the model is told which condition (e.g. which
    reach target) the experimenter cued, as the condition-given PSTH baseline is."""
    repeated = sorted({str(e) for e in events if list(events).count(e) > 1})
    if repeated:
        raise ValueError(f"data.events lists {repeated} more than once; give each event once")
    out = []
    for name in events:
        if not name.endswith(CONDITION_EVENT):
            out.append(name)
            continue
        labels = sorted({str(c) for r in recordings if r.trials is not None and r.trials.condition is not None
                         for c in r.trials.condition})
        if not labels:
            raise ValueError(f"event {name!r}: no recording has trial condition labels")
        out += [f"{name}={label}" for label in labels]
    return out


def _event_times(rec, name: str) -> np.ndarray:
    """One time per trial of event `name`; "EVENT@condition=LABEL" keeps trials of that condition."""
    base, _, label = name.partition(CONDITION_EVENT + "=")
    times = np.asarray(rec.trials.events[base], np.float64)
    if name.startswith(base + CONDITION_EVENT):
        if rec.trials.condition is None:
            raise ValueError(f"{rec.source}: event {name!r} needs trial condition labels; this data has none")
        times = times[np.asarray(rec.trials.condition).astype(str) == label]
    return times


def _event_table(rec, events) -> tuple[np.ndarray, np.ndarray]:
    """Sorted times (s) and types (1-based index into `events`) of a recording's trial events."""
    if not events:
        return np.zeros(0), np.zeros(0, np.int64)
    have = sorted((rec.trials.events or {}) if rec.trials is not None else {})
    missing = [e for e in events if e.partition(CONDITION_EVENT)[0] not in have]
    if missing:
        raise ValueError(
            f"{rec.source}: no trial event(s) {missing} to condition on; available: {have}"
        )
    per_event = [_event_times(rec, e) for e in events]
    times = np.concatenate(per_event)
    types = np.concatenate([np.full(len(t), i + 1) for i, t in enumerate(per_event)])
    keep = np.isfinite(times)
    order = np.argsort(times[keep], kind="stable")
    return times[keep][order], types[keep][order].astype(np.int64)


class _RecordingCache:
    """Per-recording arrays used on every item: spikes, vocab indices, events, true rates."""

    def __init__(self, rec, vocab: UnitVocab, events=()):
        self.source = rec.source
        self.event_times, self.event_types = _event_table(rec, events)
        self.times = rec.spike_times
        self.local_units = rec.spike_units
        self.units = vocab.index(rec.unit_ids)  # (N,) vocab index per local unit
        self.spike_vocab = self.units[self.local_units]  # (S,)
        self.n_units = rec.n_units
        self.rates = None
        if rec.has_true_rate:
            tr = rec.data.true_rate
            self.fs = float(tr.sampling_rate)
            self.t0 = float(np.asarray(tr.domain.start).min())
            self.rates = np.asarray(tr.rates).reshape(len(tr.rates), -1)  # (samples, N) Hz, not copied

    def expected(self, edges: np.ndarray) -> np.ndarray:
        """(len(edges) - 1, N) oracle expected counts; edges must lie on the fine grid. Summed over
        the window's own samples: a whole-recording cumulative sum cost 0.3 s per new dataset
        (each `forecast` call) on the demo's 13-minute recording."""
        pos = (edges - self.t0) * self.fs
        k = np.round(pos).astype(np.int64)
        if np.abs(pos - k).max() > 1e-6 or k[0] < 0 or k[-1] > len(self.rates):
            raise BinningError(
                f"{self.source}: bin edges {edges[0]:.6f}..{edges[-1]:.6f} s are not on the "
                f"true_rate grid ({self.fs:g} Hz from {self.t0:g} s, {len(self.rates)} samples)"
            )
        segment = self.rates[k[0]:k[-1]].astype(np.float64) / self.fs
        return np.add.reduceat(segment, k[:-1] - k[0], axis=0)


class ForecastDataset(Dataset):
    """Windows over recordings, returned as dicts of numpy arrays (see `collate`).

    Args:
        recordings: list of Recording.
        spec: WindowSpec: context and horizon bins.
        vocab: UnitVocab covering every unit of `recordings`.
        windows: list of Window (None, and drawn, when `random_windows_per_epoch` is set).
        random_windows_per_epoch: if set, draw this many random windows from `intervals`
            and redraw on `resample(seed)` (the trainer calls it each epoch) so each epoch sees fresh windows.
        intervals: (rec, start, end) allowed spans for random windows.
        seed: base seed of the random windows.
        grid: onset grid for random windows (default: 1/fs of true_rate when present).
        anchors: windows (e.g. every training trial at its go cue) that `anchor_fraction` of each
            epoch's random windows are drawn from instead, each onset shifted uniformly within
            +-`anchor_jitter_s` (on `grid`): training weighted towards the alignment evaluated.
        events: trial event names (e.g. ["target_on", "go_cue"]) whose occurrences inside the
            context, end included, are returned as `event_times` / `event_types` (1-based).
        prior: a `ConditionPrior` (data/prior.py), or its `leave_one_out()` for windows inside
            the trials it was fitted on: adds `prior_counts` (T, N), its expected counts for the
            future bins. Fitted on `recordings` in this order (`rec_index` is a window's `rec`).
    """

    def __init__(
        self,
        recordings,
        *,
        spec: WindowSpec,
        vocab: UnitVocab,
        windows=None,
        random_windows_per_epoch: int | None = None,
        intervals=None,
        seed: int = 0,
        grid: float | None = None,
        anchors=(),
        anchor_fraction: float = 0.0,
        anchor_jitter_s: float = 0.0,
        events=(),
        prior=None,
    ):
        if not 0.0 <= anchor_fraction <= 1.0:
            raise ValueError(f"anchor_fraction must be in [0, 1], got {anchor_fraction}")
        if anchor_fraction > 0 and not anchors:
            raise ValueError("anchor_fraction > 0 needs anchor windows (a trial event to align to)")
        self.anchors, self.anchor_fraction, self.anchor_jitter_s = list(anchors), anchor_fraction, anchor_jitter_s
        self.recordings = list(recordings)
        self.prior = prior
        self.spec = spec
        self.vocab = vocab
        self.events = list(events)
        self._cache = [_RecordingCache(r, vocab, self.events) for r in self.recordings]
        self._prior_conditions = [None if prior is None else prior.trial_conditions(r) for r in self.recordings]
        offsets = np.arange(-spec.context_bins, spec.horizon_bins + 1)
        self._edge_steps = offsets * spec.bin_size  # onset + these = exact edges
        self.random_windows_per_epoch = random_windows_per_epoch
        self.intervals = None if intervals is None else [tuple(i) for i in intervals]
        self.seed = seed
        if grid is None:
            fs = [c.fs for c in self._cache if c.rates is not None]
            grid = 1 / max(fs) if fs else None
        self.grid = grid
        if random_windows_per_epoch is not None:
            if not self.intervals:
                raise ValueError("random_windows_per_epoch needs `intervals` to draw from")
            self.resample(seed)
        else:
            self.windows = list(windows)
        if not self.windows:
            raise ValueError("ForecastDataset: no windows")

    def resample(self, seed: int) -> None:
        """Redraw the random windows (continuous training); no-op for fixed windows."""
        if self.random_windows_per_epoch is None:
            return
        names = [r.source for r in self.recordings]
        rng = np.random.default_rng(seed)
        n_anchored = round(self.anchor_fraction * self.random_windows_per_epoch)
        self.windows = random_windows(
            self.intervals,
            self.spec,
            self.random_windows_per_epoch - n_anchored,
            rng,
            grid=self.grid,
            names=names,
        ) + self._jittered_anchors(n_anchored, rng)

    def _jittered_anchors(self, n: int, rng: np.random.Generator) -> list[Window]:
        """`n` anchor windows drawn with replacement, onsets shifted within +-anchor_jitter_s and
        kept inside the recorded interval that holds the anchor's own window."""
        if n == 0:
            return []
        pick = rng.integers(0, len(self.anchors), n)
        shift = rng.uniform(-self.anchor_jitter_s, self.anchor_jitter_s, n)
        if self.grid:  # toward zero: |shift| stays within the jitter that the anchors were checked with
            shift = np.trunc(shift / self.grid) * self.grid
        out = []
        for i, dt in zip(pick, shift):
            w = self.anchors[i]
            rec = self.recordings[w.rec]
            d0, d1 = rec.span_of(w.onset - self.spec.context_s, w.onset + self.spec.horizon_s) or rec.domain
            onset = min(max(w.onset + dt, d0 + self.spec.context_s), d1 - self.spec.horizon_s)
            out.append(Window(w.rec, float(onset), w.condition))
        return out

    def session_units(self, rec_index: int) -> np.ndarray:
        """(N,) vocabulary index of each unit of recording `rec_index`, in the order items use."""
        return self._cache[rec_index].units

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: list[int]) -> list[dict]:
        """The items at `indices` (what a DataLoader asks for): a factor prior infers the latents
        of all their windows as one batch."""
        items = [self._item(self.windows[i]) for i in indices]
        if self.prior is not None:
            for it, counts in zip(items, self._prior_counts([self.windows[i] for i in indices], items)):
                it["prior_counts"] = counts
        return items

    def _item(self, w: Window) -> dict:
        c = self._cache[w.rec]
        spec = self.spec
        edges = w.onset + self._edge_steps  # (Tc + T + 1,), edges[Tc] == onset exactly
        counts = bin_spikes_at_edges(c.times, c.local_units, c.n_units, edges)
        lo, hi = np.searchsorted(c.times, edges[[0, spec.context_bins]], side="left")
        if c.rates is not None:
            expected = c.expected(edges).astype(np.float32)
        else:
            expected = np.full(counts.shape, np.nan, dtype=np.float32)
        tc = spec.context_bins
        # events at the onset itself have happened (e.g. a go cue at the forecast start)
        e0, e1 = np.searchsorted(c.event_times, [edges[0] - 1e-9, w.onset + 1e-9])
        return {
            "event_times": (c.event_times[e0:e1] - w.onset).astype(np.float32),
            "event_types": c.event_types[e0:e1],
            "spike_times": (c.times[lo:hi] - w.onset).astype(np.float32),
            "spike_units": c.spike_vocab[lo:hi],
            "context_counts": counts[:tc].astype(np.float32),
            "target_counts": counts[tc:].astype(np.float32),
            "units": c.units,
            "true_expected": expected[tc:],
            "context_true_expected": expected[:tc],
            "condition": w.condition,
            "session": w.rec,
            "start": w.onset,
        }

    def _prior_counts(self, windows: list[Window], items: list[dict]) -> list[np.ndarray]:
        """(T, N) per window: the prior's expected counts of its future bins (a factor prior also
        reads the context, and infers every window's latents in one batch)."""
        requests, tc = [], self.spec.context_bins
        for w, it in zip(windows, items):
            edges = w.onset + self._edge_steps
            context = ({"context_starts": edges[:tc], "context_counts": it["context_counts"].astype(np.float64)}
                       if getattr(self.prior, "uses_context", False) else {})
            requests.append(dict(rec=self.recordings[w.rec], units=self._cache[w.rec].units, starts=edges[tc:-1],
                                 conditions=self._prior_conditions[w.rec], rec_index=w.rec, **context))
        batch = getattr(self.prior, "expected_batch", None)
        out = batch(requests) if batch else [self.prior.expected(**r) for r in requests]
        return [v.astype(np.float32) for v in out]


def fetch(dataset, indices) -> list[dict]:
    """The items of `dataset` at `indices`, in one call where it has `__getitems__` (a
    ForecastDataset then infers a factor prior's latents for all of them at once)."""
    indices = [int(i) for i in indices]
    many = getattr(dataset, "__getitems__", None)
    return many(indices) if many else [dataset[i] for i in indices]


def collate(items: list[dict]) -> dict[str, torch.Tensor]:
    """Stack items, padding spikes S, units N and events E per batch (pad index/type 0, masks False)."""
    B = len(items)
    S = max(1, max(len(it["spike_times"]) for it in items))
    E = max(1, max(len(it.get("event_times", ())) for it in items))
    N = max(len(it["units"]) for it in items)
    Tc = items[0]["context_counts"].shape[0]
    T = items[0]["target_counts"].shape[0]
    spike_times = np.zeros((B, S), np.float32)
    spike_units = np.zeros((B, S), np.int64)
    spike_mask = np.zeros((B, S), bool)
    ctx = np.zeros((B, Tc, N), np.float32)
    tgt = np.zeros((B, T, N), np.float32)
    units = np.zeros((B, N), np.int64)
    unit_mask = np.zeros((B, N), bool)
    true_exp = np.full((B, T, N), np.nan, np.float32)
    ctx_exp = np.full((B, Tc, N), np.nan, np.float32)
    event_times = np.zeros((B, E), np.float32)
    event_types = np.zeros((B, E), np.int64)  # 0 = padding
    for b, it in enumerate(items):
        e = len(it.get("event_times", ()))
        if e:
            event_times[b, :e] = it["event_times"]
            event_types[b, :e] = it["event_types"]
        s, n = len(it["spike_times"]), len(it["units"])
        spike_times[b, :s] = it["spike_times"]
        spike_units[b, :s] = it["spike_units"]
        spike_mask[b, :s] = True
        ctx[b, :, :n] = it["context_counts"]
        tgt[b, :, :n] = it["target_counts"]
        units[b, :n] = it["units"]
        unit_mask[b, :n] = True
        true_exp[b, :, :n] = it["true_expected"]
        ctx_exp[b, :, :n] = it["context_true_expected"]
    if "prior_counts" in items[0]:  # padding units get 1 (log 0): finite, and masked anyway
        prior = np.ones((B, T, N), np.float32)
        for b, it in enumerate(items):
            prior[b, :, : len(it["units"])] = it["prior_counts"]
        extra = {"prior_counts": prior}
    else:
        extra = {}
    out = dict(
        **extra,
        event_times=event_times,
        event_types=event_types,
        spike_times=spike_times,
        spike_units=spike_units,
        spike_mask=spike_mask,
        context_counts=ctx,
        target_counts=tgt,
        units=units,
        unit_mask=unit_mask,
        true_expected=true_exp,
        context_true_expected=ctx_exp,
        condition=np.array([it["condition"] for it in items], np.int64),
        session=np.array([it["session"] for it in items], np.int64),
        start=np.array([it["start"] for it in items], np.float64),
    )
    return {k: torch.from_numpy(v) for k, v in out.items()}
