import json

import numpy as np
import pytest

from neurohorizon.data.recording import Recording, Trials
from neurohorizon.data.stats import recommend_likelihood, recommend_preset, recording_stats
from neurohorizon.evaluation.inspect import inspect_data

BS = 0.02


def from_counts(counts, rng, sid="s", trials=None):
    """Recording whose 20 ms bin counts are exactly `counts` (T, N)."""
    t_idx, u = np.nonzero(counts)
    k = counts[t_idx, u]
    t_idx, u = np.repeat(t_idx, k), np.repeat(u, k)
    times = (t_idx + rng.uniform(0.01, 0.99, len(t_idx))) * BS
    order = np.argsort(times)
    return Recording.from_arrays(
        session_id=sid,
        spike_times=times[order],
        unit_ids=np.arange(counts.shape[1]),
        spike_units=u[order],
        domain=(0.0, len(counts) * BS),
        trials=trials,
    )


def family(name, seed=0, T=15000, N=20):
    rng = np.random.default_rng(seed)
    mu = rng.uniform(0.2, 1.0, N)  # 10-50 Hz
    if name == "poisson":
        return from_counts(rng.poisson(mu, (T, N)), rng), mu
    if name == "gamma":  # NB with alpha = 1: Var = mu + mu^2
        return from_counts(rng.poisson(rng.gamma(1.0, mu, (T, N))), rng), mu
    if name == "zip":  # 40% structural zeros
        lam = rng.uniform(2, 4, N)
        return from_counts(rng.poisson(lam, (T, N)) * (rng.random((T, N)) > 0.4), rng), lam
    if name == "regular":  # gamma renewal, shape 10, 25 Hz: far more regular than Poisson
        times, units = [], []
        for n in range(N):
            t = np.cumsum(rng.gamma(10, 1 / 250, int(T * BS * 30)))
            t = t[t < T * BS]
            times.append(t)
            units.append(np.full(len(t), n))
        t, u = np.concatenate(times), np.concatenate(units)
        order = np.argsort(t)
        rec = Recording.from_arrays(
            session_id="r",
            spike_times=t[order],
            unit_ids=np.arange(N),
            spike_units=u[order],
            domain=(0.0, T * BS),
        )
        return rec, None
    raise ValueError(name)


@pytest.mark.parametrize(
    "name,expected",
    [("poisson", "poisson"), ("gamma", "negbin"), ("zip", "zip"), ("regular", "poisson")],
)
def test_recommendation_on_known_families(name, expected):
    rec, _ = family(name)
    stats = recording_stats([rec], BS)
    choice, reasons = recommend_likelihood(stats)
    assert choice == expected, reasons
    s = stats["overall"]["summary"]
    if name == "poisson":
        assert s["median_dispersion_index"] == pytest.approx(1.0, abs=0.03)
        assert s["median_fano"] == pytest.approx(1.0, abs=0.05)
        assert s["frac_overdispersed"] <= 0.1 and s["frac_excess_zeros_vs_poisson"] <= 0.1
    if name == "gamma":
        assert s["median_nb_alpha"] == pytest.approx(1.0, abs=0.15)
        assert s["frac_excess_zeros_vs_poisson"] == 1.0  # NB has more zeros than Poisson...
        assert s["frac_excess_zeros_vs_nb"] <= 0.1  # ...but exactly as many as NB predicts
    if name == "zip":  # alpha of a ZIP by moments is pi / (1 - pi)
        assert s["median_nb_alpha"] == pytest.approx(0.4 / 0.6, abs=0.1)
    if name == "regular":
        assert s["frac_underdispersed"] == 1.0 and s["median_dispersion_index"] < 0.8
        assert any("sub-Poisson" in r for r in reasons)


