import datetime

import h5py
import numpy as np
import pytest
from torch_brain.data import (
    ArrayDict,
    BrainsetDescription,
    Data,
    DeviceDescription,
    Interval,
    IrregularTimeSeries,
    SessionDescription,
    SubjectDescription,
)

from neurohorizon.data import io
from neurohorizon.data.io import load_recording, save_recording
from neurohorizon.data.recording import Recording, RecordingError, Trials


def make_recording() -> Recording:
    rng = np.random.default_rng(0)
    times = np.sort(rng.uniform(0.0, 10.0, 500))
    units = rng.integers(0, 4, 500)
    trials = Trials(
        start=np.array([1.0, 4.0, 7.0]),
        end=np.array([3.0, 6.0, 9.5]),
        condition=np.array(["left", "right", "left"]),
        events={"go_cue": np.array([1.5, 4.5, 7.5]), "move": np.array([2.0, np.nan, 8.0])},
    )
    beh_t = np.arange(0.0, 10.0, 0.01)
    behavior = {"hand": (beh_t, np.stack([np.sin(beh_t), np.cos(beh_t)], 1))}
    rates = rng.uniform(1, 20, (500, 4)).astype(np.float32)
    return Recording.from_arrays(
        session_id="s1",
        spike_times=times,
        unit_ids=np.array(["a", "b", "c", "d"]),
        spike_units=units,
        domain=(0.0, 10.0),
        trials=trials,
        behavior=behavior,
        true_rate=(rates, 50.0, 0.0),
    )


def test_round_trip_exact(tmp_path):
    rec = make_recording()
    path = save_recording(rec, tmp_path / "r.h5")
    back = load_recording(path)
    assert back.session_id == "s1"
    assert back.source == str(path)
    with h5py.File(path, "a"):  # HDF5 refuses this while a read handle is still open
        pass
    np.testing.assert_array_equal(back.spike_times, rec.spike_times)
    np.testing.assert_array_equal(back.spike_units, rec.spike_units)
    assert list(back.unit_ids) == ["s1/a", "s1/b", "s1/c", "s1/d"]
    assert back.domain == rec.domain == (0.0, 10.0)
    t0, t1 = rec.trials, back.trials
    np.testing.assert_array_equal(t1.start, t0.start)
    np.testing.assert_array_equal(t1.end, t0.end)
    assert list(t1.condition) == ["left", "right", "left"]
    assert set(t1.events) == {"go_cue", "move"}
    np.testing.assert_array_equal(t1.events["move"], t0.events["move"])  # NaN preserved
    np.testing.assert_array_equal(back.data.hand.values, rec.data.hand.values)
    np.testing.assert_array_equal(back.data.hand.timestamps, rec.data.hand.timestamps)
    np.testing.assert_array_equal(back.data.true_rate.rates, rec.data.true_rate.rates)
    assert back.data.true_rate.sampling_rate == 50.0
    assert back.has_true_rate


def test_written_file_loads_in_plain_torch_brain(tmp_path):
    rec = make_recording()
    path = save_recording(rec, tmp_path / "r.h5")
    with h5py.File(path, "r") as f:
        data = Data.from_hdf5(f, lazy=False)
    assert str(data.session.id) == "s1"
    np.testing.assert_array_equal(data.spikes.timestamps, rec.spike_times)
    np.testing.assert_array_equal(data.spikes.unit_index, rec.spike_units)
    assert list(data.units.id.astype(str)) == list(rec.unit_ids)
    np.testing.assert_array_equal(data.trials.go_cue_time, rec.trials.events["go_cue"])


