"""Read an NWB file (through pynwb) into a Recording.

What is imported:
    units        `spike_times` of every unit, merged and sorted globally. Unit labels are the
                 units table's `unit_name`/`name` column when present, else its `id` column.
                 A unit whose own times are NaN, negative or unsorted is an error naming it.
    trials       start/stop, an optional condition column and every `*_time` column as an event.
    epochs       Interval field `epochs` with a `tags` label per epoch (tags joined by ",").
    behaviour    every TimeSeries in `acquisition` and in processing modules (also inside
                 containers such as Position/CompassDirection), stored as an
                 IrregularTimeSeries with `values` (T, D), named `<container>_<series>`.
                 Raw voltage (ElectricalSeries) and image series are skipped.
The domain spans spikes, trials and epochs.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
from torch_brain.data import Interval

from neurohorizon.data.recording import Recording, RecordingError, Trials

RESERVED = {"session", "domain", "spikes", "units", "trials", "epochs", "true_rate"}
UNIT_NAME_COLUMNS = ("unit_name", "name")


def read_nwb(
    path: str | Path, *, session_id: str | None = None, condition_column: str | None = None
) -> Recording:
    """Import `path` (NWB 2.x). `session_id` defaults to the file's session_id or stem.

    `condition_column` names the trials column holding condition labels (default:
    `condition` when that column exists).
    """
    from pynwb import NWBHDF5IO

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such NWB file")
    try:
        nwb_io = NWBHDF5IO(str(path), "r", load_namespaces=True)
        nwbfile = nwb_io.read()
    except Exception as e:
        raise RecordingError(f"{path}: cannot read NWB file ({type(e).__name__}: {e})") from e
    try:
        return _convert(nwbfile, path, session_id, condition_column)
    except RecordingError:
        raise
    except Exception as e:  # damaged datasets surface only when read
        raise RecordingError(f"{path}: cannot read NWB content ({type(e).__name__}: {e})") from e
    finally:
        nwb_io.close()


def _convert(nwbfile, path: Path, session_id, condition_column) -> Recording:
    source = str(path)
    session_id = session_id or nwbfile.session_id or path.stem
    times, spike_units, labels = _read_units(nwbfile, source)
    trials = _read_trials(nwbfile, source, condition_column)
    epochs = _read_epochs(nwbfile)
    behavior = _read_behavior(nwbfile)

    lo = [times[:1], [] if trials is None else trials.start, [] if epochs is None else epochs.start]
    hi = [times[-1:], [] if trials is None else trials.end, [] if epochs is None else epochs.end]
    lo, hi = np.concatenate(lo), np.concatenate(hi)
    if len(lo) == 0:
        raise RecordingError(f"{source}: no spikes, trials or epochs: cannot infer the domain")
    domain = (float(lo.min()), float(np.nextafter(hi.max(), np.inf)))
    rec = Recording.from_arrays(
        session_id=session_id,
        spike_times=times,
        unit_ids=labels,
        spike_units=spike_units,
        domain=domain,
        trials=trials,
        behavior=behavior,
        source=source,
    )
    if epochs is not None:
        rec.data.epochs = epochs
    return rec


def _read_units(nwbfile, source: str):
    """-> (S,) sorted times, (S,) unit index, (N,) labels; checks each unit's own times."""
    units = nwbfile.units
    if units is None or "spike_times" not in units.colnames:
        raise RecordingError(f"{source}: NWB file has no units table with spike_times")
    flat = np.asarray(units.spike_times.data[:], dtype=np.float64)
    ends = np.asarray(units.spike_times_index.data[:], dtype=np.int64)
    labels = np.asarray(units.id.data[:]).astype(str)
    for col in UNIT_NAME_COLUMNS:
        if col in units.colnames:
            labels = np.asarray(units[col].data[:]).astype(str)
            break
    per_unit = np.split(flat, ends[:-1]) if len(ends) else []
    for label, t in zip(labels, per_unit):
        if not np.isfinite(t).all():
            raise RecordingError(f"{source}: unit {label}: spike times contain NaN/inf")
        if len(t) and t.min() < 0:
            raise RecordingError(f"{source}: unit {label}: negative spike time {t.min():.6f} s")
        if (np.diff(t) < 0).any():
            raise RecordingError(f"{source}: unit {label}: spike times are not sorted")
    if "obs_intervals" in units.colnames:
        _warn_partial_observation(units, labels, source)
    index = np.repeat(np.arange(len(per_unit)), [len(t) for t in per_unit])
    order = np.argsort(flat, kind="stable")
    return flat[order], index[order], labels


