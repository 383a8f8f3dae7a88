
import numpy as np
import pytest
import torch

from neurohorizon.data.binning import BinningError
from neurohorizon.data.dataset import ForecastDataset, collate, resolve_events
from neurohorizon.data.recording import Recording, Trials
from neurohorizon.data.windows import (
    UnitVocab,
    Window,
    WindowSpec,
    random_windows,
    sequential_windows,
    trial_windows,
)

SPEC = WindowSpec(bin_size=0.02, context_bins=25, horizon_bins=50)


def make_rec(sid="a", n_units=5, duration=20.0, rate=10.0, seed=0, true_rate=None, trials=None):
    rng = np.random.default_rng(seed)
    n = rng.poisson(rate * n_units * duration)
    times = np.sort(rng.random(n) * duration)
    units = rng.integers(0, n_units, n)
    return Recording.from_arrays(
        session_id=sid,
        spike_times=times,
        unit_ids=np.array([f"u{i}" for i in range(n_units)]),
        spike_units=units,
        domain=(0.0, duration),
        true_rate=true_rate,
        trials=trials,
    )


# ------------------------------------------------------------------ spec/vocab
def test_window_spec_from_ms():
    spec = WindowSpec.from_ms(context_ms=500, horizon_ms=240, bin_size_ms=20)
    assert (spec.context_bins, spec.horizon_bins) == (25, 12)
    assert spec.context_s == pytest.approx(0.5) and spec.horizon_s == pytest.approx(0.24)
    assert spec.total_s == pytest.approx(0.74)
    with pytest.raises(BinningError, match="horizon of 250 ms"):
        WindowSpec.from_ms(context_ms=500, horizon_ms=250, bin_size_ms=20)


def test_unit_vocab(tmp_path):
    vocab = UnitVocab.from_recordings([make_rec("b", 2), make_rec("a", 3)])
    assert vocab.tokens == ["NA", "a/u0", "a/u1", "a/u2", "b/u0", "b/u1"]
    np.testing.assert_array_equal(vocab.index(["b/u1", "a/u0"]), [5, 1])
    assert vocab.index(["a/u0"]).dtype == np.int64
    with pytest.raises(KeyError, match=r"c/u9.*c/u8|c/u8.*c/u9"):
        vocab.index(["a/u0", "c/u9", "c/u8"])
    np.testing.assert_array_equal(vocab.known(["a/u0", "zz", "NA"]), [True, False, False])
    back = UnitVocab.from_json(vocab.to_json(tmp_path / "vocab.json"))
    assert back.tokens == vocab.tokens


# ----------------------------------------------------------------- sampling
def test_random_windows_fit_inside_intervals_and_are_deterministic():
    ivs = [(0, 0.0, 3.0), (1, 10.0, 11.6), (1, 20.0, 20.5)]  # last one is too short
    w1 = random_windows(ivs, SPEC, 500, np.random.default_rng(3))
    w2 = random_windows(ivs, SPEC, 500, np.random.default_rng(3))
    assert w1 == w2 and len(w1) == 500
    for w in w1:
        ok = [
            r == w.rec and w.onset - SPEC.context_s >= s - 1e-9 and w.onset + SPEC.horizon_s <= e
            for r, s, e in ivs
        ]
        assert any(ok)
    # drawn proportionally to usable length: 1.5 s vs 0.1 s of onsets
    frac0 = np.mean([w.rec == 0 for w in w1])
    assert 0.85 < frac0 < 0.98
    onsets = np.array([w.onset for w in w1])
    assert len(np.unique(np.round(onsets / 0.02, 6) % 1)) > 100  # not snapped to the bin grid


def test_random_windows_on_grid_and_errors():
    w = random_windows([(0, 0.0, 5.0)], SPEC, 200, np.random.default_rng(0), grid=0.005)
    k = np.array([x.onset for x in w]) / 0.005
    np.testing.assert_allclose(k, np.round(k), atol=1e-9)
    with pytest.raises(BinningError, match=r"1500 ms window.*longest is 1000 ms.*rec-a"):
        random_windows([(0, 0.0, 1.0)], SPEC, 5, np.random.default_rng(0), names=["rec-a"])


