"""Bad input to Recording.from_arrays and to loading: clear errors naming source and problem."""

import h5py
import numpy as np
import pytest
from torch_brain.data import ArrayDict, Data, Interval, IrregularTimeSeries, SessionDescription

from neurohorizon.data.io import load_recording
from neurohorizon.data.recording import Recording, RecordingError, Trials

SRC = "my_source.mat"


def build(**kw):
    args = dict(
        session_id="s",
        spike_times=np.array([0.1, 0.2, 0.3]),
        unit_ids=np.array(["a", "b"]),
        spike_units=np.array([0, 1, 0]),
        source=SRC,
    )
    args.update(kw)
    return Recording.from_arrays(**args)


def test_valid_build_and_defaults():
    rec = build()
    assert list(rec.unit_ids) == ["s/a", "s/b"]
    assert rec.domain[0] == 0.1 and rec.domain[1] > 0.3
    assert rec.trials is None and not rec.has_true_rate


@pytest.mark.parametrize(
    "times, problem",
    [
        ([0.1, np.nan, 0.3], "1 spike time\\(s\\) are NaN or infinite"),
        ([0.1, np.inf, 0.3], "NaN or infinite"),
        ([-0.1, 0.2, 0.3], "negative spike time -0.100000"),
        ([0.1, 0.3, 0.2], "not sorted ascending"),
    ],
)
def test_bad_spike_times(times, problem):
    with pytest.raises(RecordingError, match=rf"^{SRC}: .*{problem}"):
        build(spike_times=np.array(times))


def test_duplicate_unit_ids():
    with pytest.raises(RecordingError, match=rf"{SRC}: duplicate unit ids: \['s/a'\]"):
        build(unit_ids=np.array(["a", "a"]))


def test_silent_unit_kept_with_warning():
    with pytest.warns(UserWarning, match=rf"{SRC}: 1 unit\(s\) have no spikes.*'s/c'"):
        rec = build(unit_ids=np.array(["a", "b", "c"]))
    assert rec.n_units == 3


@pytest.mark.parametrize(
    "kw, problem",
    [
        (dict(spike_units=np.array([0, 1])), "2 unit indices for 3 spikes"),
        (dict(spike_units=None, unit_ids=np.array(["a", "b"])), "2 unit labels for 3 spikes"),
        (dict(spike_units=np.array([0, 2, 0])), "out of range"),
        (
            dict(trials=Trials(start=np.array([0.1, 0.2]), end=np.array([0.3]))),
            r"trial start \(2\) and end \(1\) differ",
        ),
        (
            dict(trials=Trials(np.array([0.1]), np.array([0.3]), condition=np.array(["x", "y"]))),
            "trial field 'condition' has 2 entries for 1 trials",
        ),
        (
            dict(trials=Trials(np.array([0.1]), np.array([0.3]), events={"go": np.array([1, 2])})),
            "trial field 'go_time' has 2 entries",
        ),
        (
            dict(behavior={"hand": (np.arange(3.0), np.zeros((4, 2)))}),
            "behaviour 'hand': 3 timestamps for 4 values",
        ),
    ],
)
def test_mismatched_lengths(kw, problem):
    with pytest.raises(RecordingError, match=rf"{SRC}: .*{problem}"):
        build(**kw)


def test_trials_outside_domain_and_empty_trials():
    outside = Trials(start=np.array([0.1]), end=np.array([5.0]))
    with pytest.raises(RecordingError, match=rf"{SRC}: trials outside the domain"):
        build(trials=outside, domain=(0.0, 1.0))
    backwards = Trials(start=np.array([0.3]), end=np.array([0.2]))
    with pytest.raises(RecordingError, match=rf"{SRC}: trial with end <= start"):
        build(trials=backwards, domain=(0.0, 1.0))
    with pytest.raises(RecordingError, match=rf"{SRC}: trial start/end times must be finite"):
        build(trials=Trials(np.array([np.nan]), np.array([0.2])))


def test_spikes_outside_explicit_domain_and_empty_domain():
    with pytest.raises(RecordingError, match=rf"{SRC}: spikes outside the domain"):
        build(domain=(0.15, 1.0))
    with pytest.raises(RecordingError, match=rf"{SRC}: empty time domain"):
        build(domain=(1.0, 1.0), spike_times=np.array([]), spike_units=np.array([], int))


def test_unit_namespace_and_interval_domain():
    rec = build(
        unit_namespace="prep7", domain=Interval(np.array([0.0, 0.25]), np.array([0.2, 0.4]))
    )
    assert list(rec.unit_ids) == ["prep7/a", "prep7/b"]
    assert rec.domain == (0.0, 0.4) and len(rec.data.domain) == 2


def _raw_file(path, times, unit_ids):
    """Bypass Recording's checks: write a Data object, then edit the timestamps in place."""
    domain = Interval(np.array([-5.0]), np.array([10.0]))
    n = len(times)
    data = Data(
        session=SessionDescription(id="raw"),
        spikes=IrregularTimeSeries(
            timestamps=np.arange(n) * 0.1, unit_index=np.zeros(n, int), domain=domain
        ),
        units=ArrayDict(id=np.asarray(unit_ids)),
        domain=domain,
    )
    with h5py.File(path, "w") as f:
        data.to_hdf5(f)
    with h5py.File(path, "r+") as f:
        f["spikes/timestamps"][...] = np.asarray(times, float)
    return path


@pytest.mark.parametrize(
    "times, units, problem",
    [
        ([0.1, np.nan], ["u"], "NaN"),
        ([0.3, 0.2], ["u"], "not sorted"),
        ([-1.0, 0.2], ["u"], "negative spike time"),
        ([0.1, 0.2], ["u", "u"], "duplicate unit ids"),
    ],
)
def test_loading_bad_file_names_path_and_problem(tmp_path, times, units, problem):
    path = _raw_file(tmp_path / "raw.h5", times, units)
    with pytest.raises(RecordingError, match=rf"raw\.h5: .*{problem}"):
        load_recording(path)
