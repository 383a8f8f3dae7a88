"""The condition-average prior (data.rate_prior=psth): fit on training trials only, looked up
by (condition, time from the event), and added to the model's log-rate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_model import LIK, make_batch, model

from neurohorizon.data.prior import SHRINK, ConditionPrior
from neurohorizon.data.recording import Recording, Trials
from neurohorizon.data.windows import UnitVocab

BIN = 0.02


def trials_recording(burst_rate_a=200.0, test_rate=0.0, seed=0) -> Recording:
    """10 trials (2 s apart, 1 s long, event at +0.4 s) alternating conditions A, B; unit 0 fires
    at `burst_rate_a` Hz in [event, event + 0.2) on A trials, never on B; unit 1 never fires.
    The last trial (index 9, condition B) fires unit 0 at `test_rate` throughout."""
    rng = np.random.default_rng(seed)
    start = np.arange(10) * 2.0
    event = start + 0.4
    times, units = [], []
    for j in range(10):
        if j % 2 == 0:
            n = rng.poisson(burst_rate_a * 0.2)
            times.append(event[j] + rng.random(n) * 0.2)
            units.append(np.zeros(n, int))
        if j == 9 and test_rate:
            n = rng.poisson(test_rate)
            times.append(start[j] + rng.random(n))
            units.append(np.zeros(n, int))
    times, units = np.concatenate(times), np.concatenate(units)
    order = np.argsort(times)
    trials = Trials(start=start, end=start + 1.0, condition=np.array(["A", "B"] * 5), events={"go": event})
    return Recording.from_arrays(session_id="s", spike_times=times[order], unit_ids=np.array(["u0", "u1"]),
                                 spike_units=units[order], domain=(0.0, 20.0), trials=trials)


def fit(rec, train_until=17.5):
    vocab = UnitVocab.from_recordings([rec])
    prior = ConditionPrior.fit([rec], [(0, 0.0, train_until)], lambda r: vocab.index(r.unit_ids),
                               bin_size=BIN, event="go")
    return prior, vocab.index(rec.unit_ids)


def test_prior_is_the_condition_average_at_the_time_from_the_event():
    rec = trials_recording()
    prior, units = fit(rec)
    assert prior.labels == ["A", "B"] and prior.rel_start == pytest.approx(-0.4)
    # a test window at trial 8's (condition A) event: bins 0..9 are the burst
    onset = float(rec.trials.events["go"][8])
    got = prior.expected(rec, units, onset + np.arange(20) * BIN)
    burst, after = got[2:8, 0], got[16:20, 0]  # 3 smoothing sigmas away from the burst's edges
    assert burst.mean() == pytest.approx(200 * BIN, rel=0.2)  # 4 spikes per 20 ms bin
    assert after.max() < 0.1 * burst.mean()
    # condition B at the same time: nothing but the shrinkage toward the unit mean
    onset_b = float(rec.trials.events["go"][7])
    got_b = prior.expected(rec, units, onset_b + np.arange(15) * BIN)
    assert got_b[:, 0].max() < 0.1 * burst.mean()
    assert got_b[:, 0].min() == pytest.approx(SHRINK * prior.unit_mean[units[0]], rel=1e-3)
    # a bin between trials falls back to the unit's mean count
    np.testing.assert_allclose(prior.expected(rec, units, np.array([1.5])), prior.unit_mean[units][None])


def test_bins_of_a_trial_that_starts_after_the_onset_get_the_unit_mean():
    """The next trial's condition and event time are not known at the onset: no leak."""
    rec = trials_recording()
    prior, units = fit(rec)
    onset = 14.9  # late in trial 7 (B, ends at 15.0); trial 8 (A, 16.0-17.0, burst 16.4-16.6) follows
    starts = onset + np.arange(90) * BIN
    got = prior.expected(rec, units, starts)
    np.testing.assert_allclose(got[5:], np.broadcast_to(prior.unit_mean[units], (85, 2)))  # gap, trial 8
    np.testing.assert_array_equal(got[:5], prior.table[prior.labels.index("B"), 45:50][:, units])  # trial 7
    # relabelling trial 8 changes nothing; seen from inside trial 8, its burst is there
    conditions = prior.trial_conditions(rec)
    conditions[8] = prior.labels.index("B")
    np.testing.assert_array_equal(prior.expected(rec, units, starts, conditions), got)
    assert prior.expected(rec, units, starts[55:])[20:30, 0].mean() > 0.5 * 200 * BIN  # onset 16.0
    # bin edges computed from the event time may land a rounding error before the trial's start: still inside
    early = prior.expected(rec, units, 16.0 - 1e-12 + np.arange(40) * BIN)
    np.testing.assert_array_equal(early, prior.expected(rec, units, 16.0 + np.arange(40) * BIN))