def test_sequential_windows_tile_without_overlap():
    w = sequential_windows([(0, 1.0, 7.9), (2, 0.0, 1.0)], SPEC)  # second too short: skipped
    assert [x.rec for x in w] == [0] * 4
    onsets = np.array([x.onset for x in w])
    np.testing.assert_allclose(onsets, 1.0 + 0.5 + 1.5 * np.arange(4))
    assert onsets[-1] + SPEC.horizon_s <= 7.9
    with pytest.raises(BinningError):
        sequential_windows([(0, 0.0, 1.0)], SPEC)


def test_trial_windows():
    trials = Trials(
        start=np.array([1.0, 4.0, 8.0, 12.0]),
        end=np.array([3.0, 6.0, 10.0, 14.0]),
        condition=np.array(["right", "left", "right", "up"]),
        events={"go_cue": np.array([1.7, 4.7, np.nan, 12.9])},
    )
    rec = make_rec(trials=trials)
    with pytest.warns(UserWarning, match="skipping 1 trial"):
        w = trial_windows(rec, SPEC, "go_cue", offset_s=0.1, rec_index=3)
    assert [x.onset for x in w] == pytest.approx([1.8, 4.8, 13.0])
    assert [x.condition for x in w] == [1, 0, 2]  # sorted labels: left, right, up
    assert {x.rec for x in w} == {3}
    w = trial_windows(rec, SPEC, "start", trials=[1])
    assert w == [Window(0, 4.0, 0)]
    with pytest.raises(BinningError, match=r"trial 0 window.*leaves the recording domain"):
        trial_windows(rec, SPEC, "start", offset_s=-0.9)
    with pytest.raises(ValueError, match="no trial event 'move'"):
        trial_windows(rec, SPEC, "move")


def test_trial_windows_never_cross_unrecorded_time():
    """A recording stored as separate pieces (e.g. one per trial, as pmd is): a window that runs
    past its piece into the gap would score unrecorded bins as zero counts, so it is skipped."""
    from torch_brain.data import Interval

    trials = Trials(start=np.array([0.0, 3.0, 6.0]), end=np.array([2.0, 5.0, 8.5]),
                    condition=np.array(["a", "b", "a"]), events={"go_cue": np.array([1.2, 4.0, 6.8])})
    base = make_rec(duration=8.5)
    rec = Recording.from_arrays(session_id="gaps", spike_times=base.spike_times, spike_units=base.spike_units,
                                unit_ids=base.unit_ids, trials=trials,
                                domain=Interval(start=trials.start, end=trials.end))
    # 1.5 s windows: trial 1's runs from 3.5 to 5.0 s, its piece's end; trial 0's would reach 2.2 s
    with pytest.warns(UserWarning, match=r"skipping 1 trial\(s\) \(e.g. trial 0\) whose 1500 ms window .*"
                                         r"crosses unrecorded time \(the recording is 3 separate intervals\)"):
        w = trial_windows(rec, SPEC, "go_cue")
    assert [x.onset for x in w] == pytest.approx([4.0, 6.8])
    # jittered anchors stay inside their own piece, never in the gap after it
    vocab = UnitVocab.from_recordings([rec])
    ds = ForecastDataset([rec], windows=None, spec=SPEC, vocab=vocab, anchors=w, anchor_fraction=1.0,
                         anchor_jitter_s=0.3, random_windows_per_epoch=100,
                         intervals=[(0, 3.0, 5.0), (0, 6.0, 8.5)], seed=0)
    assert len(ds) == 100
    for x in ds.windows:
        assert rec.span_of(x.onset - SPEC.context_s, x.onset + SPEC.horizon_s) is not None
    assert min(x.onset for x in ds.windows) < 3.8 and max(x.onset for x in ds.windows) > 7.0  # jittered


# ----------------------------------------------------------------- dataset
def _reference_counts(rec, onset, lo_bin, hi_bin):
    edges = onset + np.arange(lo_bin, hi_bin + 1) * 0.02
    t, u = rec.spike_times, rec.spike_units
    out = np.zeros((hi_bin - lo_bin, rec.n_units))
    for i in range(hi_bin - lo_bin):
        for n in range(rec.n_units):
            out[i, n] = np.sum((t >= edges[i]) & (t < edges[i + 1]) & (u == n))
    return out


