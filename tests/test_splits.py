import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neurohorizon.data.recording import Recording, Trials
from neurohorizon.data.splits import SPLITS, Splits, make_splits, windows_for_split
from neurohorizon.data.windows import WindowSpec

SPEC = WindowSpec(bin_size=0.02, context_bins=25, horizon_bins=50)


def cont_rec(sid="a", duration=300.0, n_units=3, seed=0, namespace=None):
    rng = np.random.default_rng(seed)
    n = int(5 * n_units * duration)
    return Recording.from_arrays(
        session_id=sid,
        unit_namespace=namespace,
        spike_times=np.sort(rng.random(n) * duration),
        unit_ids=np.arange(n_units),
        spike_units=rng.integers(0, n_units, n),
        domain=(0.0, duration),
        source=f"{sid}.h5",
    )


def trial_rec(sid="t", per_condition=(10, 10, 4, 2), trial_s=2.0, gap_s=1.0, seed=0):
    labels = np.concatenate([[f"c{i}"] * k for i, k in enumerate(per_condition)])
    np.random.default_rng(seed).shuffle(labels)
    start = 1.0 + np.arange(len(labels)) * (trial_s + gap_s)
    trials = Trials(start, start + trial_s, labels, {"go_cue": start + 0.8})
    duration = float(start[-1] + trial_s + 1.0)
    rng = np.random.default_rng(seed)
    n = int(30 * duration)
    return Recording.from_arrays(
        session_id=sid,
        spike_times=np.sort(rng.random(n) * duration),
        unit_ids=np.arange(3),
        spike_units=rng.integers(0, 3, n),
        domain=(0.0, duration),
        trials=trials,
    )


def _spans(windows, spec):
    return [(w.rec, w.onset - spec.context_s, w.onset + spec.horizon_s) for w in windows]


def _check_no_leak(recs, splits, spec, seed):
    """Windows of each split lie inside its intervals and never touch another split."""
    wins = {}
    for s in SPLITS:
        if any(splits.intervals(s, r) for r in range(len(recs))):
            wins[s] = _spans(
                windows_for_split(recs, splits, s, spec, seed=seed, n_random=200), spec
            )
    tol = 1e-9
    for s, spans in wins.items():
        own = splits.all_intervals(s)
        for r, a, b in spans:
            assert any(r == r2 and a >= s2 - tol and b <= e2 + tol for r2, s2, e2 in own)
        for other in SPLITS:
            if other == s:
                continue
            for r, a, b in spans:
                for r2, s2, e2 in splits.all_intervals(other):
                    assert r != r2 or b <= s2 + tol or a >= e2 - tol, (s, other)


# -------------------------------------------------------------------- trials
def test_trial_splits_stratified_disjoint_and_complete():
    rec = trial_rec()
    sp = make_splits([rec], SPEC, seed=3)
    assert sp.mode == "trials"
    parts = [set(sp.trials(s, 0).tolist()) for s in SPLITS]
    assert set().union(*parts) == set(range(len(rec.trials.start)))
    assert sum(len(p) for p in parts) == len(rec.trials.start)
    cond = rec.trials.condition
    for c, n in zip(["c0", "c1", "c2", "c3"], (10, 10, 4, 2)):
        per = [sum(cond[i] == c for i in p) for p in parts]
        if n >= 3:
            assert min(per) >= 1, (c, per)
        assert sum(per) == n
    # 10 trials at 0.7/0.15/0.15 -> 2 valid, 2 test (rounded half up), 6 train
    assert [sum(cond[i] == "c0" for i in p) for p in parts] == [6, 2, 2]
    assert sp.intervals("valid", 0) == [
        (float(rec.trials.start[i]), float(rec.trials.end[i])) for i in sp.trials("valid", 0)
    ]


def test_splits_deterministic_and_json_roundtrip(tmp_path):
    recs = [trial_rec(seed=1), trial_rec("u", seed=2)]
    a = make_splits(recs, SPEC, seed=5)
    b = make_splits(recs, SPEC, seed=5)
    c = make_splits(recs, SPEC, seed=6)
    assert a.to_dict() == b.to_dict() and a.to_dict() != c.to_dict()
    back = Splits.from_json(a.to_json(tmp_path / "splits.json"))
    assert back.to_dict() == a.to_dict()
    np.testing.assert_array_equal(back.trials("test", 1), a.trials("test", 1))
    with pytest.raises(ValueError, match="not a splits file"):
        (tmp_path / "bad.json").write_text("{}")
        Splits.from_json(tmp_path / "bad.json")


def test_too_few_trials_is_a_clear_error():
    with pytest.raises(ValueError, match="split 'valid' is empty.*too few trials"):
        make_splits([trial_rec(per_condition=(2, 2))], SPEC)


def test_a_session_given_twice_is_a_clear_error():
    rec = trial_rec()
    with pytest.raises(ValueError, match=r"session id\(s\) \['.*'\] appear more than once"):
        make_splits([rec, rec], SPEC)