def test_prior_uses_the_training_trials_only():
    a, units = fit(trials_recording(test_rate=0.0))
    b, _ = fit(trials_recording(test_rate=500.0))  # trial 9 (t = 18-19 s) is outside training
    np.testing.assert_array_equal(a.table, b.table)
    with pytest.raises(ValueError, match="no training trial with a condition"):
        fit(trials_recording(), train_until=0.5)


def test_prior_round_trips_through_a_file(tmp_path):
    prior, units = fit(trials_recording())
    prior.save(tmp_path / "prior.npz")
    again = ConditionPrior.load(tmp_path / "prior.npz")
    assert again.labels == prior.labels and again.event == "go"
    starts = 16.4 + np.arange(10) * BIN
    np.testing.assert_array_equal(again.expected(trials_recording(), units, starts),
                                  prior.expected(trials_recording(), units, starts))


def test_the_model_adds_the_log_prior_to_the_log_rate_and_caches_it_exactly():
    m, b = model(rate_prior=True), make_batch()
    ones = {**b, "prior_counts": torch.ones_like(b["target_counts"])}
    k = torch.rand_like(b["target_counts"]) * 3 + 0.1
    base, shifted = m(ones, b["target_counts"]), m({**b, "prior_counts": k}, b["target_counts"])
    torch.testing.assert_close(shifted[..., 0] - base[..., 0], k.log(), atol=1e-5, rtol=0)
    runs = [m.rollout({**b, "prior_counts": k}, LIK, n_steps=8, feedback="sample", n_samples=2,
                      use_cache=c, generator=torch.Generator().manual_seed(1)) for c in (True, False)]
    torch.testing.assert_close(runs[0]["params"], runs[1]["params"], atol=1e-5, rtol=0)
    with pytest.raises(KeyError, match="needs prior_counts"):
        m(b, b["target_counts"])


def test_a_model_started_at_its_prior_forecasts_exactly_the_prior():
    m, b = model(rate_prior=True), make_batch()
    k = torch.rand_like(b["target_counts"]) * 3 + 0.1
    b = {**b, "prior_counts": k}
    assert (m(b, b["target_counts"])[..., 0] - k.log()).abs().max() > 1e-3  # a random readout moves it
    m.start_at_prior()
    torch.testing.assert_close(m(b, b["target_counts"])[..., 0], k.log(), atol=1e-6, rtol=0)
    rolled = m.rollout(b, LIK, n_steps=8, feedback="mean")["params"][0, ..., 0]
    torch.testing.assert_close(rolled, k[:, :8].log(), atol=1e-6, rtol=0)


def test_dataset_items_carry_the_priors_expected_counts():
    from neurohorizon.data.dataset import ForecastDataset, collate
    from neurohorizon.data.windows import Window, WindowSpec

    rec = trials_recording()
    prior, units = fit(rec)
    spec = WindowSpec(bin_size=BIN, context_bins=10, horizon_bins=20)
    onsets = [float(rec.trials.events["go"][8]), 1.5]  # at a trial's event; between trials
    ds = ForecastDataset([rec], windows=[Window(0, t) for t in onsets], spec=spec, vocab=UnitVocab.from_recordings([rec]), prior=prior)
    for i, t in enumerate(onsets):
        np.testing.assert_array_equal(ds[i]["prior_counts"], prior.expected(rec, units, t + np.arange(20) * BIN))
    assert collate([ds[0], ds[1]])["prior_counts"].shape == (2, 20, 2)