def test_dataset_item_matches_independent_binning():
    recs = [make_rec("a", 4, seed=1), make_rec("b", 6, seed=2)]
    vocab = UnitVocab.from_recordings(recs)
    windows = [Window(0, 3.21357, -1), Window(1, 10.0, 2)]
    ds = ForecastDataset(recs, windows=windows, spec=SPEC, vocab=vocab)
    for w in windows:
        it = ds[windows.index(w)]
        rec = recs[w.rec]
        np.testing.assert_array_equal(it["context_counts"], _reference_counts(rec, w.onset, -25, 0))
        np.testing.assert_array_equal(it["target_counts"], _reference_counts(rec, w.onset, 0, 50))
        np.testing.assert_array_equal(it["units"], vocab.index(rec.unit_ids))
        assert it["start"] == w.onset and it["session"] == w.rec and it["condition"] == w.condition
        st = it["spike_times"]
        assert st.min() >= -0.5 and st.max() < 0
        assert len(st) == it["context_counts"].sum()
        # per-unit spike tokens agree with the binned context
        for col, vid in enumerate(it["units"]):
            assert (it["spike_units"] == vid).sum() == it["context_counts"][:, col].sum()
        assert len(it["units"]) == rec.n_units
        assert it["true_expected"].shape == (50, rec.n_units)
        assert np.isnan(it["true_expected"]).all() and np.isnan(it["context_true_expected"]).all()


def test_true_expected_integrates_the_fine_rate():
    fs, dur, n = 200.0, 20.0, 3
    t = np.arange(int(dur * fs)) / fs
    rates = np.stack([5 + 4 * np.sin(2 * np.pi * (k + 1) * t) for k in range(n)], 1) + 1.0
    rec = make_rec("a", n, duration=dur, true_rate=(rates, fs, 0.0))
    ds = ForecastDataset(
        [rec], windows=[Window(0, 5.0), Window(0, 7.3456)], spec=SPEC, vocab=UnitVocab.from_recordings([rec])
    )
    it = ds[0]
    # independent: explicit sum of rate * dt over the 4 fine samples of each 20 ms bin
    ref = rates[int(5.0 * fs) : int(6.0 * fs)].reshape(50, 4, n).sum(1) / fs
    np.testing.assert_allclose(it["true_expected"], ref, rtol=1e-5)
    ref_ctx = rates[int(4.5 * fs) : int(5.0 * fs)].reshape(25, 4, n).sum(1) / fs
    np.testing.assert_allclose(it["context_true_expected"], ref_ctx, rtol=1e-5)
    with pytest.raises(BinningError, match="not on the true_rate grid"):
        ds[1]


def test_collate_pads_units_and_spikes():
    recs = [make_rec("a", 3, seed=1), make_rec("b", 7, seed=2)]
    vocab = UnitVocab.from_recordings(recs)
    ds = ForecastDataset(recs, windows=[Window(0, 2.0), Window(1, 5.0, 1)], spec=SPEC, vocab=vocab)
    items = [ds[0], ds[1]]
    b = collate(items)
    S = max(len(it["spike_times"]) for it in items)
    assert b["spike_times"].shape == (2, S) and b["spike_times"].dtype == torch.float32
    assert b["spike_units"].dtype == torch.int64 and b["spike_mask"].dtype == torch.bool
    assert b["context_counts"].shape == (2, 25, 7) and b["target_counts"].shape == (2, 50, 7)
    assert b["units"].shape == (2, 7) and b["unit_mask"].sum().item() == 10
    assert (b["units"][0, 3:] == 0).all() and (b["target_counts"][0, :, 3:] == 0).all()
    assert b["spike_mask"][0].sum().item() == len(items[0]["spike_times"])
    assert (b["spike_units"][~b["spike_mask"]] == 0).all()
    assert b["start"].dtype == torch.float64 and b["start"].tolist() == [2.0, 5.0]
    assert b["condition"].tolist() == [-1, 1] and b["session"].tolist() == [0, 1]
    assert b["true_expected"].shape == (2, 50, 7) and torch.isnan(b["true_expected"]).all()


