"""Forecast from a trained run: the Python function users call, and `neurohorizon forecast`.

    from neurohorizon import forecast
    fc = forecast("runs/demo-.../demo-...", recording, start=12.3, n_samples=20)
    fc.mean          # (T, N) expected counts per 20 ms bin after `start`
    fc.samples       # (S, T, N) sampled trajectories
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from neurohorizon.data.binning import BinningError
from neurohorizon.data.dataset import ForecastDataset, collate
from neurohorizon.data.recording import Recording
from neurohorizon.data.windows import Window
from neurohorizon.evaluation.loading import LoadedRun, keep_units, load_run, match_units
from neurohorizon.evaluation.predict import trajectory_samples
from neurohorizon.model.feedback import WindowGenerators


@dataclass
class Forecast:
    session_id: str
    unit_ids: np.ndarray  # (N,)
    onset: float  # s, start of the forecast
    bin_edges: np.ndarray  # (T + 1,) absolute times, s
    mean: np.ndarray  # (T, N) expected counts
    samples: np.ndarray  # (S, T, N) sampled trajectories
    context: np.ndarray  # (Tc, N) observed counts before the onset
    actual: np.ndarray  # (T, N) observed counts after the onset (NaN beyond the recording)

    def save_npz(self, path: str | Path) -> Path:
        path = Path(path)
        np.savez_compressed(path, **{k: np.asarray(v) for k, v in vars(self).items()})
        return path


def forecast(run: str | Path | LoadedRun, recording: Recording, *, start: float | None = None,
             n_samples: int = 10, seed: int | None = None, unknown_units: str = "error",
             compile: bool = False, compile_chunk: int = 1, cuda_graph: bool = False) -> Forecast:
    """Forecast the bins after `start` (default: the end of the recording) from the preceding context.

    The sampled trajectories depend on `seed` (default: the run's train.seed, as `evaluate` uses),
    `n_samples`, the session and the onset only, so with evaluate's number of samples (its --samples,
    20 by default) this reproduces `evaluate`'s draws for a window it scored.

    compile=True traces the rollout step with torch.compile on the first call (seconds) and
    makes later calls of the same shape faster: for repeated, closed-loop forecasting.
    compile_chunk=K (with compile=True, for a run trained with feedback "mean") decodes K bins
    per compiled call: faster again on a CPU, for about K times the first call's compile time.
    cuda_graph=True (a run loaded on a GPU) records the step as a CUDA graph on the first call
    and replays it after: on an H100 a 50-bin forecast takes ~13 ms instead of ~67 ms."""
    run = run if isinstance(run, LoadedRun) else load_run(run)
    recording = match_units([recording], run.vocab, unknown_units)[0]
    from neurohorizon.data.prepare import window_spec

    spec = window_spec(run.cfg.data)
    d0, d1 = recording.domain
    start = d1 if start is None else float(start)
    if not (start - spec.context_s >= d0 - 1e-9 and start <= d1 + 1e-9):  # NaN fails too
        why = ("it is past the recording's end" if start > d1 else f"the earliest onset is {d0 + spec.context_s:.3f} s"
               if start - spec.context_s < d0 else "it is not a number")
        raise ValueError(
            f"{recording.source}: forecast onset {start:.3f} s needs {spec.context_s * 1000:g} ms of "
            f"context inside the recording [{d0:.3f}, {d1:.3f}] s ({why}; the latest onset is {d1:.3f} s)"
        )
    if recording.span_of(start - spec.context_s, start) is None:
        raise ValueError(f"{recording.source}: the {spec.context_s * 1000:g} ms context before {start:.3f} s "
                         f"crosses unrecorded time (the recording is {len(recording.recorded_spans)} separate "
                         "intervals, e.g. trials); "
                         "choose an onset whose context lies inside one of them")
    item = _window_item(run, recording, spec, start)
    batch = {k: v.to(run.device) if torch.is_tensor(v) else v for k, v in collate([item]).items()}
    seed = run.cfg.train.seed if seed is None else seed
    generator = WindowGenerators.for_batch(batch, [recording.session_id], seed=seed, device=run.device)
    sampled = run.cfg.sampling.feedback == "sample"
    with torch.no_grad():
        out = run.model.rollout(batch, run.likelihood, n_steps=spec.horizon_bins, feedback=run.cfg.sampling.feedback,
                                n_samples=n_samples if sampled else 1, generator=generator,
                                compile=compile, compile_chunk=compile_chunk, cuda_graph=cuda_graph)
        samples = trajectory_samples(out, run.likelihood, sampled=sampled, n_samples=n_samples, generator=generator)
    edges = start + np.arange(spec.horizon_bins + 1) * spec.bin_size
    actual = item["target_counts"].astype(float)
    # bins not wholly inside recorded time were not observed: NaN, not a count of 0
    unrecorded = [recording.span_of(a, b) is None for a, b in zip(edges[:-1], edges[1:])]
    actual[np.asarray(unrecorded)] = np.nan
    return Forecast(
        session_id=recording.session_id, unit_ids=recording.unit_ids, onset=start, bin_edges=edges,
        mean=out["mean"].float().mean(0)[0].cpu().numpy(), samples=samples[:, 0].cpu().numpy(),
        context=item["context_counts"], actual=actual,
    )


def _window_item(run: LoadedRun, recording: Recording, spec, start: float) -> dict:
    """The dataset item of the window at `start`. A forecast needs no synthetic true rates: where
    the window runs past their end or starts off their grid, it is cut without them (a copy of
    the recording, so only then)."""
    def item(rec):
        return ForecastDataset([rec], windows=[Window(0, start)], spec=spec, vocab=run.vocab,
                               events=run.cfg.data.events, prior=run.prior)[0]

    try:
        return item(recording)
    except BinningError:
        if not recording.has_true_rate:
            raise
        return item(keep_units(recording, np.ones(recording.n_units, bool), drop_truth=True))


def forecast_to_files(run_dir: Path, *, data: str | None, start: float | None, n_samples: int,
                      options: dict | None = None, session: str | None = None, unknown_units: str = "error",
                      seed: int | None = None, device: str = "auto", log=print) -> Path:
    """`neurohorizon forecast`: forecast.npz and forecast.png in a new folder of the run. `data`
    None forecasts the run's own data (its source and source options)."""
    from neurohorizon.data.sources import load_data
    from neurohorizon.evaluation import figures
    from neurohorizon.runs import new_run_dir, removed_on_failure

    run = load_run(run_dir, device=device)
    if data is None:
        data, options = run.cfg.data.source, run.cfg.data.options
    recordings = load_data(data, **(options or {}))
    if session is not None:
        ids = [r.session_id for r in recordings]
        recordings = [r for r in recordings if r.session_id == session]
        if not recordings:
            raise ValueError(f"{data}: no session {session!r} (sessions: {ids})")
    elif len(recordings) > 1:
        ids = [r.session_id for r in recordings]
        raise ValueError(f"{data} holds {len(ids)} sessions; choose one with --session ({ids[:5]} ...)")
    fc = forecast(run, recordings[0], start=start, n_samples=n_samples, seed=seed, unknown_units=unknown_units)
    out = new_run_dir(Path(run_dir) / "forecasts", "forecast")
    with removed_on_failure(out):  # no half-written forecast stays behind
        bin_size = float(fc.bin_edges[1] - fc.bin_edges[0])
        figures.plot_forecast_raster(context=fc.context, target=fc.actual, mean=fc.mean,
                                     samples=fc.samples, bin_size=bin_size, path=out / "forecast.png",
                                     title=f"{fc.session_id}: forecast from {fc.onset:.3f} s")
        fc.save_npz(out / "forecast.npz")
    log(forecast_summary(fc, default_start=start is None))
    return out


def forecast_summary(fc: Forecast, *, default_start: bool = False) -> str:
    """What was forecast, in a few console lines."""
    T, N = fc.mean.shape
    bin_s = float(fc.bin_edges[1] - fc.bin_edges[0])
    when = " (the end of the recording; --start picks another onset)" if default_start else ""
    lines = [f"{fc.session_id}: {N} units, {T} bins of {1000 * bin_s:g} ms from {round(fc.onset, 6)} s{when}, "
             f"{len(fc.samples)} sampled trajectories",
             f"predicted population rate {fc.mean.sum(1).mean() / bin_s:.1f} spikes/s "
             f"(context: {fc.context.sum(1).mean() / bin_s:.1f})"]
    recorded = np.isfinite(fc.actual).all(1)
    if recorded.any():
        lines.append(f"recorded over {recorded.sum()} of the {T} bins: "
                     f"{np.nansum(fc.actual[recorded]) / (recorded.sum() * bin_s):.1f} spikes/s")
    return "\n".join(lines)
