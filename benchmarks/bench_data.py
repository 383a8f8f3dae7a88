"""Data-pipeline throughput: whole-recording binning and DataLoader windows/s.

    python benchmarks/bench_data.py [--out out.json]     (default benchmarks/results/bench_data.json)

(a) bins a synthetic 1-hour, 300-neuron recording (5-10 Hz) into 20 ms bins with
    `bin_recording` and with a per-neuron numpy.histogram loop (reference), checks they
    agree, and reports spikes/s for both;
(b) windows/s delivered by the DataLoader (batch 32, 100 neurons, 25 + 50 bins, random
    continuous windows, one process);
(c) windows/s of the demo's training windows (trials, task events, the leave-one-out prior:
    factors and slow paths since demo.yaml uses them), two epochs, with the prior's per-trial table
    cache vs each window's rows computed anew (the code before the cache), checked equal;
(d) the same windows' factor prior inferred one window at a time vs a batch of 16 at once (what
    the trainer's DataLoader asks for), checked equal.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from neurohorizon.data.binning import bin_recording
from neurohorizon.data.dataset import ForecastDataset, collate
from neurohorizon.data.recording import Recording
from neurohorizon.data.windows import UnitVocab, WindowSpec


def synthetic(n_units: int, duration: float, seed: int = 0) -> Recording:
    rng = np.random.default_rng(seed)
    rates = rng.uniform(5, 10, n_units)
    counts = rng.poisson(rates * duration)
    units = np.repeat(np.arange(n_units), counts)
    times = rng.random(len(units)) * duration
    order = np.argsort(times)
    return Recording.from_arrays(
        session_id="bench",
        spike_times=times[order],
        unit_ids=np.arange(n_units),
        spike_units=units[order],
        domain=(0.0, duration),
    )


def best_of(fn, repeats: int = 3) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def histogram_loop(rec: Recording, bin_size: float) -> np.ndarray:
    n_steps = int(np.floor(rec.duration / bin_size + 1e-9))
    edges = rec.domain[0] + np.arange(n_steps + 1) * bin_size
    times, units = rec.spike_times, rec.spike_units
    times_ok = times < edges[-1]  # np.histogram's last bin is closed
    out = np.zeros((n_steps, rec.n_units), np.int32)
    for u in range(rec.n_units):
        out[:, u] = np.histogram(times[times_ok & (units == u)], bins=edges)[0]
    return out


def bench_binning() -> dict:
    rec = synthetic(300, 3600.0)
    n_spikes = len(rec.spike_times)
    t_ours, ours = best_of(lambda: bin_recording(rec, 0.02))
    t_ref, ref = best_of(lambda: histogram_loop(rec, 0.02), repeats=1)
    if not np.array_equal(ours, ref):
        raise AssertionError("bin_recording disagrees with the numpy.histogram reference")
    return {
        "recording": "1 h, 300 neurons, 5-10 Hz, 20 ms bins",
        "n_spikes": n_spikes,
        "bins": list(ours.shape),
        "bin_recording_s": t_ours,
        "histogram_loop_s": t_ref,
        "bin_recording_spikes_per_s": n_spikes / t_ours,
        "histogram_loop_spikes_per_s": n_spikes / t_ref,
        "speedup": t_ref / t_ours,
    }


def bench_loader(n_windows: int = 8192) -> dict:
    rec = synthetic(100, 600.0, seed=1)
    spec = WindowSpec(0.02, 25, 50)
    ds = ForecastDataset([rec], spec=spec, vocab=UnitVocab.from_recordings([rec]),
                         random_windows_per_epoch=n_windows, intervals=[(0, 0.0, 600.0)])

    def epoch():  # as the trainer does it: redraw the windows, shuffle, collate batches of 32
        ds.resample(0)
        order = np.random.default_rng(0).permutation(len(ds))
        return sum(len(collate([ds[int(i)] for i in order[lo:lo + 32]])["start"]) for lo in range(0, len(ds), 32))

    seconds, n = best_of(epoch)
    return {
        "setting": "batch 32, 100 neurons, context 25 + horizon 50 bins, random windows, num_workers=0",
        "windows": n,
        "seconds": seconds,
        "windows_per_s": n / seconds,
    }


def demo_training_windows():
    """The demo's training dataset: its prior (demo.yaml: factors and paths) is the leave-one-out one."""
    from neurohorizon.config import load_config
    from neurohorizon.data.prepare import prepare_data

    demo = Path(__file__).parents[1] / "src" / "neurohorizon" / "configs" / "demo.yaml"
    return prepare_data(load_config(demo, []).data).train