def test_rates_and_zero_fractions_match_direct_computation():
    rec, _ = family("gamma", T=5000, N=6)
    stats = recording_stats([rec], BS)
    per = stats["sessions"][0]["per_neuron"]
    n_spikes = np.bincount(rec.spike_units, minlength=6)
    np.testing.assert_allclose(per["rate_hz"], n_spikes / 100.0)
    counts = np.zeros((5000, 6))
    np.add.at(counts, (np.floor(rec.spike_times / BS).astype(int), rec.spike_units), 1)
    np.testing.assert_allclose(per["zero_fraction"], (counts == 0).mean(0))
    assert stats["overall"]["summary"]["zero_fraction"] == pytest.approx((counts == 0).mean())
    assert per["unit_id"] == [f"s/{i}" for i in range(6)]
    # what a categorical likelihood's K would truncate, from the same direct counts
    assert stats["sessions"][0]["count_histogram"] == np.bincount(counts.astype(int).ravel()).tolist()
    c = stats["overall"]["summary"]["counts"]
    k = int(np.argmax([(counts > k).mean() <= 1e-3 for k in range(int(counts.max()) + 1)]))
    assert c == {"max_count": int(counts.max()), "default_k": 8, "fraction_above_default_k": pytest.approx((counts > 8).mean()),
                 "k_for_max_truncated": k, "max_truncated": 1e-3}
    assert (counts > k).mean() <= 1e-3 < (counts > k - 1).mean()
    from neurohorizon.losses import Categorical
    assert c["default_k"] == Categorical().max_count  # the K a categorical run gets by default


def modulated_trials(seed=0, n_per=40, n_units=10, poisson=True):
    """Poisson trials whose rate depends strongly on condition and time in trial."""
    rng = np.random.default_rng(seed)
    k = 50  # 1 s trials
    profiles = [0.05 + 0.8 * np.sin(np.linspace(0, np.pi, k)) ** 2 * (c + 1) / 2 for c in range(2)]
    blocks, labels = [], []
    for trial in range(2 * n_per):
        c = trial % 2
        mu = profiles[c][:, None] * rng.uniform(0.5, 1.5, n_units)[None]
        x = rng.poisson(mu) if poisson else rng.poisson(rng.gamma(2.0, mu / 2.0))
        blocks += [x, np.zeros((10, n_units), int)]  # 200 ms inter-trial gap
        labels.append(f"c{c}")
    starts = np.arange(2 * n_per) * 60 * BS
    trials = Trials(starts, starts + k * BS, np.array(labels), {"go_cue": starts + 0.1})
    return from_counts(np.concatenate(blocks), rng, "tr", trials=trials)


def test_trial_statistics_are_not_fooled_by_rate_modulation():
    rec = modulated_trials()
    stats = recording_stats([rec], BS)
    sess = stats["sessions"][0]
    assert sess["method"] == "trials" and sess["n_trials"] == 80
    s = sess["summary"]
    assert s["median_fano"] == pytest.approx(1.0, abs=0.1)
    assert s["median_dispersion_index"] == pytest.approx(1.0, abs=0.06)
    assert recommend_likelihood(stats)[0] == "poisson"
    # the naive across-all-bins Fano is far above 1 because of the modulation
    counts = np.zeros((4800, 10))
    np.add.at(counts, (np.floor(rec.spike_times / BS).astype(int), rec.spike_units), 1)
    assert np.median(counts.var(0) / counts.mean(0)) > 1.2
    # event-anchored statistics work too
    assert recording_stats([rec], BS, trial_event="go_cue")["sessions"][0]["method"] == "trials"
    over = recording_stats([modulated_trials(poisson=False)], BS)
    assert recommend_likelihood(over)[0] == "negbin"
    assert over["overall"]["summary"]["median_nb_alpha"] == pytest.approx(0.5, abs=0.15)


def test_slow_modulation_in_continuous_data_is_not_overdispersion():
    rng = np.random.default_rng(4)
    t = np.arange(15000) * BS
    mu = 0.4 * (1 + 0.8 * np.sin(2 * np.pi * t / 5.0))[:, None] * np.ones(10)  # 5 s cycle
    stats = recording_stats([from_counts(rng.poisson(mu), rng)], BS)
    s = stats["overall"]["summary"]
    assert s["median_fano"] > 1.5  # 100 ms counting windows see the modulation
    assert s["median_dispersion_index"] == pytest.approx(1.0, abs=0.05)
    assert recommend_likelihood(stats)[0] == "poisson"


def test_categorical_only_for_very_large_data():
    rec, _ = family("gamma", T=3000, N=5)
    stats = recording_stats([rec], BS)
    assert recommend_likelihood(stats)[0] == "negbin"
    stats["overall"]["summary"]["hours"] = 500.0
    choice, reasons = recommend_likelihood(stats)
    assert choice == "categorical" and any("500 h" in r for r in reasons)
    k = stats["overall"]["summary"]["counts"]["k_for_max_truncated"]
    assert any(f"loss.options.max_count={k} truncates at most 0.1 %" in r for r in reasons)


