import numpy as np
import pytest
import scipy.io

from neurohorizon.data import recipes
from neurohorizon.data.io import load_recording, save_recording
from neurohorizon.data.recipes import RECIPES, load_recipe, read_aplysia_file
from neurohorizon.data.recording import RecordingError


def _need(shared_data, name):
    folder = shared_data / name
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    return folder


def test_registry_and_missing_root(tmp_path):
    assert set(RECIPES) == {"pmd_reach_yu2009", "aplysia_bruno2017", "adn_peyrache2015"}
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "pmd_reach_yu2009")):
        load_recipe("pmd_reach_yu2009", root=tmp_path)
    with pytest.raises(ValueError, match="unknown recipe 'nope'.*aplysia_bruno2017"):
        load_recipe("nope")
    with pytest.raises(ValueError, match="which must be one of"):
        load_recipe("pmd_reach_yu2009", root=tmp_path, which="ex3")


def test_data_root_prefers_explicit_then_env(tmp_path, monkeypatch):
    assert recipes.data_root(tmp_path) == tmp_path
    monkeypatch.setenv("NEUROHORIZON_DATA", str(tmp_path))
    assert recipes.data_root() == tmp_path


def test_aplysia_file_handling(tmp_path):
    folder = tmp_path / "aplysia_bruno2017"
    folder.mkdir()
    # unsorted (neuron by neuron) with one duplicated row
    spks = np.array([[2, 0.5], [2, 0.1], [10, 0.3], [1, 0.2], [1, 0.2]], dtype=float)
    scipy.io.savemat(folder / "Abc01da01.mat", {"spks": spks})
    scipy.io.savemat(folder / "Abc01da02.mat", {"spks": spks[:3]})
    scipy.io.savemat(folder / "Xyz02da01.mat", {"spks": spks[:2]})
    with pytest.warns(UserWarning, match=r"Abc01da01\.mat: dropped 1 duplicate"):
        recs = load_recipe("aplysia_bruno2017", root=tmp_path, preps=["Abc01"])
    assert [r.session_id for r in recs] == ["Abc01da01", "Abc01da02"]
    r = recs[0]
    np.testing.assert_array_equal(r.spike_times, [0.1, 0.2, 0.3, 0.5])
    assert list(r.unit_ids) == ["Abc01/1", "Abc01/2", "Abc01/10"]
    assert list(r.unit_ids[r.spike_units]) == ["Abc01/2", "Abc01/1", "Abc01/10", "Abc01/2"]
    assert set(recs[1].unit_ids) <= set(r.unit_ids)  # same prep, same namespace
    back = load_recording(save_recording(r, tmp_path / "r.h5"))  # shared namespace survives
    assert list(back.unit_ids) == list(r.unit_ids)
    other = load_recipe("aplysia_bruno2017", root=tmp_path, sessions=["Xyz02da01"])[0]
    assert list(other.unit_ids) == ["Xyz02/2"]
    with pytest.raises(FileNotFoundError, match="Nope01da01"):
        load_recipe("aplysia_bruno2017", root=tmp_path, sessions=["Nope01da01"])
    for bad, problem in [
        ([[1, np.nan]], "NaN"),
        ([[1, -0.2]], "negative"),
        ([[1.5, 0.2]], "non-integer"),
    ]:
        path = tmp_path / "Bad01da01.mat"
        scipy.io.savemat(path, {"spks": np.array(bad, dtype=float)})
        with pytest.raises(RecordingError, match=rf"Bad01da01\.mat.*{problem}"):
            read_aplysia_file(path)


@pytest.mark.realdata
def test_pmd_ex2_and_ex1(shared_data):
    folder = _need(shared_data, "pmd_reach_yu2009")
    ex2, ex1 = load_recipe("pmd_reach_yu2009", root=shared_data, which="both")
    for rec, fname, n_trials, n_cond in [
        (ex2, "ex2_rawspiketrains.mat", 112, 2),
        (ex1, "ex1_spikecounts.mat", 210, 7),
    ]:
        D = scipy.io.loadmat(folder / fname, squeeze_me=True)["D"]
        tr = rec.trials
        assert rec.n_units == 61 and len(tr.start) == n_trials
        assert len(set(tr.condition)) == n_cond
        assert list(tr.condition) == [str(d["condition"]) for d in D]
        durations_ms = np.array([d["data"].shape[1] for d in D])
        np.testing.assert_allclose(tr.end - tr.start, durations_ms * 1e-3, atol=1e-9)
        np.testing.assert_allclose(tr.start[1:] - tr.end[:-1], 1.0, atol=1e-9)  # 1 s gaps
        assert len(rec.spike_times) == sum(int(d["data"].sum()) for d in D)
        # independent check: trial k, neuron i spike train recovered exactly
        for k in (0, n_trials // 2, n_trials - 1):
            data = D[k]["data"]
            for i in (0, 30, 60):
                sel = rec.spike_units == i
                t = rec.spike_times[sel]
                t = t[(t >= tr.start[k]) & (t < tr.end[k])]
                samples = np.round((t - tr.start[k]) * 1e3 - 0.5).astype(int)
                np.testing.assert_array_equal(samples, np.nonzero(data[i])[0])
        assert len(rec.data.domain) == n_trials  # domain = the trials, not the gaps
        np.testing.assert_array_equal(tr.events["epoch0"], tr.start)  # epochStarts == 1
    ex2_only = load_recipe("pmd_reach_yu2009", root=shared_data)
    assert [r.session_id for r in ex2_only] == ["pmd_reach_yu2009_ex2"]


@pytest.mark.realdata
def test_pmd_round_trips_through_h5(shared_data, tmp_path):
    _need(shared_data, "pmd_reach_yu2009")
    rec = load_recipe("pmd_reach_yu2009", root=shared_data, which="ex1")[0]
    back = load_recording(save_recording(rec, tmp_path / "ex1.h5"))
    np.testing.assert_array_equal(back.spike_times, rec.spike_times)
    np.testing.assert_array_equal(back.data.domain.start, rec.data.domain.start)
    assert list(back.trials.condition) == list(rec.trials.condition)


@pytest.mark.realdata
def test_aplysia_real(shared_data):
    folder = _need(shared_data, "aplysia_bruno2017")
    recs = load_recipe("aplysia_bruno2017", root=shared_data, preps=["Jun0214", "Nov0514"])
    assert [r.session_id for r in recs] == [
        f"{p}da0{k}" for p in ("Jun0214", "Nov0514") for k in (1, 2, 3)
    ]
    for r in recs:
        spks = scipy.io.loadmat(folder / f"{r.session_id}.mat")["spks"]
        assert len(r.spike_times) == len(spks)
        assert r.n_units == len(np.unique(spks[:, 0]))
        np.testing.assert_array_equal(r.spike_times, np.sort(spks[:, 1]))
        assert np.all(np.diff(r.spike_times) >= 0)
        assert 120 < r.duration < 125
    jun = [set(r.unit_ids) for r in recs[:3]]
    assert jun[0] == jun[1] == jun[2] and len(jun[0]) == 136
    assert not jun[0] & set(recs[3].unit_ids)
    assert len(load_recipe("aplysia_bruno2017", root=shared_data)) == 21


@pytest.mark.realdata
def test_adn_recipe(shared_data):
    _need(shared_data, "adn_peyrache2015")
    (rec,) = load_recipe("adn_peyrache2015", root=shared_data)
    assert rec.n_units == 15 and list(rec.data.epochs.tags) == ["sleep", "wake"]