def test_trial_windows_and_trials_as_continuous():
    rec = trial_rec()
    sp = make_splits([rec], SPEC, seed=0)
    w = windows_for_split([rec], sp, "test", SPEC, event="go_cue")
    test_trials = sp.trials("test", 0)
    assert [x.onset for x in w] == pytest.approx(rec.trials.events["go_cue"][test_trials])
    # no event: windows stay inside the split's trials
    _check_no_leak([rec], sp, WindowSpec(0.02, 25, 25), seed=0)
    short = trial_rec(trial_s=1.0)
    sp = make_splits([short], SPEC, seed=0)
    with pytest.raises(ValueError, match="split 'train' is empty.*1500 ms window"):
        windows_for_split([short], sp, "train", SPEC)  # 1 s trials cannot hold 1.5 s windows


def test_trial_windows_that_reach_into_another_splits_trial_are_dropped():
    """Trials 2 s long, 1 s apart: a window at the trial end with a 1.5 s horizon covers the next
    trial's start, which belongs to another split for some trials; those windows are dropped."""
    rec = trial_rec(per_condition=(10, 10, 10))
    sp = make_splits([rec], SPEC, seed=0, mode="trials")
    split_of = {int(i): name for name in SPLITS for i in sp.trials(name, 0)}
    long_spec = WindowSpec(bin_size=0.02, context_bins=25, horizon_bins=75)
    for name in ("test", "train"):
        crossing = [i for i in sp.trials(name, 0) if split_of.get(int(i) + 1, name) != name]
        with pytest.warns(UserWarning, match=f"dropped {len(crossing)} of .* {name!r} trial windows"):
            w = windows_for_split([rec], sp, name, long_spec, event="end")
        kept = {round(x.onset, 6) for x in w}
        expect = {round(float(rec.trials.end[i]), 6) for i in sp.trials(name, 0) if int(i) not in crossing}
        assert crossing and kept == expect
    # at the go cue the same windows stay inside their own trial: nothing is dropped, no warning
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(windows_for_split([rec], sp, "test", SPEC, event="go_cue")) == len(sp.trials("test", 0))


# ----------------------------------------------------------------- continuous
def test_continuous_blocks_guard_gap_and_fractions():
    rec = cont_rec(duration=600.0)
    sp = make_splits([rec], SPEC, seed=1)
    assert sp.mode == "continuous" and sp.guard_s == pytest.approx(SPEC.total_s)
    spans = sorted((s, e, name) for name in SPLITS for s, e in sp.intervals(name, 0))
    for (_, e1, n1), (s2, _, n2) in zip(spans, spans[1:]):
        assert s2 >= e1 - 1e-9
        if n1 != n2:
            assert s2 - e1 >= SPEC.total_s - 1e-9
    assert spans[0][0] >= 0 and spans[-1][1] <= 600.0 + 1e-9
    total = {n: sum(e - s for s, e in sp.intervals(n, 0)) for n in SPLITS}
    used = sum(total.values())
    for n, f in zip(SPLITS, (0.7, 0.15, 0.15)):
        assert total[n] / used == pytest.approx(f, abs=0.01)
    # blocks start on the bin grid
    for s, _, _ in spans:
        assert abs(s / 0.02 - round(s / 0.02)) < 1e-6
    _check_no_leak([rec], sp, SPEC, seed=0)


def test_holdout_sessions_go_to_test():
    recs = [cont_rec("a", 200.0), cont_rec("b", 100.0, seed=1, namespace="a")]  # b records a's units again
    sp = make_splits(recs, SPEC, holdout_sessions=["b"])
    assert sp.intervals("test", 1) == [(0.0, 100.0)]
    assert sp.intervals("train", 1) == [] and sp.intervals("valid", 1) == []
    assert sp.holdout_sessions == ["b"]
    w = windows_for_split(recs, sp, "test", SPEC)
    assert {x.rec for x in w} == {0, 1}
    with pytest.raises(ValueError, match=r"held-out session\(s\) \['zz'\]"):
        make_splits(recs, SPEC, holdout_sessions=["zz"])


def test_a_held_out_session_needs_units_that_training_has():
    """Units are keyed by global id: a held-out session of other ids would run on untrained embeddings."""
    a = cont_rec("a", 200.0)
    with pytest.raises(ValueError, match="held-out session 'b' shares none of its 3 unit ids"):
        make_splits([a, cont_rec("b", 100.0, seed=1)], SPEC, holdout_sessions=["b"])
    with pytest.warns(UserWarning, match="held-out session 'c': 1 of its 4 units"):
        make_splits([a, cont_rec("c", 100.0, n_units=4, seed=1, namespace="a")], SPEC, holdout_sessions=["c"])
    with pytest.raises(ValueError, match="holds every session"):
        make_splits([a], SPEC, holdout_sessions=["a"])


def test_short_recording_error_names_it():
    with pytest.raises(ValueError, match=r"tiny.h5: recording of 5.000 s is too short.*1500 ms"):
        make_splits([cont_rec("tiny", 5.0)], SPEC)