def make_brainsets_file(path):
    """A file laid out the way the perich_miller_population_2018 pipeline writes it."""
    rng = np.random.default_rng(1)
    n = 2000
    timestamps = rng.uniform(0.0, 20.0, n)
    unit_index = rng.integers(0, 3, n)
    spikes = IrregularTimeSeries(timestamps=timestamps, unit_index=unit_index, domain="auto")
    spikes.sort()
    units = ArrayDict(
        id=np.array(["group_A/elec1/unit_0", "group_A/elec2/unit_1", "group_B/elec9/unit_2"]),
        unit_number=np.arange(3),
        count=np.bincount(unit_index, minlength=3),
    )
    cursor_t = np.arange(0.0, 20.0, 0.01)
    cursor = IrregularTimeSeries(
        timestamps=cursor_t,
        pos=rng.normal(size=(len(cursor_t), 2)),
        vel=rng.normal(size=(len(cursor_t), 2)),
        acc=rng.normal(size=(len(cursor_t), 2)),
        domain="auto",
    )
    starts = np.arange(0.5, 19.0, 2.0)
    trials = Interval(
        start=starts,
        end=starts + 1.4,
        target_on_time=starts + 0.1,
        go_cue_time=starts + 0.6,
        result=np.array(["R"] * len(starts)),
        target_id=np.arange(len(starts)) % 8.0,
        is_valid=np.ones(len(starts), bool),
    )
    movement_phases = Data(
        hold_period=Interval(start=trials.target_on_time, end=trials.go_cue_time),
        reach_period=Interval(start=trials.go_cue_time, end=trials.end),
        domain="auto",
    )
    data = Data(
        brainset=BrainsetDescription(
            id="perich_miller_population_2018",
            origin_version="dandi/000688/draft",
            derived_version="1.0.0",
            source="https://dandiarchive.org/dandiset/000688",
            description="test",
        ),
        subject=SubjectDescription(id="c", species="MACACA_MULATTA", sex="M"),
        session=SessionDescription(
            id="c_20131003_center_out_reaching",
            recording_date=datetime.datetime(2013, 10, 3),
            task="REACHING",
        ),
        device=DeviceDescription(id="c_20131003", recording_tech="UTAH_ARRAY_SPIKES"),
        spikes=spikes,
        units=units,
        trials=trials,
        movement_phases=movement_phases,
        cursor=cursor,
        domain=cursor.domain,
    )
    data.train_domain = Interval(start=np.array([0.0]), end=np.array([10.0]))
    data.valid_domain = trials.select_by_mask(np.arange(len(starts)) % 3 == 1)
    data.test_domain = trials.select_by_mask(np.arange(len(starts)) % 3 == 2)
    with h5py.File(path, "w") as f:
        data.to_hdf5(f)
    return timestamps, unit_index


def test_brainsets_layout_loads(tmp_path):
    path = tmp_path / "c_20131003_center_out_reaching.h5"
    times, units = make_brainsets_file(path)
    keep = times <= 19.99  # the pipeline's domain is the cursor's: [0, 19.99]
    assert (~keep).sum() > 0
    with pytest.warns(UserWarning, match=rf"dropped {(~keep).sum()} spike\(s\) outside"):
        rec = load_recording(path)
    np.testing.assert_array_equal(rec.spike_times, np.sort(times[keep]))
    np.testing.assert_array_equal(
        np.bincount(rec.spike_units, minlength=3), np.bincount(units[keep], minlength=3)
    )
    assert rec.session_id == "c_20131003_center_out_reaching"
    assert rec.unit_ids[0] == "c_20131003_center_out_reaching/group_A/elec1/unit_0"
    assert len(rec.trials.start) == 10 and rec.trials.condition is None
    assert set(rec.trials.events) == {"target_on", "go_cue"}
    assert rec.data.subject.id == "c" and rec.data.device.recording_tech == "UTAH_ARRAY_SPIKES"
    assert len(rec.data.valid_domain) == 3 and rec.data.train_domain.end[0] == 10.0
    assert rec.data.cursor.pos.shape == (2000, 2)
    # loaded in memory: the file is closed and can be removed
    path.unlink()
    assert len(rec.spike_times) == keep.sum()


def test_missing_file_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        load_recording(tmp_path / "nope.h5")


def test_random_bytes_file(tmp_path):
    path = tmp_path / "junk.h5"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(RecordingError, match=r"junk\.h5.*not a readable HDF5"):
        load_recording(path)


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9])
def test_truncated_file(tmp_path, keep):
    path = save_recording(make_recording(), tmp_path / "full.h5")
    raw = path.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(RecordingError, match=r"cut\.h5"):
        load_recording(cut)


def test_hdf5_without_spikes(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(RecordingError, match=r"other\.h5.*lacks \['spikes', 'units'\]"):
        load_recording(path)


def test_refuses_to_overwrite(tmp_path):
    path = tmp_path / "r.h5"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="r.h5"):
        save_recording(make_recording(), path)
    assert path.read_bytes() == b"precious"
    save_recording(make_recording(), path, overwrite=True)
    assert load_recording(path).session_id == "s1"


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    rec = make_recording()
    path = tmp_path / "r.h5"
    save_recording(rec, path)
    before = path.read_bytes()

    def explode(self, f, **kw):
        f.create_dataset("half", data=np.arange(10))  # something already written
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(Data, "to_hdf5", explode)
    with pytest.raises(RuntimeError, match="disk on fire"):
        save_recording(rec, path, overwrite=True)
    with pytest.raises(RuntimeError, match="disk on fire"):
        save_recording(rec, tmp_path / "new.h5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.h5"]
    assert path.read_bytes() == before


