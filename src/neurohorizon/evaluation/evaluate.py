"""`neurohorizon evaluate`: the model against every baseline at 12, 25 and 50 bins.

Writes metrics.json, figures and report.html/report.md into a new folder
`<run>/evaluations/eval-<time>/`. Bits/spike use the NLB null (per-neuron mean of the
evaluated spikes); the training-split null is reported beside it.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import torch

from neurohorizon.data.binning import horizon_label, standard_horizons
from neurohorizon.data.prepare import prepare_data
from neurohorizon.data.windows import condition_labels
from neurohorizon.evaluation.baselines import build_baseline
from neurohorizon.evaluation.ceiling import attach_causal_oracle
from neurohorizon.evaluation.evaluation_report import write_evaluation_report
from neurohorizon.evaluation.loading import LoadedRun, load_run, match_units
from neurohorizon.evaluation.metrics import LN2, fraction_of_oracle, summarize_forecast
from neurohorizon.evaluation.predict import predict_dataset, predict_forecaster
from neurohorizon.runs import json_text, new_run_dir, removed_on_failure, write_text_atomic

MODEL = "NeuroHorizon"
PRIOR_ALONE = "model_prior"  # the rate prior a run forecasts around, scored on its own


class PriorAlone:
    """The run's rate prior as a forecaster: each window's prior expected counts (`prior_counts`,
    which the dataset gives the model). NeuroHorizon's margin over it is what the network adds."""

    def predict(self, batch: dict) -> torch.Tensor:
        return batch["prior_counts"]


def default_baselines(mode: str) -> list[str]:
    names = ["mean_rate", "persistence", "glm_ar", "glm_direct", "gru_seq2seq", "ndt_forward"]
    return (["psth", "psth_factors"] if mode == "trials" else []) + names


NLB_PSTH_SIGMA_S = 0.07  # s: NLB smooths observed condition averages with this Gaussian for psth R²
FEW_WINDOWS = 10  # fewer test windows than this: the scores are said to be fragile


def train_null_rates(train, test, max_windows: int = 2000) -> dict[int, np.ndarray]:
    """The 'train' null: each neuron's mean count per bin over the training windows' target
    bins (half a spike for a unit with none), kept per unit id, for every session of `test` whose units all occur in training (a
    held-out session recording trained units, or other data of them, has one too)."""
    size = len(train.vocab) + 1  # vocabulary indices start at 1
    sums, bins = np.zeros(size), np.zeros(size)
    for i in np.linspace(0, len(train) - 1, min(len(train), max_windows)).astype(int):
        item = train[int(i)]
        np.add.at(sums, item["units"], item["target_counts"].sum(0))
        np.add.at(bins, item["units"], item["target_counts"].shape[0])
    units = {int(w.rec): test.session_units(w.rec) for w in test.windows}
    # a unit silent in training gets half a spike over its bins, not a rate of 0: with 0 the
    # null would pay ~21 nats per test spike of it, a gain every method would share
    return {s: np.maximum(sums[u], 0.5) / bins[u] for s, u in units.items() if (bins[u] > 0).all()}


def baseline_options(name: str, time_budget_s: float) -> dict:
    """Caps that keep every baseline's fit within a few minutes on a 2-core CPU."""
    glm = {"max_iter": 150, "ridges": (1e-2, 1e-1, 1.0), "time_budget_s": time_budget_s}
    return {
        "glm_ar": {**glm, "max_samples": 20000},
        "glm_direct": {**glm, "max_windows": 1500},
        "gru_seq2seq": {"max_steps": 2000, "time_budget_s": time_budget_s},
        "ndt_forward": {"max_steps": 2000, "time_budget_s": time_budget_s},
        "psth_factors": {"time_budget_s": time_budget_s},
    }.get(name, {})


def log_baseline_plan(names, time_budget_s: float, log=print) -> None:
    """One line before the baselines: their training takes most of an evaluation's minutes."""
    if not names:
        return
    timed = [n for n in names if "time_budget_s" in baseline_options(n, time_budget_s)]
    budget = f"; {', '.join(timed)} each train within a {time_budget_s:g} s budget (plus setup)" if timed else ""
    log(f"fitting {len(names)} baseline(s): {', '.join(names)}{budget}")


