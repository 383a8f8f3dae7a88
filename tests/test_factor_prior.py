"""The factor prior (data.rate_prior=psth_factors): the condition prior moved by single-trial latent
factors that each window infers from its own context."""

from __future__ import annotations

import numpy as np
import pytest

from neurohorizon.data.factors import FactorPrior
from neurohorizon.data.prior import ConditionPrior
from neurohorizon.data.recording import Recording, Trials
from neurohorizon.data.windows import UnitVocab

BIN, TRIAL, GAP, EVENT, RATE = 0.02, 2.0, 0.5, 1.0, 20.0


def gain_recording(n_trials=48, n_units=16, seed=0):
    """Trials of one condition (2 s, event at +1 s, 0.5 s apart). Unit n fires at 20 Hz times
    exp(0.6 l[n] z[j]) through trial j, with one latent z[j] ~ N(0, 1) per trial: the context
    says where the whole trial lies along l."""
    rng = np.random.default_rng(seed)
    loading, z = rng.normal(size=n_units), rng.normal(size=n_trials)
    start = np.arange(n_trials) * (TRIAL + GAP)
    times, units = [], []
    for j in range(n_trials):
        for n in range(n_units):
            k = rng.poisson(RATE * np.exp(0.6 * loading[n] * z[j]) * TRIAL)
            times.append(start[j] + rng.random(k) * TRIAL)
            units.append(np.full(k, n))
    times, units = np.concatenate(times), np.concatenate(units)
    order = np.argsort(times)
    trials = Trials(start=start, end=start + TRIAL, condition=np.array(["A"] * n_trials), events={"go": start + EVENT})
    rec = Recording.from_arrays(session_id="g", spike_times=times[order], unit_ids=np.array([f"u{n}" for n in range(n_units)]),
                                spike_units=units[order], domain=(0.0, float(start[-1] + TRIAL)), trials=trials)
    return rec, loading, z


@pytest.fixture(scope="module")
def fitted():
    rec, loading, z = gain_recording()
    vocab = UnitVocab.from_recordings([rec])
    units = vocab.index(rec.unit_ids)
    train = [(0, 0.0, float(rec.trials.end[35]) + 0.1)]  # trials 0-35; 36-47 held out
    base = ConditionPrior.fit([rec], train, lambda r: vocab.index(r.unit_ids), bin_size=BIN, event="go")
    prior = FactorPrior.fit(base, [rec], train, lambda r: vocab.index(r.unit_ids), k=1, context_bins=25,
                            horizon_bins=25, iters=300)
    return rec, loading, z, units, base, prior


def test_factors_recover_the_loadings_and_forecast_held_out_trials_better(fitted, context_window):
    rec, loading, z, units, base, prior = fitted
    assert abs(np.corrcoef(prior.loadings[units, 0], loading)[0, 1]) > 0.95
    errors = {"plain": [], "factors": []}
    for j in range(36, 48):
        onset = float(rec.trials.events["go"][j])
        context_starts, starts, counts = context_window(rec, onset)
        truth = RATE * BIN * np.exp(0.6 * loading * z[j])
        moved = prior.expected(rec, units, starts, context_starts=context_starts, context_counts=counts)
        for name, rate in (("plain", base.expected(rec, units, starts)), ("factors", moved)):
            errors[name].append(np.abs(np.log(rate / truth)).mean())
    # the plain prior misses each trial's gain (mean |log error| ~0.6 * 0.8 * E|l|); the factors find it
    assert np.mean(errors["factors"]) < 0.5 * np.mean(errors["plain"])


def test_windows_outside_a_trial_keep_the_plain_prior(fitted, context_window):
    rec, _, _, units, base, prior = fitted
    onset = float(rec.trials.end[40]) + 0.2  # in the gap between trials
    context_starts, starts, counts = context_window(rec, onset)
    out = prior.expected(rec, units, starts, context_starts=context_starts, context_counts=counts)
    np.testing.assert_array_equal(out, base.expected(rec, units, starts))