def test_write_error_names_the_target_not_the_temporary_file(tmp_path, monkeypatch):
    def disk_full(self, f, **kw):
        raise OSError(28, "No space left on device", f.filename)

    monkeypatch.setattr(Data, "to_hdf5", disk_full)
    with pytest.raises(OSError) as err:
        save_recording(make_recording(), tmp_path / "target.h5")
    assert "target.h5: cannot write the recording: No space left on device" in str(err.value)
    assert ".tmp" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_recording_save_load_methods(tmp_path):
    rec = make_recording()
    path = rec.save(tmp_path / "sub" / "r.h5")
    assert Recording.load(path).n_units == 4
    assert io.REQUIRED_GROUPS == ("spikes", "units")


# ------------------------------------------------------------------ sources.load_data
def test_load_data_paths_and_folders(tmp_path):
    from neurohorizon.data.sources import import_to_h5, load_data

    rec = make_recording()
    path = save_recording(rec, tmp_path / "d" / "a.h5")
    make_brainsets_file(tmp_path / "d" / "b.hdf5")
    (tmp_path / "d" / "notes.txt").write_text("ignored")
    (one,) = load_data(str(path))
    np.testing.assert_array_equal(one.spike_times, rec.spike_times)
    with pytest.warns(UserWarning, match="outside the domain"):
        both = load_data(tmp_path / "d")
    assert [r.session_id for r in both] == ["s1", "c_20131003_center_out_reaching"]
    with pytest.raises(FileNotFoundError, match="no .h5"):
        load_data(tmp_path)
    # NWB files in a data folder are not read: said, not silently skipped
    (tmp_path / "d" / "day3.nwb").write_bytes(b"")
    with pytest.warns(UserWarning, match=r"ignoring 1 .nwb file\(s\) \(day3.nwb\).*neurohorizon import"):
        assert len(load_data(tmp_path / "d")) == 2
    (tmp_path / "n").mkdir()
    (tmp_path / "n" / "x.nwb").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="no .h5/.hdf5 recordings; a data folder is read for .h5"):
        load_data(tmp_path / "n")
    with pytest.raises(ValueError, match="valid forms: synthetic:reach.*pmd_reach_yu2009"):
        load_data("not-a-thing")
    with pytest.raises(FileNotFoundError, match="gone.h5"):
        load_data(tmp_path / "gone.h5")

    # import: single file, folder, never silently overwritten
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="afile: is a file, not a folder"):
        import_to_h5(str(path), tmp_path / "afile")
    (out,) = import_to_h5(str(path), tmp_path / "copy.h5")
    np.testing.assert_array_equal(load_recording(out).spike_times, rec.spike_times)
    with pytest.raises(FileExistsError, match="copy.h5"):
        import_to_h5(str(path), tmp_path / "copy.h5")
    assert import_to_h5(str(path), tmp_path / "copy.h5", overwrite=True) == [out]
    with pytest.warns(UserWarning):
        paths = import_to_h5(tmp_path / "d", tmp_path / "out")
    assert [p.name for p in paths] == ["s1.h5", "c_20131003_center_out_reaching.h5"]
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="holds 2 recordings"):
        import_to_h5(tmp_path / "d", tmp_path / "single.h5")
    # two copies of one session in a folder would split it twice: refused, naming both files
    save_recording(rec, tmp_path / "dup" / "a.h5")
    save_recording(rec, tmp_path / "dup" / "b.h5")
    with pytest.raises(ValueError, match=r"dup: a.h5 and b.h5 hold the same session 's1'"):
        load_data(tmp_path / "dup")


def test_load_data_dispatches_synthetic_and_recipes(monkeypatch, tmp_path):
    import neurohorizon.data.synthetic as synthetic
    from neurohorizon.data import sources

    calls = []

    def fake_generate(name, *, seed=0, **kw):
        calls.append((name, seed, kw))
        return make_recording()

    monkeypatch.setattr(synthetic, "generate", fake_generate)
    (rec,) = sources.load_data("synthetic:lorenz", seed=3, n_neurons=5)
    assert calls == [("lorenz", 3, {"n_neurons": 5})] and rec.session_id == "s1"
    for spec in ("recipe:pmd_reach_yu2009", "pmd_reach_yu2009"):
        with pytest.raises(FileNotFoundError, match="pmd_reach_yu2009"):
            sources.load_data(spec, root=tmp_path)


def test_load_data_real_synthetic_is_saved_and_reloaded(tmp_path):
    from neurohorizon.data.sources import import_to_h5, load_data

    (rec,) = load_data("synthetic:reach", n_neurons=8, n_conditions=2, trials_per_condition=3)
    (path,) = import_to_h5(
        "synthetic:reach", tmp_path, n_neurons=8, n_conditions=2, trials_per_condition=3
    )
    back = load_recording(path)
    assert path.name == f"{rec.session_id}.h5"
    np.testing.assert_array_equal(back.spike_times, rec.spike_times)
    np.testing.assert_array_equal(back.data.true_rate.rates, rec.data.true_rate.rates)