def fit_baselines(names, prepared, *, time_budget_s: float, log=print) -> dict:
    fitted = {}
    for name in names:
        t0 = time.monotonic()
        try:
            forecaster = build_baseline(name, **baseline_options(name, time_budget_s))
            # the PSTHs need windows at the evaluation alignment, which carry the condition
            aligned = name in ("psth", "psth_factors") and prepared.train_aligned
            train = prepared.train_aligned if aligned else prepared.train
            fitted[name] = forecaster.fit(train, prepared.valid)
        except Exception as err:  # one failing baseline must not hide the others; it is reported
            log(f"  baseline {name} failed: {type(err).__name__}: {err}")
            continue
        log(f"  fitted {name} in {time.monotonic() - t0:.1f} s{chosen_text(fitted[name])}")
    return fitted


def chosen_text(forecaster) -> str:
    """' (sigma 1, rank 8, ..., chosen on validation)': what a baseline chose, for the console."""
    chosen = getattr(forecaster, "chosen", lambda: {})()
    if not chosen:
        return ""

    def value(v):
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return f"{v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)

    parts = [k.replace("_", " ") + " " + value(v) for k, v in chosen.items()]
    return f" ({', '.join(parts)}, chosen on validation)"


def evaluate_predictions(predictions: dict, *, horizons, bin_size, null_rates, calib_method=MODEL) -> dict:
    """Per method, per horizon, per session metrics plus pooled (spike-weighted) numbers."""
    results = {}
    for method, groups in predictions.items():
        results[method] = {}
        for h in horizons:
            per_session = {}
            for s, g in groups.items():
                if g["target"].shape[1] < h:
                    continue
                per_session[s] = summarize_forecast(
                    g["rollout"][:, :h], g["target"][:, :h],
                    tf_mean=None if g.get("teacher_forced") is None else g["teacher_forced"][:, :h],
                    samples=g["samples"][:, :, :h] if (method == calib_method and g.get("samples") is not None) else None,
                    conditions=g["condition"],
                    true_expected=g["true_expected"][:, :h] if not np.isnan(g["true_expected"]).all() else None,
                    causal_expected=g["causal_expected"][:, :h] if "causal_expected" in g else None,
                    null_rates=null_rates.get(s), bin_size=bin_size,
                    psth_sigma_bins=NLB_PSTH_SIGMA_S / bin_size,  # observed PSTHs smoothed as NLB's
                )
            if per_session:
                results[method][str(h)] = {"pooled": pool_sessions(per_session), "sessions": {
                    str(k): v for k, v in per_session.items()}}
    return results


def add_held_out_pooling(results: dict, held: list[str]) -> None:
    """results[method][h]["held_out"]: pooled over the sessions the run never trained on (keys of
    "sessions"), the number that says how the model transfers to a new session."""
    if not held:
        return
    for per_h in results.values():
        for block in per_h.values():
            sessions = {k: v for k, v in block["sessions"].items() if k in held}
            if sessions:
                block["held_out"] = pool_sessions(sessions)


def pool_sessions(per_session: dict) -> dict:
    """Pooling over sessions. Bits/spike are exact: the sessions' NLL gains (nats) summed, over
    their spikes, so a session or bin without spikes still counts what a forecaster loses there.
    Other metrics are a spike-weighted mean, in which sessions without spikes carry no weight."""
    spiking = {k: v for k, v in per_session.items() if v["n_spikes"] > 0}
    out = {"n_spikes": float(sum(v["n_spikes"] for v in spiking.values()))}
    for block in ("rollout", "teacher_forced"):
        for key in ("fp_bps", "fp_bps_train_null", "per_bin_fp_bps"):
            _put(out, block, key, _pool_bps(per_session, (block, key)))
        _put(out, block, "r2_pooled", _pool(spiking, (block, "r2_pooled")))
    for key in ("oracle_fp_bps", "oracle_per_bin_fp_bps", "causal_oracle_fp_bps", "causal_oracle_per_bin_fp_bps"):
        _put(out, "oracle", key, _pool_bps(per_session, ("oracle", key)))
    for path in (("oracle", "r2_vs_true_pooled"), ("psth", "psth_r2"), ("psth", "corr_per_step")):
        _put(out, *path, _pool(spiking, path))
    if "oracle_fp_bps" in out.get("oracle", {}) and "fp_bps" in out.get("rollout", {}):
        rollout = out["rollout"]["fp_bps"]  # a ratio of pooled values, not a mean of ratios
        out["oracle"]["fraction_of_oracle"] = fraction_of_oracle(rollout, out["oracle"]["oracle_fp_bps"])
        if "causal_oracle_fp_bps" in out["oracle"]:
            out["oracle"]["fraction_of_causal_oracle"] = fraction_of_oracle(
                rollout, out["oracle"]["causal_oracle_fp_bps"])
    cal = [v.get("calibration") for v in per_session.values()]
    if all(c is not None for c in cal):
        out["calibration"] = cal[0] if len(cal) == 1 else {"sessions": cal}
    return out