def test_inspect_writes_report_and_refuses_overwrite(tmp_path, capsys):
    rec_t = modulated_trials(n_per=6)
    rec_c, _ = family("poisson", T=2000, N=5)
    out = inspect_data([rec_t, rec_c], tmp_path, name="mix")
    printed = capsys.readouterr().out
    assert "recommended likelihood" in printed and "tr" in printed
    assert "counts per 20 ms bin: up to" in printed and "(loss.options.max_count)" in printed
    for key in ("stats", "summary", "rates", "fano", "raster"):
        assert out["files"][key].exists() and out["files"][key].stat().st_size > 0
    data = json.loads(out["files"]["stats"].read_text(), parse_constant=lambda c: 1 / 0)
    assert data["recommendation"]["likelihood"] == out["recommendation"][0]
    assert [s["method"] for s in data["sessions"]] == ["trials", "continuous"]
    with pytest.raises(FileExistsError, match="would overwrite"):
        inspect_data([rec_c], tmp_path)
    with pytest.raises(FileNotFoundError):
        inspect_data([rec_c], tmp_path / "missing")
    inspect_data([rec_c], tmp_path / ".." / tmp_path.name, overwrite=True)  # explicit opt-in


def test_trial_counts_keep_condition_labels():
    from neurohorizon.data.stats import trial_counts

    rng = np.random.default_rng(0)
    starts = np.arange(5) * 1.0
    trials = Trials(starts, starts + 0.5, np.array(["a", "b", "a", "c", "b"]))
    rec = from_counts(rng.poisson(0.5, (250, 3)), rng, trials=trials)
    groups = trial_counts(rec, BS, None)
    assert list(groups) == ["a", "b"]  # "c" has a single trial
    assert groups["a"].shape == (2, 25, 3)
    ref = np.zeros((25, 3))
    np.add.at(
        ref,
        (
            np.floor(rec.spike_times / BS).astype(int)[rec.spike_times < 0.5],
            rec.spike_units[rec.spike_times < 0.5],
        ),
        1,
    )
    np.testing.assert_array_equal(groups["a"][0], ref)


def test_preset_recommendation_follows_the_spike_count():
    rec, _ = family("poisson")
    stats = recording_stats([rec], BS)
    n = stats["overall"]["summary"]["n_spikes"]
    assert n == len(rec.spike_times)  # every spike lands in a bin, counted once
    assert recommend_preset(stats)[0] == ("compact" if n < 500_000 else "small")
    big = {"overall": {"summary": {"n_spikes": 600_000}}}
    assert recommend_preset(big)[0] == "small" and "600,000 spikes" in recommend_preset(big)[1]


def test_sessions_that_share_unit_ids_are_counted_once_as_distinct_units():
    from neurohorizon.data.synthetic import generate
    from neurohorizon.evaluation.inspect import _unit_count

    a = generate("reach", n_neurons=6, trials_per_condition=2, seed=0)
    b = generate("reach", n_neurons=6, trials_per_condition=2, seed=0)  # the same ids: the same neurons
    c = generate("reach", n_neurons=4, trials_per_condition=2, seed=1)  # another session's own ids
    summary = recording_stats([a, b, c], 0.02)["overall"]["summary"]
    assert summary["n_units"] == 16 and summary["n_distinct_units"] == 10
    assert _unit_count(summary) == "16 unit recordings (10 distinct units)"
    assert _unit_count(recording_stats([a], 0.02)["overall"]["summary"]) == "6 units"


def test_a_mixed_over_and_under_dispersed_population_is_said():
    rec, _ = family("poisson")
    stats = recording_stats([rec], BS)
    stats["overall"]["summary"].update(frac_overdispersed=0.47, frac_underdispersed=0.47, median_dispersion_index=1.0)
    choice, reasons = recommend_likelihood(stats)
    assert choice == "poisson" and "mixed population: 47% of units over- and 47% under-dispersed" in reasons[-1]
    assert not any("mixed" in r for r in recommend_likelihood(recording_stats([rec], BS))[1])
