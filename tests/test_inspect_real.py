"""`inspect` on every shared real dataset and every synthetic generator."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io

from neurohorizon.data.recipes import load_recipe
from neurohorizon.data.synthetic import NOISE_FAMILIES, generate
from neurohorizon.evaluation.inspect import inspect_data


def _inspect(recordings, tmp_path):
    out = inspect_data(recordings, tmp_path, name="test")
    stats = json.loads((tmp_path / "stats.json").read_text())
    for fig in ("rates.png", "fano.png", "raster.png"):
        assert (tmp_path / fig).stat().st_size > 5000
    assert out["recommendation"][0] in ("poisson", "negbin", "zip", "categorical")
    return stats


@pytest.mark.realdata
def test_inspect_pmd_rate_matches_raw_file(shared_data, tmp_path):
    stats = _inspect(load_recipe("pmd_reach_yu2009", shared_data), tmp_path)
    raw = scipy.io.loadmat(shared_data / "pmd_reach_yu2009" / "ex2_rawspiketrains.mat", squeeze_me=True)["D"]
    spikes = sum(float(np.asarray(t["data"]).sum()) for t in raw)
    seconds = sum(np.asarray(t["data"]).shape[1] for t in raw) / 1000
    expected = spikes / (61 * seconds)  # independent: 1 ms 0/1 matrices, trial time only
    session = stats["sessions"][0] if "sessions" in stats else stats
    rates = np.asarray(session["per_neuron"]["rate_hz"])
    assert np.mean(rates) == pytest.approx(expected, rel=0.03)  # whole 20 ms bins only


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["aplysia_bruno2017", "adn_peyrache2015"])
def test_inspect_real(shared_data, tmp_path, name):
    options = {"sessions": ["Jun0214da01"]} if name == "aplysia_bruno2017" else {}
    _inspect(load_recipe(name, shared_data, **options), tmp_path)


@pytest.mark.parametrize("noise", NOISE_FAMILIES)
@pytest.mark.parametrize("name", ["reach", "lorenz"])
def test_inspect_synthetic(tmp_path, name, noise):
    size = {"trials_per_condition": 4} if name == "reach" else {"duration": 60.0}
    _inspect([generate(name, n_neurons=30, noise=noise, seed=2, **size)], tmp_path)