def refit_without(rec, j, train_until=17.5):
    """The prior fitted on the training trials other than trial j."""
    vocab = UnitVocab.from_recordings([rec])
    tr = rec.trials
    spans = [(0, 0.0, tr.start[j] - 0.01), (0, tr.end[j] + 0.01, train_until)]
    return ConditionPrior.fit([rec], spans, lambda r: vocab.index(r.unit_ids), bin_size=BIN, event="go")


@pytest.mark.parametrize("seed", [0, 1])
def test_leave_one_out_equals_a_fit_without_the_windows_own_trial(seed):
    rec = trials_recording(burst_rate_a=60.0, seed=seed)
    prior, units = fit(rec)
    loo = prior.leave_one_out()
    tr = rec.trials
    # 2.4 s windows from each fitted trial's start: its bins, the gap, then the next trial's, which
    # has not started at the onset and so gets the unit mean
    for j in range(8):
        starts = tr.start[j] + np.arange(120) * BIN
        got = loo.expected(rec, units, starts, rec_index=0)
        centre = starts + BIN / 2
        inside = (centre >= tr.start[j]) & (centre < tr.end[j])
        want = refit_without(rec, j).expected(rec, units, starts[inside])
        np.testing.assert_allclose(got[inside], want, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(got[~inside], prior.expected(rec, units, starts)[~inside])
        np.testing.assert_array_equal(got[~inside], np.broadcast_to(prior.unit_mean[units], got[~inside].shape))
    # the leak it removes: the A trial with the largest burst raises the plain average on itself
    go = tr.events["go"]
    bursts = [np.sum((rec.spike_times >= go[j]) & (rec.spike_times < go[j] + 0.2)) for j in range(0, 9, 2)]
    top = 2 * int(np.argmax(bursts))
    own = go[top] + np.arange(2, 8) * BIN
    assert prior.expected(rec, units, own)[:, 0].mean() > loo.expected(rec, units, own, rec_index=0)[:, 0].mean()


def test_leave_one_out_tables_are_cached_per_trial_within_a_memory_bound():
    """Each trial's leave-one-out rows are computed once and reused by every window in it; the
    cache holds at most CACHE_BYTES, and an evicted trial is recomputed to the same values."""
    rec = trials_recording(seed=3)
    prior, units = fit(rec)
    windows = [rec.trials.start[j] + k * BIN + np.arange(30) * BIN for j in range(8) for k in (0, 7, 21)]
    direct = prior.leave_one_out()
    direct._trial_rows = lambda rec, ri, j, units, c, r: direct._without_trial(rec, ri, j, units, c, r)
    want = [direct.expected(rec, units, w, rec_index=0) for w in windows]
    cached, small = prior.leave_one_out(), prior.leave_one_out()
    for _ in range(2):  # the second pass reads the tables the first one made (or remade)
        for w, expect in zip(windows, want):
            np.testing.assert_array_equal(cached.expected(rec, units, w, rec_index=0), expect)
    assert len(cached._tables) == 8  # one table per fitted trial the windows touched
    small.CACHE_BYTES = 2 * next(iter(cached._tables.values()))[1].nbytes
    for w, expect in zip(windows * 2, want * 2):
        np.testing.assert_array_equal(small.expected(rec, units, w, rec_index=0), expect)
        assert small._table_bytes <= small.CACHE_BYTES and len(small._tables) <= 2
    none = prior.leave_one_out()
    none.CACHE_BYTES = 1  # smaller than any table: nothing is kept, the values are the same
    for w, expect in zip(windows, want):
        np.testing.assert_array_equal(none.expected(rec, units, w, rec_index=0), expect)
    assert not none._tables and none._table_bytes == 0


def test_leave_one_out_leaves_unfitted_trials_alone_and_needs_the_fit():
    rec = trials_recording(test_rate=50.0)
    prior, units = fit(rec)  # trial 9 (18-19 s) is not in the fit
    starts = rec.trials.start[9] + np.arange(50) * BIN
    np.testing.assert_array_equal(prior.leave_one_out().expected(rec, units, starts, rec_index=0),
                                  prior.expected(rec, units, starts))
    with pytest.raises(ValueError, match="needs rec_index"):
        prior.leave_one_out().expected(rec, units, starts)


def test_leave_one_out_needs_a_fitted_prior(tmp_path):
    prior, _ = fit(trials_recording())
    prior.save(tmp_path / "prior.npz")
    with pytest.raises(ValueError, match="loaded from a file"):
        ConditionPrior.load(tmp_path / "prior.npz").leave_one_out()


def reach_prior(rank, **fit_options):
    """A small synthetic reach session (12 units, 4 directions x 5 trials) and its prior."""
    from neurohorizon.data.synthetic.reach import make_reach

    rec = make_reach(n_neurons=12, n_conditions=4, trials_per_condition=5, seed=2)
    vocab = UnitVocab.from_recordings([rec])
    spans = fit_options.pop("spans", [(0, 0.0, float(rec.trials.end[-1]))])
    prior = ConditionPrior.fit([rec], spans, lambda r: vocab.index(r.unit_ids), bin_size=BIN,
                               event="go_cue", rank=rank, **fit_options)
    return rec, prior, vocab.index(rec.unit_ids)


def test_population_modes_keep_the_top_modes_of_the_root_table():
    rec, plain, units = reach_prior(0)
    _, low, _ = reach_prior(3)
    roots = np.sqrt(plain.table.reshape(-1, plain.table.shape[-1]).astype(np.float64))
    centred = roots - roots.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    want = np.square(centred @ vt[:3].T @ vt[:3] + roots.mean(0)).reshape(plain.table.shape)
    np.testing.assert_allclose(low.table, np.maximum(want, 1e-4), rtol=1e-5, atol=1e-7)
    assert np.linalg.matrix_rank(np.sqrt(low.table.reshape(-1, 13).astype(np.float64)) - low.modes.centre,
                                 tol=1e-3) <= 3
    _, full, _ = reach_prior(13)  # every mode kept: the plain table
    np.testing.assert_allclose(full.table, plain.table, rtol=1e-4, atol=1e-6)


def test_leave_one_out_with_modes_equals_a_denoised_fit_without_the_trial():
    """The modes are refitted without the trial too: fitted with it, they leak it (on the
    demo's training go cues 0.166 / 0.233 / 0.176 bits/spike against 0.161 / 0.226 / 0.171)."""
    rec, prior, units = reach_prior(3)
    loo, tr = prior.leave_one_out(), rec.trials
    last = float(tr.end[-1])
    for j in (0, 7, 13):
        starts = tr.start[j] + np.arange(int((tr.end[j] - tr.start[j]) / BIN) - 1) * BIN
        _, without, _ = reach_prior(3, spans=[(0, 0.0, tr.start[j] - 0.01), (0, tr.end[j] + 0.01, last)])
        np.testing.assert_allclose(loo.expected(rec, units, starts, rec_index=0),
                                   without.expected(rec, units, starts), rtol=1e-4, atol=1e-6)
        _, _, cond, r = prior.locate(rec, starts)
        plain = loo._plain_without(rec, 0, j, units, cond[0], r)[0]
        full = np.pad(plain, ((0, 0), (1, 0)), constant_values=1e-4)  # vocabulary slot 0 is no unit
        with_trial = prior.modes.project(full)[:, 1:]  # modes fitted with the trial: they leak it
        assert np.abs(with_trial - without.expected(rec, units, starts)).max() > 1e-3


def test_prior_modes_round_trip_and_bad_ranks(tmp_path):
    from neurohorizon.config import load_config
    from neurohorizon.data.prepare import check_rate_prior

    rec, prior, units = reach_prior(3)
    prior.save(tmp_path / "prior.npz")
    again = ConditionPrior.load(tmp_path / "prior.npz")
    np.testing.assert_array_equal(again.modes.basis, prior.modes.basis)
    starts = rec.trials.events["go_cue"][5] + np.arange(30) * BIN
    np.testing.assert_array_equal(again.expected(rec, units, starts), prior.expected(rec, units, starts))
    cfg = load_config(None, ["data.rate_prior_rank=4"]).data
    with pytest.raises(ValueError, match="set data.rate_prior=psth"):
        check_rate_prior(cfg)
    cfg = load_config(None, ["data.rate_prior=psth", "data.align_event=go_cue", "data.rate_prior_rank=-1"]).data
    with pytest.raises(ValueError, match="rate_prior_rank must be an integer >= 0"):
        check_rate_prior(cfg)