def _put(out: dict, block: str, key: str, value) -> None:
    if value is not None:
        out.setdefault(block, {})[key] = value


def _pool_bps(sessions: dict, path: tuple):
    """Bits/spike at `path` over the sessions: their gains (the key with fp_bps -> nll_gain_nats)
    summed over their spikes (per bin for a per-bin curve); the spike-weighted mean of the
    sessions' values when a summary has no gains (written by an older version)."""
    gain_path = (*path[:-1], path[-1].replace("fp_bps", "nll_gain_nats"))
    gains = [_at(v, gain_path) for v in sessions.values()]
    if not sessions or any(g is None for g in gains):
        return _pool({k: v for k, v in sessions.items() if v["n_spikes"] > 0}, path)
    per_bin = "per_bin" in path[-1]
    spikes = sum(np.asarray(v["n_spikes_per_bin"] if per_bin else v["n_spikes"], float) for v in sessions.values())
    total = sum(np.asarray(g, float) for g in gains)
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = np.where(spikes > 0, total / np.where(spikes > 0, spikes, 1.0) / LN2, np.nan)
    return pooled.tolist()


def _at(node, path: tuple):
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def _pool(sessions: dict, path: tuple):
    """The sessions' values at `path`, spike-weighted; None when a session lacks it. A per-bin
    curve is weighted bin by bin (by `n_spikes_per_bin` where the summary has it)."""
    vals, weights = [], []
    for v in sessions.values():
        node = _at(v, path)
        if node is None:
            return None
        vals.append(np.asarray(node, dtype=float))
        per_bin = path[-1].endswith("per_bin_fp_bps") and "n_spikes_per_bin" in v
        weights.append(np.asarray(v["n_spikes_per_bin"] if per_bin else v["n_spikes"], dtype=float))
    if not vals:
        return None
    vals = np.stack(vals)  # (sessions, ...)
    w = np.stack([np.broadcast_to(x, vals.shape[1:]) for x in weights])
    total = w.sum(0)
    weighted = np.where(w > 0, vals, 0.0) * w  # a session without spikes (in a bin) adds nothing
    return np.where(total > 0, weighted.sum(0) / np.where(total > 0, total, 1.0), np.nan).tolist()


def evaluate_run(run_dir: Path, *, data: str | None = None, data_options: dict | None = None,
                 unknown_units: str = "error",
                 n_samples: int = 20, baselines: bool | list = True, horizons=None,
                 baseline_budget_s: float = 120.0, out_dir: Path | None = None, device: str = "auto",
                 log=print) -> Path:
    """Evaluate a run on its test split (or on `data`); returns the evaluation folder."""
    torch.set_flush_denormal(True)
    run = load_run(run_dir, device=device)
    prepared, test, split = _eval_data(run, data, unknown_units, data_options or {})
    out = new_run_dir(run.run_dir / "evaluations", "eval") if out_dir is None else Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with removed_on_failure(out, remove=out_dir is None):
        _evaluate_into(out, run, prepared, test, data=data, split=split, n_samples=n_samples, baselines=baselines,
                       horizons=horizons, baseline_budget_s=baseline_budget_s, log=log)
    return out