def test_train_windows_random_eval_windows_sequential():
    rec = cont_rec(duration=300.0)
    sp = make_splits([rec], SPEC, seed=0)
    train = windows_for_split([rec], sp, "train", SPEC, seed=1)
    train_s = sum(e - s for s, e in sp.intervals("train", 0))
    assert len(train) == int(train_s / SPEC.horizon_s)
    assert train == windows_for_split([rec], sp, "train", SPEC, seed=1)
    test = windows_for_split([rec], sp, "test", SPEC)
    onsets = np.array([w.onset for w in test])
    assert (np.diff(onsets)[np.diff(onsets) < 2 * SPEC.total_s] >= SPEC.total_s - 1e-9).all()


# -------------------------------------------------------------- properties
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    durations=st.lists(st.floats(3.0, 200.0), min_size=1, max_size=3),
    context=st.integers(1, 30),
    horizon=st.integers(1, 60),
    seed=st.integers(0, 10_000),
)
def test_property_continuous_splits_never_leak(durations, context, horizon, seed):
    spec = WindowSpec(0.02, context, horizon)
    recs = [cont_rec(f"s{i}", d, seed=i) for i, d in enumerate(durations)]
    try:
        sp = make_splits(recs, spec, seed=seed)
    except ValueError as e:
        assert "too short" in str(e)
        # one round needs 2 guard gaps + a 15% block of at least one window
        assert min(durations) < (2 + 1 / 0.15) * spec.total_s + 0.1
        return
    assert sp.to_dict() == make_splits(recs, spec, seed=seed).to_dict()
    _check_no_leak(recs, sp, spec, seed)


@settings(max_examples=40, deadline=None)
@given(
    per_condition=st.lists(st.integers(1, 25), min_size=1, max_size=5),
    seed=st.integers(0, 10_000),
)
def test_property_trial_stratification(per_condition, seed):
    rec = trial_rec(per_condition=tuple(per_condition), trial_s=0.5, gap_s=0.1, seed=seed % 7)
    try:
        sp = make_splits([rec], SPEC, seed=seed)
    except ValueError as e:
        assert "too few trials" in str(e)
        assert all(n < 3 for n in per_condition)
        return
    cond = rec.trials.condition
    seen = []
    for s in SPLITS:
        idx = sp.trials(s, 0)
        seen += idx.tolist()
        for i, n in enumerate(per_condition):
            if n >= 3:
                assert (cond[idx] == f"c{i}").sum() >= 1
    assert sorted(seen) == list(range(len(cond)))
    assert sp.to_dict() == make_splits([rec], SPEC, seed=seed).to_dict()


def test_jittered_training_anchors_stay_out_of_other_splits():
    from neurohorizon.config import load_config
    from neurohorizon.data.prepare import prepare_data

    rec = trial_rec(per_condition=(10, 10, 10))  # go cue 0.8 s into 2 s trials, 1 s apart
    cfg = load_config(None, ["data.align_event=go_cue", "data.mode=trials", "data.train_anchor_fraction=0.5"])
    plain = prepare_data(cfg.data, recordings=[rec]).train.anchors
    # +-1.5 s of jitter: [go - 0.5 - 1.5, go + 1 + 1.5] reaches into both neighbouring trials
    cfg = load_config(None, ["data.align_event=go_cue", "data.mode=trials", "data.train_anchor_fraction=0.5",
                             "data.train_anchor_jitter_ms=1500"])
    with pytest.warns(UserWarning, match="jittered anchor windows .* lower data.train_anchor_jitter_ms"):
        jittered = prepare_data(cfg.data, recordings=[rec]).train.anchors
    sp = prepare_data(cfg.data, recordings=[rec]).splits
    split_of = {int(i): name for name in SPLITS for i in sp.trials(name, 0)}
    go = rec.trials.events["go_cue"]
    for w in plain:
        i = int(np.argmin(abs(go - w.onset)))
        neighbours_train = all(split_of.get(j, "train") == "train" for j in (i - 1, i + 1))
        assert (w in jittered) == neighbours_train


def test_when_every_anchor_is_dropped_the_error_says_so():
    from neurohorizon.config import load_config
    from neurohorizon.data.prepare import prepare_data

    rec = trial_rec(per_condition=(10, 10, 10))
    cfg = load_config(None, ["data.align_event=go_cue", "data.mode=trials", "data.train_anchor_fraction=0.5",
                             "data.train_anchor_jitter_ms=100000"])
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="every training anchor.*lower data.train_anchor"):
        prepare_data(cfg.data, recordings=[rec])


def test_fractions_that_do_not_sum_to_one_are_refused():
    rec = cont_rec(duration=600.0)
    with pytest.raises(ValueError, match=r"must sum to 1, got \(0.5, 0.5, 0.5\)"):
        make_splits([rec], SPEC, fractions=(0.5, 0.5, 0.5))
    assert make_splits([rec], SPEC, fractions=(0.8, 0.1, 0.1)).mode == "continuous"