def test_random_windows_resampled_each_epoch():
    rec = make_rec("a", 5, duration=30.0)
    vocab = UnitVocab.from_recordings([rec])
    ds = ForecastDataset(
        [rec], windows=None, spec=SPEC, vocab=vocab, random_windows_per_epoch=64, intervals=[(0, 0.0, 30.0)], seed=7
    )
    first = list(ds.windows)
    ds.resample(1)
    assert ds.windows != first and len(ds) == 64
    again = list(ds.windows)
    ds.resample(1)
    assert ds.windows == again
    batch = collate([ds[i] for i in range(16)])
    assert batch["target_counts"].shape == (16, 50, 5)
    assert batch["start"].tolist() == [w.onset for w in ds.windows[:16]]



def test_anchored_training_windows_mix_jittered_anchors_into_each_epoch():
    rec = make_rec("a", 5, duration=30.0)
    vocab = UnitVocab.from_recordings([rec])
    anchors = [Window(0, t, c) for t, c in ((0.52, 0), (5.0, 1), (12.34, 2), (28.9, 0))]
    common = dict(random_windows_per_epoch=200, intervals=[(0, 0.0, 30.0)], seed=3, grid=0.005)
    plain = ForecastDataset([rec], windows=None, spec=SPEC, vocab=vocab, **common)
    ds = ForecastDataset([rec], windows=None, spec=SPEC, vocab=vocab, anchors=anchors, anchor_fraction=0.25,
                         anchor_jitter_s=0.05, **common)
    assert ds.windows[:150] == random_windows([(0, 0.0, 30.0)], SPEC, 150, np.random.default_rng(3), grid=0.005)
    tail = ds.windows[150:]
    assert len(ds) == 200 and len(tail) == 50
    lo, hi = SPEC.context_s, 30.0 - SPEC.horizon_s  # onsets whose whole window is recorded
    for w in tail:  # near one anchor, its condition kept, inside the recording
        a = min(anchors, key=lambda a: abs(a.onset - w.onset))
        assert w.condition == a.condition and abs(w.onset - a.onset) <= 0.05 + 1e-9
        assert lo - 1e-9 <= w.onset <= hi + 1e-9
        if lo + 1e-9 < w.onset:  # not clipped: shifted by whole grid steps
            steps = (w.onset - a.onset) / 0.005
            assert abs(steps - round(steps)) < 1e-6
    assert any(abs(w.onset - lo) < 1e-9 for w in tail)  # the anchor at 0.52 s was clipped
    assert len({w.onset for w in tail}) > 8  # jittered, not four repeated windows
    ds.resample(2)
    again = list(ds.windows)
    ds.resample(2)
    assert ds.windows == again and again != tail
    assert plain.windows != ds.windows
    with pytest.raises(ValueError, match="anchor_fraction must be in"):
        ForecastDataset([rec], windows=None, spec=SPEC, vocab=vocab, anchors=anchors, anchor_fraction=1.5, **common)
    with pytest.raises(ValueError, match="needs anchor windows"):
        ForecastDataset([rec], windows=None, spec=SPEC, vocab=vocab, anchor_fraction=0.5, **common)