def _evaluate_into(out: Path, run: LoadedRun, prepared, test, *, data, split, n_samples, baselines, horizons,
                   baseline_budget_s, log) -> None:
    """Predict, fit the baselines, score and report into `out`."""
    log(f"evaluating {run.checkpoint} (step {run.step}) on {len(test)} windows -> {out}")
    if len(test) < FEW_WINDOWS:
        warnings.warn(f"only {len(test)} test window(s): every score below rests on them and can move a lot with "
                      "the split (a longer recording, more trials, or a shorter data.horizon_ms gives more)",
                      stacklevel=2)
    if run.unfinished:
        warnings.warn(run.unfinished, stacklevel=2)
    feedback = run.cfg.sampling.feedback
    model_preds = predict_dataset(run.model, run.likelihood, test, device=run.device, feedback=feedback,
                                  n_samples=n_samples, keep_samples=True, seed=run.cfg.train.seed)
    predictions = {MODEL: model_preds["groups"]}
    if run.prior is not None:
        predictions[PRIOR_ALONE] = predict_forecaster(PriorAlone(), test)["groups"]
    truncation = count_truncation(run.likelihood, model_preds["groups"])
    if truncation is not None:
        log("  " + run.likelihood.truncation_text(truncation, counts="evaluated"))
    for session, group in predictions[MODEL].items():  # condition indices -> the data's labels
        group["condition_names"] = condition_labels(test.recordings[session])
    names = default_baselines(prepared.mode) if baselines is True else list(baselines or [])
    log_baseline_plan(names, baseline_budget_s, log)
    for name, forecaster in fit_baselines(names, prepared, time_budget_s=baseline_budget_s, log=log).items():
        try:
            predictions[name] = predict_forecaster(forecaster, test)["groups"]
        except (KeyError, ValueError) as err:  # e.g. units of a held-out session it never saw
            log(f"  baseline {name} left out: it cannot forecast every evaluated window ({err})")
    # a run forecasting fewer than 12 bins is scored at its own horizon
    if horizons is None:  # 240 / 500 / 1000 ms, and the horizon the run was trained for
        horizons = {*standard_horizons(prepared.spec.bin_size), prepared.spec.horizon_bins}
    horizons = sorted(h for h in horizons if h <= prepared.spec.horizon_bins) or [prepared.spec.horizon_bins]
    attach_causal_oracle(predictions, test.recordings, bin_size=prepared.spec.bin_size, log=log)
    null_rates = train_null_rates(prepared.train, test)  # by unit id: for other data of trained units too
    results = evaluate_predictions(predictions, horizons=horizons, bin_size=prepared.spec.bin_size,
                                   null_rates=null_rates)
    names = {str(i): rec.session_id for i, rec in enumerate(test.recordings)}
    held = [k for k, name in names.items() if name in set(run.splits.holdout_sessions)]
    add_held_out_pooling(results, held)
    metrics = {
        "run": str(run.run_dir), "checkpoint": str(run.checkpoint), "step": run.step,
        "data": data or run.cfg.data.source, "split": split,
        "feedback": feedback, "decoder": run.cfg.model.decoder, "likelihood": run.cfg.loss.likelihood,
        "rate_prior": run.cfg.data.rate_prior, "rate_prior_rank": run.cfg.data.rate_prior_rank,
        "bin_size_s": prepared.spec.bin_size,
        "horizons": {str(h): horizon_label(h, prepared.spec.bin_size) for h in horizons},
        "null": "fp_bps: per-neuron mean of the evaluated spikes (NLB); fp_bps_train_null: each neuron's mean "
                "count per bin over the training windows' target bins",
        "sessions": names, "held_out_sessions": [names[k] for k in held],
        "results": results,
    }
    if truncation is not None:
        metrics["count_truncation"] = truncation
    if run.unfinished:
        metrics["training_unfinished"] = run.unfinished
    write_text_atomic(out / "metrics.json", json_text(metrics, indent=1))
    write_evaluation_report(out, metrics, predictions, title=f"NeuroHorizon evaluation — {metrics['data']}")


def count_truncation(likelihood, groups: dict) -> dict | None:
    """A categorical likelihood's `truncation_report` of the evaluated target counts (real units
    only); None for the other likelihoods."""
    if not hasattr(likelihood, "truncation_report"):
        return None
    return likelihood.truncation_report(torch.as_tensor(np.concatenate([g["target"].ravel() for g in groups.values()])))


