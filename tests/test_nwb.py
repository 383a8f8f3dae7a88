import datetime
import shutil

import h5py
import numpy as np
import pytest

from neurohorizon.data.nwb import read_nwb
from neurohorizon.data.recording import RecordingError

pynwb = pytest.importorskip("pynwb")

ADN = "adn_peyrache2015/A2929-200711.nwb"


def write_nwb(path, units, *, trials=None, extra_trial_cols=(), series=None, epochs=()):
    """units: list of spike-time arrays; trials: list of dict rows."""
    nwb = pynwb.NWBFile(
        session_description="test",
        identifier="test-id",
        session_start_time=datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc),
    )
    for i, t in enumerate(units):
        nwb.add_unit(spike_times=np.asarray(t, dtype=float), id=10 + i)
    if trials:
        for name, desc in extra_trial_cols:
            nwb.add_trial_column(name=name, description=desc)
        for row in trials:
            nwb.add_trial(**row)
    for start, stop, tags in epochs:
        nwb.add_epoch(start_time=start, stop_time=stop, tags=tags)
    if series is not None:
        nwb.add_acquisition(series)
        module = nwb.create_processing_module("behavior", "behaviour")
        position = pynwb.behavior.Position(name="Position")
        position.create_spatial_series(
            name="hand",
            data=np.column_stack([series.timestamps[:], -series.timestamps[:]]),
            timestamps=series.timestamps[:],
            reference_frame="origin",
        )
        module.add(position)
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


def test_written_nwb_reads_back_exactly(tmp_path):
    rng = np.random.default_rng(0)
    units = [np.sort(rng.uniform(0, 5, n)) for n in (30, 0, 12)]
    trials = [
        dict(start_time=0.5, stop_time=1.5, go_cue_time=0.8, condition="left"),
        dict(start_time=2.0, stop_time=3.0, go_cue_time=2.4, condition="right"),
    ]
    ts = np.arange(0.0, 5.0, 0.1)
    series = pynwb.TimeSeries(name="speed", data=np.sin(ts), timestamps=ts, unit="m/s")
    path = write_nwb(
        tmp_path / "t.nwb",
        units,
        trials=trials,
        extra_trial_cols=[("go_cue_time", "cue"), ("condition", "cond")],
        series=series,
        epochs=[(0.0, 2.5, ["rest"]), (2.5, 5.0, ["run", "dark"])],
    )
    with pytest.warns(UserWarning, match="no spikes"):
        rec = read_nwb(path, session_id="sess")
    flat = np.concatenate(units)
    np.testing.assert_array_equal(rec.spike_times, np.sort(flat))
    assert list(rec.unit_ids) == ["sess/10", "sess/11", "sess/12"]
    # each spike keeps its unit: per-unit times are recovered exactly
    for i, t in enumerate(units):
        np.testing.assert_array_equal(rec.spike_times[rec.spike_units == i], t)
    tr = rec.trials
    np.testing.assert_array_equal(tr.start, [0.5, 2.0])
    np.testing.assert_array_equal(tr.end, [1.5, 3.0])
    assert list(tr.condition) == ["left", "right"]
    np.testing.assert_array_equal(tr.events["go_cue"], [0.8, 2.4])
    np.testing.assert_array_equal(rec.data.speed.timestamps, ts)
    np.testing.assert_array_equal(rec.data.speed.values[:, 0], np.sin(ts).astype(np.float32))
    # behaviour values are stored as float32 by Recording.from_arrays
    expected = np.column_stack([ts, -ts]).astype(np.float32)
    np.testing.assert_array_equal(rec.data.Position_hand.values, expected)
    assert list(rec.data.epochs.tags) == ["rest", "run,dark"]
    assert rec.domain[0] == 0.0 and rec.domain[1] == pytest.approx(5.0)


def test_condition_column_argument(tmp_path):
    trials = [
        dict(start_time=0.0, stop_time=1.0, target=3),
        dict(start_time=1.0, stop_time=2.0, target=5),
    ]
    path = write_nwb(
        tmp_path / "c.nwb", [[0.1, 0.5, 1.5]], trials=trials, extra_trial_cols=[("target", "t")]
    )
    assert read_nwb(path).trials.condition is None
    assert list(read_nwb(path, condition_column="target").trials.condition) == ["3", "5"]
    with pytest.raises(RecordingError, match=r"c\.nwb.*no column 'colour'"):
        read_nwb(path, condition_column="colour")


@pytest.mark.parametrize(
    "bad, problem",
    [([0.1, np.nan, 0.3], "NaN"), ([0.3, 0.1, 0.2], "not sorted"), ([-0.5, 0.1], "negative")],
)
def test_bad_unit_spike_times_name_file_and_unit(tmp_path, bad, problem):
    path = write_nwb(tmp_path / "bad.nwb", [[0.1, 0.2], bad])
    with pytest.raises(RecordingError, match=rf"bad\.nwb: unit 11: .*{problem}"):
        read_nwb(path)