def bench_prior_windows(train, n_windows: int = 1024) -> dict:
    loo = getattr(train.prior, "base", train.prior)  # the leave-one-out table (behind a factor prior)

    def two_epochs():  # fresh windows each epoch, as the trainer draws them; the last epoch's priors
        for epoch in range(2):
            train.resample(epoch)
            priors = [train[i]["prior_counts"] for i in range(n_windows)]
        return priors

    def timed(uncached: bool):
        loo._tables.clear()
        loo._table_bytes = 0
        if uncached:
            loo._trial_rows = lambda rec, ri, j, units, c, r: loo._without_trial(rec, ri, j, units, c, r)
        try:
            t0 = time.perf_counter()
            priors = two_epochs()
            return time.perf_counter() - t0, priors
        finally:
            loo.__dict__.pop("_trial_rows", None)

    (t_direct, ref), (t_cached, got) = timed(True), timed(False)
    if not all(np.array_equal(a, b) for a, b in zip(ref, got)):
        raise AssertionError("the cached leave-one-out prior disagrees with the direct computation")
    return {
        "setting": f"demo.yaml training windows (synthetic reach, 100 neurons, {type(train.prior).__name__}), "
                   f"2 x {n_windows} windows, one by one",
        "windows_per_s_cached": 2 * n_windows / t_cached,
        "windows_per_s_direct": 2 * n_windows / t_direct,
        "speedup": t_direct / t_cached,
    }


def bench_prior_batches(train, n_windows: int = 1024, batch: int = 16) -> dict:
    """The factor prior's latents inferred window by window (`train[i]`) vs for a training batch at
    once (`__getitems__`, what the DataLoader calls), tables cached in both, checked equal."""
    train.resample(0)
    index = list(range(n_windows))
    for lo in range(0, n_windows, batch):  # warm the leave-one-out table cache
        train.__getitems__(index[lo:lo + batch])
    t0 = time.perf_counter()
    alone = [train[i]["prior_counts"] for i in index]
    t_alone = time.perf_counter() - t0
    t0 = time.perf_counter()
    batched = [it["prior_counts"] for lo in range(0, n_windows, batch) for it in train.__getitems__(index[lo:lo + batch])]
    t_batched = time.perf_counter() - t0
    if not all(np.allclose(a, b, rtol=1e-5) for a, b in zip(alone, batched)):
        raise AssertionError("the batched factor prior disagrees with the window-by-window one")
    return {
        "setting": f"demo.yaml training windows, {n_windows} windows, batches of {batch}",
        "ms_per_window_one_by_one": 1e3 * t_alone / n_windows,
        "ms_per_window_batched": 1e3 * t_batched / n_windows,
        "speedup": t_alone / t_batched,
    }


def bench_forecast_window(train, repeats: int = 10) -> dict:
    """What each `forecast()` call pays to cut its one window: a new ForecastDataset over the demo
    recording and its item (context, prior, true expected counts). The true expected counts are
    summed over the window's own samples; the previous code built a cumulative sum of the whole
    recording's true rates for every new dataset, timed here beside it and checked equal."""
    from neurohorizon.data.dataset import ForecastDataset
    from neurohorizon.data.windows import Window

    rec = train.recordings[0]
    onset = float(rec.trials.events["go_cue"][7])

    def item():
        return ForecastDataset([rec], windows=[Window(0, onset)], spec=train.spec, vocab=train.vocab,
                               events=train.events, prior=train.prior)[0]

    def cumsum_expected():
        tr = rec.data.true_rate
        rates = np.asarray(tr.rates, dtype=np.float64).reshape(len(tr.rates), -1)
        cum = np.zeros((len(rates) + 1, rates.shape[1]))
        np.cumsum(rates / float(tr.sampling_rate), axis=0, out=cum[1:])
        edges = onset + np.arange(train.spec.horizon_bins + 1) * train.spec.bin_size
        k = np.round((edges - float(np.asarray(tr.domain.start).min())) * float(tr.sampling_rate)).astype(int)
        return np.diff(cum[k], axis=0)

    t_item, it = best_of(item, repeats)
    t_cumsum, ref = best_of(cumsum_expected, repeats)
    if not np.allclose(it["true_expected"], ref, rtol=1e-5):
        raise AssertionError("the window's summed true rates disagree with the whole-recording cumulative sum")
    return {
        "setting": f"one demo go-cue window, a new dataset per call as forecast() makes it, best of {repeats}",
        "ms_per_call": 1e3 * t_item,
        "ms_whole_recording_cumsum": 1e3 * t_cumsum,
        "previous_ms_per_call_estimate": 1e3 * (t_item + t_cumsum),
        "speedup": (t_item + t_cumsum) / t_item,
    }


def main(out: str | None = None) -> dict:
    torch.set_num_threads(1)
    result = {
        "machine": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": torch.__version__,
            "cpus": os.cpu_count(),
        },
        "binning": bench_binning(),
        "loader": bench_loader(),
    }
    train = demo_training_windows()
    result["prior_windows"] = bench_prior_windows(train)
    result["prior_batches"] = bench_prior_batches(train)
    result["forecast_window"] = bench_forecast_window(train)
    path = Path(out) if out else Path(__file__).parent / "results" / "bench_data.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="JSON path (default benchmarks/results/bench_data.json, the committed run)")
    main(parser.parse_args().out)