def _eval_data(run: LoadedRun, data: str | None, unknown_units: str, options: dict):
    """The run's prepared data (for baselines and nulls), the dataset to evaluate on, and what
    it holds: the run's test split, or for `data`, the test split of the sessions the run was
    trained on (their other windows were trained on) and every window of new sessions."""
    prepared = prepare_data(run.cfg.data, recordings=_moved_training_data(run, data, options), splits=run.splits,
                            vocab=run.vocab, prior=run.prior)
    for split in (prepared.train, prepared.valid, prepared.train_aligned):  # read by baselines, which use no
        if split is not None:  # prior: computing it per window (10-20 ms with factors) is only lost time
            split.prior = None
    if data is None:
        return prepared, prepared.test, "test"
    from neurohorizon.data.dataset import ForecastDataset
    from neurohorizon.data.sources import load_data

    recordings = match_units(load_data(data, **options), run.vocab, unknown_units)
    windows, seen = [], []
    for i, rec in enumerate(recordings):
        own = run.splits.sessions.index(rec.session_id) if rec.session_id in run.splits.sessions else None
        windows += _session_windows(run, prepared.spec, rec, i, own)
        seen += [rec.session_id] if own is not None else []
    if not windows:
        raise ValueError(f"{data}: no window to evaluate (the run's own sessions have no test windows)")
    split = ("test split of the run's sessions" if len(seen) == len(recordings) else
             "all windows" if not seen else "test split of the run's sessions, all windows of the others")
    test = ForecastDataset(recordings, windows=windows, spec=prepared.spec, vocab=run.vocab, events=run.cfg.data.events,
                           prior=prepared.prior)
    return prepared, test, split


def _moved_training_data(run: LoadedRun, data: str | None, options: dict):
    """None while the run's data.source is where it was trained (prepare_data loads it); when a
    file or folder source has moved, the run's sessions taken from `data` (the new place)."""
    from neurohorizon.data.sources import RECIPES, load_data

    source = str(run.cfg.data.source)
    if source.startswith(("synthetic:", "recipe:")) or source in RECIPES or Path(source).exists():
        return None
    where = f"{run.run_dir}: the data it was trained on, {source} (data.source in its config.yaml), is missing"
    if data is None:
        raise ValueError(f"{where}; evaluate it with --data NEW_PATH, the same data where it is now")
    by_id = {rec.session_id: rec for rec in load_data(data, **options)}
    lost = [s for s in run.splits.sessions if s not in by_id]
    if lost:
        raise ValueError(f"{where}, and {data} lacks its session(s) {lost}: --data must hold every session of the run")
    return [by_id[s] for s in run.splits.sessions]


def _session_windows(run: LoadedRun, spec, rec, i: int, own: int | None) -> list:
    """Windows of recording `rec` (index i of the evaluated data): the run's test split when the
    run was trained on this session (its index `own` in the run's splits), else all of it."""
    from neurohorizon.data.splits import outside_other_splits
    from neurohorizon.data.windows import Window, sequential_windows, trial_windows

    event, offset = run.cfg.data.align_event, run.cfg.data.align_offset_ms / 1000
    if event is not None and rec.trials is not None:
        trials = None if own is None else run.splits.trials("test", own)
        if trials is not None and len(trials) and trials.max() >= len(rec.trials.start):
            raise ValueError(f"{rec.source}: session {rec.session_id!r} has {len(rec.trials.start)} trials, but "
                             f"the run's test split of that session uses trial {trials.max()}: not the same data")
        if trials is None:
            return trial_windows(rec, spec, event, offset, rec_index=i)
        if not len(trials):
            return []
        # as the run's own test split is cut (splits.windows_for_split): windows reaching into
        # the run's training or validation trials are dropped
        names = [rec.source] * len(run.splits.sessions)
        kept = outside_other_splits(trial_windows(rec, spec, event, offset, trials, rec_index=own), run.splits,
                                    "test", spec, names)
        return [Window(i, w.onset, w.condition) for w in kept]
    spans = [tuple(rec.domain)] if own is None else run.splits.intervals("test", own)
    return sequential_windows([(i, a, b) for a, b in spans], spec, names=[rec.source]) if spans else []