def _warn_partial_observation(units, labels, source: str) -> None:
    """Units observed over less time than others (NWB obs_intervals, common in chronic recordings):
    NeuroHorizon has one recorded time for all units, so their unobserved time counts as silence."""
    spans = [np.asarray(units["obs_intervals"][i], dtype=float).reshape(-1, 2) for i in range(len(labels))]
    covered = np.array([np.sum(np.clip(s[:, 1] - s[:, 0], 0, None)) for s in spans])
    if not len(covered) or covered.max() <= 0:
        return
    short = np.flatnonzero(covered < 0.99 * covered.max())
    if len(short):
        warnings.warn(f"{source}: {len(short)} unit(s) (e.g. {labels[short[0]]}: {covered[short[0]]:.1f} s) were "
                      f"observed for less time than others ({covered.max():.1f} s) by their obs_intervals; "
                      "NeuroHorizon counts a unit's unobserved time as silence, which biases its rates down "
                      "(split the file at those times, or leave those units out)", stacklevel=3)


def _column(table, name: str) -> np.ndarray:
    return np.asarray(table[name].data[:])


def _read_trials(nwbfile, source: str, condition_column: str | None) -> Trials | None:
    table = nwbfile.trials
    if table is None:
        if condition_column is not None:
            raise RecordingError(f"{source}: no trials table for condition_column")
        return None
    cols = set(table.colnames)
    if condition_column is None and "condition" in cols:
        condition_column = "condition"
    if condition_column is not None and condition_column not in cols:
        raise RecordingError(
            f"{source}: trials have no column {condition_column!r} (columns: {sorted(cols)})"
        )
    condition = None if condition_column is None else _column(table, condition_column).astype(str)
    events = {
        c[: -len("_time")]: _column(table, c).astype(np.float64)
        for c in table.colnames
        if c.endswith("_time") and c not in ("start_time", "stop_time")
    }
    start, stop = _column(table, "start_time"), _column(table, "stop_time")
    return Trials(
        start=start.astype(np.float64),
        end=stop.astype(np.float64),
        condition=condition,
        events=events,
    )


def _read_epochs(nwbfile) -> Interval | None:
    table = nwbfile.epochs
    if table is None or len(table) == 0:
        return None
    start = _column(table, "start_time").astype(np.float64)
    end = _column(table, "stop_time").astype(np.float64)
    if "tags" in table.colnames:
        tags = np.array([",".join(map(str, t)) for t in table["tags"][:]])
    else:
        tags = np.array([""] * len(start))
    order = np.argsort(start, kind="stable")
    return Interval(start=start[order], end=end[order], tags=tags[order])


def _read_behavior(nwbfile) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every usable TimeSeries in acquisition and processing modules, by sanitized name."""
    found = {}
    groups = [nwbfile.acquisition] + [m.data_interfaces for m in nwbfile.processing.values()]
    for group in groups:
        for name, obj in group.items():
            for series_name, series in _time_series(name, obj):
                key = re.sub(r"\W", "_", series_name)
                key = f"behavior_{key}" if key in RESERVED or key[0].isdigit() else key
                arrays = _series_arrays(series)
                if arrays is not None and key not in found:
                    found[key] = arrays
    return found


def _time_series(name: str, obj):
    """Yield (name, TimeSeries) for a TimeSeries or for each series in a container."""
    from pynwb import TimeSeries
    from pynwb.ecephys import ElectricalSeries
    from pynwb.image import ImageSeries

    skip = (ElectricalSeries, ImageSeries)
    if isinstance(obj, TimeSeries):
        if not isinstance(obj, skip):
            yield name, obj
        return
    children = getattr(obj, "children", [])
    for child in children:
        if isinstance(child, TimeSeries) and not isinstance(child, skip):
            yield f"{name}_{child.name}", child


def _series_arrays(series) -> tuple[np.ndarray, np.ndarray] | None:
    values = np.asarray(series.data[:])
    if values.dtype.kind not in "biuf" or len(values) == 0:
        return None
    if series.timestamps is not None:
        ts = np.asarray(series.timestamps[:], dtype=np.float64)
    else:
        ts = series.starting_time + np.arange(len(values)) / series.rate
    values = values.reshape(len(values), -1)
    order = np.argsort(ts, kind="stable")  # behaviour only: a reorder is harmless
    return ts[order], values[order]
