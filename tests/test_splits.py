import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neurohorizon.data.recording import Recording, Trials
from neurohorizon.data.splits import SPLITS, Splits, make_splits, windows_for_split
from neurohorizon.data.windows import WindowSpec

SPEC = WindowSpec(bin_size=0.02, context_bins=25, horizon_bins=50)


def cont_rec(sid="a", duration=300.0, n_units=3, seed=0):
    rng = np.random.default_rng(seed)
    n = int(5 * n_units * duration)
    return Recording.from_arrays(
        session_id=sid,
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
            wins[s] = _spans(windows_for_split(recs, splits, s, spec, seed=seed, n_random=200), spec)
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


def test_trial_windows_and_trials_as_continuous():
    rec = trial_rec()
    sp = make_splits([rec], SPEC, seed=0)
    w = windows_for_split([rec], sp, "test", SPEC, event="go_cue")
    test_trials = sp.trials("test", 0)
    assert [x.onset for x in w] == pytest.approx(rec.trials.events["go_cue"][test_trials])
    # no event: windows stay inside the split's trials
    _check_no_leak([rec], sp, WindowSpec(0.02, 25, 25), seed=0)
    with pytest.raises(ValueError, match="split 'train' is empty.*1500 ms window"):
        windows_for_split([rec], sp, "train", SPEC)  # 2 s trials cannot hold... wait