def test_oracle_matches_synthetic_generator_on_split_windows():
    synthetic = pytest.importorskip("neurohorizon.data.synthetic")
    from neurohorizon.data.splits import make_splits, windows_for_split

    rec = synthetic.generate("lorenz", seed=0, n_neurons=8, duration=60.0)
    splits = make_splits([rec], SPEC, seed=0)
    vocab = UnitVocab.from_recordings([rec])
    for split in ("train", "test"):  # random onsets (drawn on the 5 ms grid) and tiled ones
        windows = windows_for_split([rec], splits, split, SPEC, seed=2, n_random=20)
        ds = ForecastDataset([rec], windows=windows, spec=SPEC, vocab=vocab)
        for i in range(0, len(ds), max(1, len(ds) // 5)):
            it, w = ds[i], windows[i]
            ref = synthetic.expected_counts(rec, start=w.onset, n_steps=50)
            np.testing.assert_allclose(it["true_expected"], ref, rtol=1e-5, atol=1e-7)
            ref_ctx = synthetic.expected_counts(rec, start=w.onset - SPEC.context_s, n_steps=25)
            np.testing.assert_allclose(it["context_true_expected"], ref_ctx, rtol=1e-5, atol=1e-7)


def test_condition_typed_events_tell_which_condition_was_cued():
    trials = Trials(start=np.array([1.0, 4.0, 9.0]), end=np.array([3.0, 6.0, 11.0]),
                    condition=np.array(["left", "right", "left"]),
                    events={"go_cue": np.array([1.7, 4.7, 9.7])})
    rec = make_rec(trials=trials)
    events = resolve_events(["target_on", "go_cue@condition"], [rec])
    assert events == ["target_on", "go_cue@condition=left", "go_cue@condition=right"]
    assert resolve_events(events, [rec]) == events  # already expanded: unchanged (resume, load)
    with pytest.raises(ValueError, match=r"data.events lists \['go_cue'\] more than once"):
        resolve_events(["go_cue", "go_cue"], [rec])
    ds = ForecastDataset([rec], windows=[Window(0, t) for t in (1.7, 4.7, 9.7)], spec=SPEC, vocab=UnitVocab.from_recordings([rec]),
                         events=events[1:])
    assert [list(ds[i]["event_types"]) for i in range(3)] == [[1], [2], [1]]
    with pytest.raises(ValueError, match="no recording has trial condition labels"):
        resolve_events(["go_cue@condition"], [make_rec(trials=Trials(
            start=trials.start, end=trials.end, events=trials.events))])
    with pytest.raises(ValueError, match="needs trial condition labels; this data has none"):
        ForecastDataset([make_rec(trials=Trials(start=trials.start, end=trials.end, events=trials.events))],
                        windows=[Window(0, 1.7)], spec=SPEC, vocab=UnitVocab.from_recordings([rec]), events=events[1:])


def test_events_in_context_are_returned_with_their_types():
    trials = Trials(
        start=np.array([1.0, 4.0]),
        end=np.array([3.0, 6.0]),
        condition=np.array(["a", "b"]),
        events={"target_on": np.array([1.2, 4.3]), "go_cue": np.array([1.7, np.nan])},
    )
    rec = make_rec(trials=trials)
    vocab = UnitVocab.from_recordings([rec])
    # onset 1.7 (the go cue itself counts as happened); context [1.2, 1.7] holds both events
    ds = ForecastDataset([rec], windows=[Window(0, 1.7), Window(0, 4.7), Window(0, 10.0)], spec=SPEC, vocab=vocab,
                         events=["target_on", "go_cue"])
    it = ds[0]
    assert it["event_times"] == pytest.approx([-0.5, 0.0], abs=1e-6)
    assert list(it["event_types"]) == [1, 2]
    assert list(ds[1]["event_types"]) == [1]  # NaN go cue dropped; target at -0.4 s
    assert ds[1]["event_times"] == pytest.approx([-0.4], abs=1e-6)
    assert len(ds[2]["event_times"]) == 0  # no event in [9.5, 10.0]
    b = collate([ds[0], ds[1], ds[2]])
    assert b["event_types"].tolist() == [[1, 2], [1, 0], [0, 0]]
    assert b["event_times"][1, 1] == 0.0
    # without events configured, batches still carry an all-padding column
    assert collate([ForecastDataset([rec], windows=[Window(0, 1.7)], spec=SPEC, vocab=vocab)[0]])["event_types"].tolist() == [[0]]
    with pytest.raises(ValueError, match=r"no trial event\(s\) \['move'\].*available: \['go_cue', 'target_on'\]"):
        ForecastDataset([rec], windows=[Window(0, 1.7)], spec=SPEC, vocab=vocab, events=["move"])
    with pytest.raises(ValueError, match="no trial event"):
        ForecastDataset([make_rec()], windows=[Window(0, 1.7)], spec=SPEC, vocab=vocab, events=["go_cue"])