def test_only_the_forecast_trials_own_context_bins_move_it(fitted, context_window):
    rec, _, _, units, base, prior = fitted
    onset = float(rec.trials.start[40]) + 0.2  # 0.3 s of the context lie before the trial
    context_starts, starts, counts = context_window(rec, onset)
    out = prior.expected(rec, units, starts, context_starts=context_starts, context_counts=counts)
    counts[:15] *= 5  # spikes before the trial say nothing about it
    again = prior.expected(rec, units, starts, context_starts=context_starts, context_counts=counts)
    np.testing.assert_allclose(again, out)
    counts[-3:] += 3  # spikes inside it do
    assert not np.allclose(prior.expected(rec, units, starts, context_starts=context_starts, context_counts=counts), out)


def test_factor_prior_round_trips_and_a_plain_prior_file_loads_plain(fitted, tmp_path, context_window):
    rec, _, _, units, base, prior = fitted
    prior.save(tmp_path / "f.npz")
    base.save(tmp_path / "p.npz")
    loaded = FactorPrior.load(tmp_path / "f.npz")
    assert isinstance(loaded, FactorPrior) and isinstance(FactorPrior.load(tmp_path / "p.npz"), ConditionPrior)
    context_starts, starts, counts = context_window(rec, float(rec.trials.events["go"][44]))
    np.testing.assert_allclose(loaded.expected(rec, units, starts, context_starts=context_starts, context_counts=counts),
                               prior.expected(rec, units, starts, context_starts=context_starts, context_counts=counts))


def test_training_windows_see_the_leave_one_out_table_under_the_same_factors(fitted, context_window):
    rec, _, _, units, base, prior = fitted
    loo = prior.leave_one_out()
    context_starts, starts, counts = context_window(rec, float(rec.trials.events["go"][3]))  # a training trial
    kwargs = {"context_starts": context_starts, "context_counts": counts}
    own = prior.expected(rec, units, starts, **kwargs)
    without = loo.expected(rec, units, starts, rec_index=0, **kwargs)
    gain = own / base.expected(rec, units, starts)
    np.testing.assert_allclose(without / base.leave_one_out().expected(rec, units, starts, rec_index=0), gain, rtol=0.2)
    assert not np.allclose(without, own)


def _future_counts(rec, starts):
    counts = np.zeros((len(starts), rec.n_units))
    k = np.floor((rec.spike_times - starts[0]) / BIN).astype(int)
    ok = (k >= 0) & (k < len(starts))
    np.add.at(counts, (k[ok], rec.spike_units[ok]), 1.0)
    return counts


def test_auto_choice_scores_every_candidate_on_validation_and_picks_the_latent(fitted):
    rec, _, _, units, base, _ = fitted
    vocab_index = lambda r: units  # noqa: E731
    train, valid = [(0, 0.0, float(rec.trials.end[35]) + 0.1)], [(0, float(rec.trials.start[36]) - 0.1, rec.domain[1])]
    chosen, scores = FactorPrior.choose(base, [rec], train, valid, vocab_index, ks=(0, 1, 2), context_bins=25,
                                        horizon_bins=25, onset_rows=range(-2, 3), iters=300)
    assert sorted(scores) == [0, 1, 2] and isinstance(chosen, FactorPrior)
    assert chosen.loadings.shape[1] == min(scores, key=scores.get) >= 1 and scores[0] > min(scores.values())
    # K = 0's score is the plain prior's Poisson NLL of the validation windows, computed here directly
    nll = []
    for j in range(36, 48):
        for o in range(-2, 3):
            starts = rec.trials.events["go"][j] + (o + np.arange(25)) * BIN
            rate, y = base.expected(rec, units, starts), _future_counts(rec, starts)
            nll.append((rate - y * np.log(rate)).sum())
    assert scores[0] == pytest.approx(np.mean(nll), rel=1e-4)


def test_auto_choice_without_validation_trials_is_a_clear_error(fitted):
    rec, _, _, units, base, _ = fitted
    train = [(0, 0.0, float(rec.trials.end[35]) + 0.1)]
    with pytest.raises(ValueError, match="rate_prior_factors=auto chooses on validation trials"):
        FactorPrior.choose(base, [rec], train, [], lambda r: units, ks=(0, 1), context_bins=25, horizon_bins=25)
