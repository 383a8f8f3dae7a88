"""A recording: one session's spikes, units, domain, trials and behaviour.

The storage is torch_brain's data format (`torch_brain.data.Data` with
`IrregularTimeSeries` spikes, an `ArrayDict` of units and `Interval` trials), laid
out as brainsets' pipelines write it, so that files from `brainsets prepare` load
here and files written here load in torch_brain:

    data.session.id             str
    data.domain                 Interval   valid time domain (s)
    data.spikes                 IrregularTimeSeries(timestamps, unit_index)
    data.units                  ArrayDict(id: "session/unit" str)
    data.trials                 Interval(start, end, condition, <event>_time ...)   optional
    data.<name>                 IrregularTimeSeries / RegularTimeSeries behaviour  optional
    data.true_rate              RegularTimeSeries(rates (T, N) Hz), synthetic only

`Recording` is a thin, validated view over such a `Data` object.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch_brain.data import (
    ArrayDict,
    Data,
    Interval,
    IrregularTimeSeries,
    RegularTimeSeries,
    SessionDescription,
)


class RecordingError(ValueError):
    """Bad recording input. The message names the source and the problem."""


@dataclass
class Trials:
    """Trial table. Times in seconds; `events` maps an event name to one time per trial."""

    start: np.ndarray
    end: np.ndarray
    condition: np.ndarray | None = None  # (n_trials,) str labels
    events: dict[str, np.ndarray] | None = None


def _fail(source: str, problem: str):
    raise RecordingError(f"{source}: {problem}")


class Recording:
    """A validated view over a torch_brain `Data` recording.

    Args:
        data: A `Data` object laid out as described in this module's docstring.
        source: Where it came from (file path or description), used in error messages.
    """

    def __init__(self, data: Data, *, source: str = "<memory>"):
        self.data = data
        self.source = source
        self._validate()

    # ------------------------------------------------------------------ build
    @classmethod
    def from_arrays(
        cls,
        *,
        session_id: str,
        spike_times: np.ndarray,
        unit_ids: np.ndarray,
        spike_units: np.ndarray | None = None,
        domain: tuple[float, float] | Interval | None = None,
        trials: Trials | None = None,
        behavior: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
        true_rate: tuple[np.ndarray, float, float] | None = None,
        source: str = "<arrays>",
        unit_namespace: str | None = None,
    ) -> Recording:
        """Build a recording from plain arrays.

        Args:
            session_id: Session identifier; unit ids become `session_id/unit`.
            spike_times: (S,) spike times in seconds, sorted ascending.
            unit_ids: If `spike_units` is None, (S,) unit label per spike; otherwise
                (N,) unit labels and `spike_units` holds (S,) indices into it.
            spike_units: (S,) int index of each spike's unit in `unit_ids`, or None.
            domain: (start, end) of the valid recording time in seconds. Defaults to
                the span of spikes and trials. An `Interval` gives a domain of several
                disjoint pieces (e.g. trials concatenated with gaps between them).
            trials: Optional trial table.
            behavior: name -> (timestamps (T,), values (T, D)) behavioural series.
            true_rate: (rates (T, N) in Hz, sampling_rate Hz, t0 s) ground truth.
            source: Description used in error messages.
            unit_namespace: Prefix of the global unit ids (default `session_id`). Sessions
                that record the same neurons (e.g. runs of one preparation) share a namespace
                so their units get the same global ids. "" keeps `unit_ids` as given (already
                global, e.g. a subset of another recording's units).
        """
        spike_times, unit_ids, spike_units = _spike_arrays(spike_times, unit_ids, spike_units, source)
        namespace = session_id if unit_namespace is None else unit_namespace
        global_ids = np.array([_global_unit_id(namespace, u) for u in unit_ids])
        trials_interval = None if trials is None else _trials_interval(trials, source)
        domain = _domain(domain, spike_times, trials, source)
        fields = dict(
            session=_session(session_id),
            domain=domain,
            spikes=IrregularTimeSeries(timestamps=spike_times, unit_index=spike_units.astype(np.int64), domain=domain),
            units=ArrayDict(id=global_ids),
        )
        if trials_interval is not None:
            fields["trials"] = trials_interval
        fields.update(_series_fields(behavior, true_rate, source))
        return cls(Data(**fields), source=source)

    # ------------------------------------------------------------- file i/o
    def save(self, path: str | Path) -> Path:
        """Write the temporaldata/brainsets HDF5 layout atomically (tmp file + rename)."""
        from neurohorizon.data.io import save_recording

        return save_recording(self, path)

    @classmethod
    def load(cls, path: str | Path) -> Recording:
        """Load a file written by `save` or by `brainsets prepare`."""
        from neurohorizon.data.io import load_recording

        return load_recording(path)

    # ------------------------------------------------------------ accessors
    @property
    def session_id(self) -> str:
        return str(self.data.session.id)

    @property
    def spike_times(self) -> np.ndarray:
        """(S,) float64 spike times in seconds, sorted."""
        return np.asarray(self.data.spikes.timestamps, dtype=np.float64)

    @property
    def spike_units(self) -> np.ndarray:
        """(S,) int64 index of each spike's unit in `unit_ids`."""
        return np.asarray(self.data.spikes.unit_index, dtype=np.int64)

    @property
    def unit_ids(self) -> np.ndarray:
        """(N,) globally unique unit ids, `session/unit`."""
        return np.asarray(self.data.units.id).astype(str)

    @property
    def n_units(self) -> int:
        return len(self.data.units.id)

    @property
    def domain(self) -> tuple[float, float]:
        """(start, end) of the valid time, spanning all domain intervals."""
        d = self.data.domain
        return float(np.min(d.start)), float(np.max(d.end))

    @property
    def recorded_spans(self) -> np.ndarray:
        """(K, 2) the recorded intervals: one for a continuous recording, e.g. each trial's for pmd."""
        d = self.data.domain
        return np.stack([np.atleast_1d(d.start), np.atleast_1d(d.end)], 1).astype(float)

    def span_of(self, t0: float, t1: float) -> tuple[float, float] | None:
        """The recorded interval that holds all of [t0, t1], or None when it crosses unrecorded time."""
        spans = self.recorded_spans
        inside = (spans[:, 0] <= t0 + 1e-9) & (t1 <= spans[:, 1] + 1e-9)
        return tuple(map(float, spans[np.argmax(inside)])) if inside.any() else None

    @property
    def duration(self) -> float:
        start, end = self.domain
        return end - start

    @property
    def trials(self) -> Trials | None:
        if "trials" not in self.data:
            return None
        tr = self.data.trials
        keys = tr.keys()
        cond = np.asarray(tr.condition).astype(str) if "condition" in keys else None
        events = {
            k[: -len("_time")]: np.asarray(getattr(tr, k)) for k in keys if k.endswith("_time")
        }
        return Trials(np.asarray(tr.start), np.asarray(tr.end), cond, events)

    @property
    def has_true_rate(self) -> bool:
        return "true_rate" in self.data

    def __repr__(self) -> str:
        t = self.trials
        return (
            f"Recording({self.session_id!r}, units={self.n_units}, spikes={len(self.spike_times)}, "
            f"domain={self.domain[0]:.3f}-{self.domain[1]:.3f}s, trials={0 if t is None else len(t.start)})"
        )

    # ----------------------------------------------------------- validation
    def _validate(self) -> None:
        src = self.source
        if self.data.domain is None:
            _fail(src, "missing 'domain' (not a NeuroHorizon/brainsets recording)")
        for key in ("spikes", "units", "session"):
            if key not in self.data:
                _fail(src, f"missing '{key}' (not a NeuroHorizon/brainsets recording)")
        _check_spike_times(self.spike_times, src)
        ids = self.unit_ids
        uniq, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            _fail(src, f"duplicate unit ids: {uniq[counts > 1][:5].tolist()}")
        units = self.spike_units
        if len(units) and (units.min() < 0 or units.max() >= len(ids)):
            _fail(src, "spike unit_index out of range of units")
        start, end = self.domain
        if not end > start:
            _fail(src, f"empty time domain [{start}, {end}]")
        times = self.spike_times
        if len(times) and (times[0] < start or times[-1] > end):
            _fail(src, f"spikes outside the domain [{start:.3f}, {end:.3f}] s")
        silent = np.setdiff1d(np.arange(len(ids)), units)
        if len(silent):
            warnings.warn(
                f"{src}: {len(silent)} unit(s) have no spikes and are kept: "
                f"{ids[silent][:5].tolist()}",
                stacklevel=3,
            )
        trials = self.trials
        if trials is not None and len(trials.start):
            if (trials.start < start - 1e-9).any() or (trials.end > end + 1e-9).any():
                _fail(src, f"trials outside the domain [{start:.3f}, {end:.3f}] s")
            if (trials.end <= trials.start).any():
                _fail(src, "trial with end <= start")


def _check_spike_times(times: np.ndarray, source: str) -> None:
    if not np.isfinite(times).all():
        _fail(source, f"{int((~np.isfinite(times)).sum())} spike time(s) are NaN or infinite")
    if len(times) and times.min() < 0:
        _fail(source, f"negative spike time {times.min():.6f} s")
    if len(times) > 1 and (np.diff(times) < 0).any():
        _fail(source, "spike times are not sorted ascending")


def _spike_arrays(spike_times, unit_ids, spike_units, source: str):
    """Checked (S,) float64 times, (N,) str unit labels and (S,) unit indices; `unit_ids` may
    instead hold one label per spike (`spike_units` None)."""
    spike_times = np.asarray(spike_times, dtype=np.float64).ravel()
    if spike_units is None:
        labels = np.asarray(unit_ids).astype(str).ravel()
        if len(labels) != len(spike_times):
            _fail(source, f"{len(labels)} unit labels for {len(spike_times)} spikes")
        unit_ids, spike_units = np.unique(labels, return_inverse=True)
    unit_ids = np.asarray(unit_ids).astype(str).ravel()
    spike_units = np.asarray(spike_units).ravel()
    if len(spike_units) != len(spike_times):
        _fail(source, f"{len(spike_units)} unit indices for {len(spike_times)} spikes")
    _check_spike_times(spike_times, source)
    if len(spike_units) and (spike_units.min() < 0 or spike_units.max() >= len(unit_ids)):
        _fail(source, "spike unit index out of range of unit_ids")
    return spike_times, unit_ids, spike_units


def _domain(domain, spike_times, trials, source: str) -> Interval:
    """The given domain as an Interval, or the span of the spikes and trials."""
    if domain is None:
        lo = np.concatenate([spike_times[:1], trials.start if trials else []])
        hi = np.concatenate([spike_times[-1:], trials.end if trials else []])
        if len(lo) == 0:
            _fail(source, "no spikes and no trials: cannot infer the time domain")
        domain = (float(lo.min()), float(np.nextafter(hi.max(), np.inf)))
    if not isinstance(domain, Interval):
        domain = Interval(np.array([float(domain[0])]), np.array([float(domain[1])]))
    return domain


def _series_fields(behavior, true_rate, source: str) -> dict:
    """Behavioural series and the synthetic true rates, as temporaldata fields."""
    fields = {}
    for name, (ts, values) in (behavior or {}).items():
        values = np.asarray(values, dtype=np.float32)
        if len(values) != len(ts):
            _fail(source, f"behaviour {name!r}: {len(ts)} timestamps for {len(values)} values")
        fields[name] = IrregularTimeSeries(timestamps=np.asarray(ts, dtype=np.float64),
                                           values=values.reshape(len(values), -1), domain="auto")
    if true_rate is not None:
        rates, rate_hz, t0 = true_rate
        fields["true_rate"] = RegularTimeSeries(rates=np.asarray(rates, dtype=np.float32), sampling_rate=float(rate_hz),
                                                domain_start=float(t0), domain="auto")
    return fields


def _global_unit_id(session_id: str, unit: str) -> str:
    unit = str(unit)
    if not session_id:  # an empty namespace: the ids are global already
        return unit
    return unit if unit.startswith(f"{session_id}/") else f"{session_id}/{unit}"


def _session(session_id: str) -> SessionDescription:
    return SessionDescription(id=str(session_id))


def _trials_interval(trials: Trials, source: str) -> Interval:
    start = np.asarray(trials.start, dtype=np.float64)
    end = np.asarray(trials.end, dtype=np.float64)
    if len(start) != len(end):
        _fail(source, f"trial start ({len(start)}) and end ({len(end)}) differ in length")
    if not (np.isfinite(start).all() and np.isfinite(end).all()):
        _fail(source, "trial start/end times must be finite")
    fields = {}
    if trials.condition is not None:
        fields["condition"] = np.asarray(trials.condition).astype(str).ravel()
    for name, times in (trials.events or {}).items():
        fields[f"{name}_time"] = np.asarray(times, dtype=np.float64).ravel()
    for key, values in fields.items():
        if len(values) != len(start):
            _fail(source, f"trial field {key!r} has {len(values)} entries for {len(start)} trials")
    order = np.argsort(start, kind="stable")
    fields = {k: v[order] for k, v in fields.items()}
    return Interval(start=start[order], end=end[order], **fields)