def test_missing_and_corrupt_nwb(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.nwb"):
        read_nwb(tmp_path / "absent.nwb")
    path = write_nwb(tmp_path / "ok.nwb", [np.linspace(0.1, 4, 2000)])
    cut = tmp_path / "cut.nwb"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(RecordingError, match=r"cut\.nwb"):
        read_nwb(cut)
    junk = tmp_path / "junk.nwb"
    junk.write_bytes(b"not an nwb file at all" * 100)
    with pytest.raises(RecordingError, match=r"junk\.nwb: cannot read NWB file"):
        read_nwb(junk)


@pytest.mark.realdata
def test_adn_peyrache_against_h5py(shared_data, tmp_path):
    path = shared_data / ADN
    if not path.exists():
        pytest.skip(f"{path} not found")
    rec = read_nwb(path)
    with h5py.File(path, "r") as f:
        flat = f["units/spike_times"][:]
        ends = f["units/spike_times_index"][:]
        ids = f["units/id"][:]
        ep_start, ep_stop = f["intervals/epochs/start_time"][:], f["intervals/epochs/stop_time"][:]
        pos_x = f["acquisition/Position/x/data"][:]
        pos_t = f["acquisition/Position/x/timestamps"][:]
        hd = f["acquisition/CompassDirection/ry/data"][:]
    assert rec.session_id == "A2929-200711"
    assert rec.n_units == len(ids) == 15
    assert list(rec.unit_ids) == [f"A2929-200711/{i}" for i in ids]
    assert len(rec.spike_times) == len(flat)
    np.testing.assert_array_equal(
        np.bincount(rec.spike_units, minlength=15), np.diff(ends, prepend=0)
    )
    np.testing.assert_array_equal(rec.spike_times, np.sort(flat))
    np.testing.assert_array_equal(rec.data.epochs.start, ep_start)
    np.testing.assert_array_equal(rec.data.epochs.end, ep_stop)
    assert list(rec.data.epochs.tags) == ["sleep", "wake"]
    assert rec.domain[0] == 0.0 and rec.domain[1] == pytest.approx(1200.0)
    np.testing.assert_array_equal(rec.data.Position_x.timestamps, pos_t)
    np.testing.assert_array_equal(rec.data.Position_x.values[:, 0], pos_x.astype(np.float32))
    np.testing.assert_array_equal(rec.data.CompassDirection_ry.values[:, 0], hd.astype(np.float32))
    assert rec.trials is None
    # a truncated copy of the real file fails with a message naming the copy
    cut = tmp_path / "A2929-cut.nwb"
    with open(path, "rb") as src, open(cut, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    cut.write_bytes(cut.read_bytes()[:3_000_000])
    with pytest.raises(RecordingError, match=r"A2929-cut\.nwb"):
        read_nwb(cut)


def test_inspect_of_a_silent_unit_and_trials_without_conditions_prints_no_library_warnings(tmp_path, capsys):
    """A unit without spikes and trials without a condition column are common in NWB files: the
    report says so in its own words, with no numpy or matplotlib warnings on the console."""
    from neurohorizon.cli import main

    rng = np.random.default_rng(0)
    units = [np.sort(rng.uniform(0, 60, 600)) for _ in range(4)] + [np.array([])]
    trials = [{"start_time": s, "stop_time": s + 2.5, "go_cue_time": s + 1.5} for s in np.arange(1, 56, 3.0)]
    path = write_nwb(tmp_path / "s.nwb", units, trials=trials, extra_trial_cols=[("go_cue_time", "go")])
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["--runs-dir", str(tmp_path / "runs"), "inspect", str(path)]) == 0
    said = [str(w.message) for w in caught]
    assert not [m for m in said if "Mean of empty slice" in m or "No artists" in m], said


def test_units_observed_for_less_time_are_flagged(tmp_path):
    """obs_intervals say when each unit was observed; NeuroHorizon has one recorded time for all
    units, so a unit observed for half of it would read as silent for the rest: a warning says so."""
    nwb = pynwb.NWBFile(session_description="t", identifier="obs",
                        session_start_time=datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc))
    rng = np.random.default_rng(1)
    for i, end in enumerate((200.0, 200.0, 100.0)):
        nwb.add_unit(spike_times=np.sort(rng.uniform(0, end, 50)), obs_intervals=[[0.0, end]], id=i)
    with pynwb.NWBHDF5IO(str(tmp_path / "obs.nwb"), "w") as io:
        io.write(nwb)
    with pytest.warns(UserWarning, match=r"obs.nwb: 1 unit\(s\) \(e.g. 2: 100.0 s\) were observed for less time "
                                         r"than others \(200.0 s\)"):
        rec = read_nwb(tmp_path / "obs.nwb")
    assert rec.n_units == 3
