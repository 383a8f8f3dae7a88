"""Figures, tables and plain-language conclusions for an evaluation folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neurohorizon.data.binning import horizon_label
from neurohorizon.evaluation import figures
from neurohorizon.evaluation.metrics import paired_bps_difference
from neurohorizon.evaluation.report import Section, Table, write_report
from neurohorizon.losses import Categorical

MODEL = "NeuroHorizon"
PREDICTABLE_BPS = 0.01  # per-bin bits/spike below which a bin is treated as unpredictable


def _get(d: dict, *path, default=np.nan):
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return default
        d = d[key]
    return d


def predictability(decay, bin_size: float, *, smooth_bins: int = 5) -> dict:
    """How far ahead the forecast carries information, read off the per-bin decay curve after a
    `smooth_bins` running mean (single 20 ms bins are noisy): the horizon before the curve first
    falls to PREDICTABLE_BPS (0 when it starts there), and the horizon by which it has halved
    (NaN when the first bins carry nothing to halve)."""
    decay = np.asarray(decay, dtype=float)
    if not len(decay) or not np.isfinite(decay).any():
        return {"limit_ms": np.nan, "half_life_ms": np.nan, "first_bin_bps": np.nan, "smooth_ms": np.nan}
    k = max(1, min(smooth_bins, len(decay)))
    filled = np.where(np.isfinite(decay), decay, 0.0)
    weight = np.convolve(np.isfinite(decay).astype(float), np.ones(k), "same")
    smooth = np.convolve(filled, np.ones(k), "same") / np.maximum(weight, 1)
    ahead = (np.arange(len(decay)) + 1) * bin_size * 1000
    below = np.nonzero(smooth <= PREDICTABLE_BPS)[0]
    limit = ahead[-1] if not len(below) else (ahead[below[0] - 1] if below[0] > 0 else 0.0)
    half = np.nonzero(smooth < smooth[0] / 2)[0] if smooth[0] > PREDICTABLE_BPS else np.array([], int)
    return {"limit_ms": float(limit), "half_life_ms": float(ahead[half[0]]) if len(half) else np.nan,
            "first_bin_bps": float(decay[0]), "start_bps": float(smooth[0]), "smooth_ms": k * bin_size * 1000,
            "through_horizon": not len(below), "mean_bps": float(np.nanmean(decay))}


def predictability_text(pred: dict, reference: tuple[str, dict] | None = None) -> str:
    """The report's headline on predictability; `reference` (name, its `predictability`): a
    forecaster without single-trial information (the rate prior, or the PSTH), so the reader can
    tell what the context's spikes add to what the condition and the time alone give."""
    head = "**How far ahead is the population predictable?** "
    if not np.isfinite(pred["limit_ms"]):
        return head + "No per-bin forecast information was computed."
    first_bps = pred["first_bin_bps"]  # NaN when no test window has a spike in the first bin
    # the claim reads the smoothed curve, so quote where that starts, then the raw first bin
    first = f"{pred['smooth_ms']:.0f} ms running mean, starting at {pred['start_bps']:.3f} bits/spike; "
    first += "first bin: no spikes to score" if np.isnan(first_bps) else f"first bin alone: {first_bps:.3f}"
    if pred["limit_ms"] == 0:
        return head + (f"NeuroHorizon's per-bin forecast information is at or below {PREDICTABLE_BPS} bits/spike "
                       f"from the first bin on ({first}).")
    halves = (f" and first falls below half its start by {pred['half_life_ms']:.0f} ms"
              if np.isfinite(pred["half_life_ms"]) else ", without halving")
    reach = (f"through the whole {pred['limit_ms']:.0f} ms evaluated (the longest horizon; it may carry further)"
             if pred.get("through_horizon") else f"up to {pred['limit_ms']:.0f} ms ahead")
    text = (f"NeuroHorizon's per-bin forecast information stays above {PREDICTABLE_BPS} bits/spike {reach}"
            f"{halves} ({first}).")
    if reference is not None and np.isfinite(reference[1].get("mean_bps", np.nan)):
        name, ref, single_trial = reference
        gain = _signed(pred["mean_bps"] - ref["mean_bps"])
        if single_trial:  # psth_factors: the prior already reads the context's single-trial latents
            text += (" Much of that is in the model's rate prior, the condition average moved by single-trial "
                     f"latents it infers from the context: alone it averages {ref['mean_bps']:.3f} bits/spike per "
                     f"bin over the same horizon, NeuroHorizon {pred['mean_bps']:.3f} ({gain} from the network on "
                     "top of its prior).")
        else:
            text += (f" Much of that can come from the condition and the time alone: {name}, which has no "
                     f"single-trial information, averages {ref['mean_bps']:.3f} bits/spike per bin over the same "
                     f"horizon, NeuroHorizon {pred['mean_bps']:.3f} ({gain} from the context's single-trial "
                     "information).")
    return head + text


def _signed(x: float, digits: int = 3) -> str:
    """'+0.012', and '+0.000' rather than '-0.000' for a value that rounds to 0."""
    return f"{0.0 if round(x, digits) == 0 else x:+.{digits}f}"


def _reference_predictability(results: dict, horizon: str, bin_size: float,
                              rate_prior: str = "none") -> tuple[str, dict, bool] | None:
    """(who, `predictability`, whether it has single-trial information) of the rate prior (or
    else the PSTH), when the evaluation scored one."""
    for name, said in (("model_prior", "the model's rate prior alone"), ("psth", "the PSTH baseline")):
        decay = _get(results.get(name, {}), horizon, "pooled", "rollout", "per_bin_fp_bps", default=None)
        if decay is not None:
            single_trial = name == "model_prior" and rate_prior == "psth_factors"
            return said, predictability(decay, bin_size), single_trial
    return None


def horizon_table(results: dict, horizons: list[int], bin_size: float,
                  predictions: dict | None = None) -> tuple[Table, list[str]]:
    methods = list(results)
    cols = ["method"] + [horizon_label(h, bin_size) for h in horizons]
    rows, lines = [], []
    for m in methods:
        rows.append([m] + [_get(results[m], str(h), "pooled", "rollout", "fp_bps") for h in horizons])
    oracle = [_get(results.get(MODEL, {}), str(h), "pooled", "oracle", "oracle_fp_bps") for h in horizons]
    if not np.all(np.isnan(np.asarray(oracle, dtype=float))):  # the ceiling, not a competitor
        lines.append("Oracle (true rates), the ceiling: " + ", ".join(
            f"{horizon_label(h, bin_size)} {v:.3f}" for h, v in zip(horizons, oracle)) + " bits/spike.")
    causal = [_get(results.get(MODEL, {}), str(h), "pooled", "oracle", "causal_oracle_fp_bps") for h in horizons]
    if not np.all(np.isnan(np.asarray(causal, dtype=float))):
        lines.append("Causal oracle, the best any forecaster can expect from the past (it knows the latents up "
                     "to the forecast start and averages over this trial's reaction time and future noise): "
                     + ", ".join(f"{horizon_label(h, bin_size)} {v:.3f}" for h, v in zip(horizons, causal))
                     + " bits/spike.")
    for j, h in enumerate(horizons):
        vals = {m: rows[i][j + 1] for i, m in enumerate(methods)}
        finite = {m: v for m, v in vals.items() if np.isfinite(v)}
        if finite:
            lines.append(_horizon_line(results, finite, h, bin_size, predictions))
    table = Table(columns=cols, rows=rows, caption="Forecast bits/spike (rollout, NLB null) per horizon",
                  highlight_max=cols[1:], decimals=3)
    return table, lines


def _horizon_line(results: dict, finite: dict, h: int, bin_size: float, predictions: dict | None) -> str:
    """Who is best at horizon h, by how much, and NeuroHorizon's share of the ceilings."""
    label = horizon_label(h, bin_size)
    frac = _get(results.get(MODEL, {}), str(h), "pooled", "oracle", "fraction_of_oracle")
    share = ""  # NeuroHorizon's share of the ceilings, said right after its own number
    if np.isfinite(frac):
        causal = _get(results.get(MODEL, {}), str(h), "pooled", "oracle", "fraction_of_causal_oracle")
        share = f"; {100 * frac:.0f}% of the oracle's bits/spike" + (
            f", {100 * causal:.0f}% of the causal oracle's" if np.isfinite(causal) else "")
    if len(finite) == 1:
        m, v = next(iter(finite.items()))
        return f"At {label}, {m} reaches {v:.3f} bits/spike{share.replace(';', ',')} (no other method was evaluated)."
    best, second = sorted(finite, key=finite.get, reverse=True)[:2]
    text = f"At {label}, the best method is **{best}** ({finite[best]:.3f} bits/spike"
    text += f"{share})" if best == MODEL else ")"
    text += _margin(best, second, finite, h, predictions)
    if best != MODEL and MODEL in finite:
        text += f"; NeuroHorizon reaches {finite[MODEL]:.3f}" + (f" ({share[2:]})" if share else "")
    return text + "."


def _margin(best: str, second: str, finite: dict, h: int, predictions: dict | None) -> str:
    """', ahead of X by d (95% CI ...)': the gap to the runner-up with a paired bootstrap over windows."""
    text = f", ahead of {second} ({finite[second]:.3f}) by {finite[best] - finite[second]:.3f}"
    groups = [predictions.get(m) for m in (best, second)] if predictions else [None, None]
    if any(g is None for g in groups) or set(groups[0]) != set(groups[1]):
        return text
    sessions = sorted(groups[0])
    if any(not np.array_equal(groups[0][s]["start"], groups[1][s]["start"]) for s in sessions):
        return text  # not the same windows: no paired comparison
    a, b, y = ([g[s][key][:, :h] for s in sessions] for g, key in
               ((groups[0], "rollout"), (groups[1], "rollout"), (groups[0], "target")))
    _, lo, hi = paired_bps_difference(a, b, y)
    n = sum(len(t) for t in y)
    if not np.isfinite(lo):
        return text + f" (too few spikes in the {n} test windows for a bootstrap interval)"
    text += f" (95% CI {lo:.3f} to {hi:.3f}, paired bootstrap over {n} test windows"
    return text + (": within sampling error)" if lo <= 0 else ")")


def held_out_table(results: dict, horizons: list[int], bin_size: float, sessions: list[str]) -> Table | None:
    """Rollout bits/spike over the held-out sessions alone (never trained on)."""
    if not sessions:
        return None
    cols = ["method"] + [horizon_label(h, bin_size) for h in horizons]
    rows = [[m] + [_get(results[m], str(h), "held_out", "rollout", "fp_bps") for h in horizons] for m in results]
    return Table(columns=cols, rows=rows, highlight_max=cols[1:], decimals=3,
                 caption=f"Forecast bits/spike (rollout, NLB null) on the {len(sessions)} held-out session(s)")


def gap_table(results: dict, horizons: list[int], bin_size: float) -> Table | None:
    rows = []
    for h in horizons:
        block = _get(results.get(MODEL, {}), str(h), "pooled", default={})
        tf, ro = _get(block, "teacher_forced", "fp_bps"), _get(block, "rollout", "fp_bps")
        if np.isfinite(tf):
            gap = tf - ro
            rows.append([horizon_label(h, bin_size), tf, ro, gap, f"{_signed(100 * gap / abs(ro), 1)} %" if ro else np.nan])
    if not rows:
        return None
    return Table(columns=["horizon", "teacher-forced", "rollout", "gap = TF − rollout", "gap / |rollout|"],
                 rows=rows, decimals=4, caption="Teacher-forced vs rollout bits/spike (exposure-bias gap; positive = "
                                    "rollout loses to its own errors)")


def example_window(groups: dict) -> tuple[dict, int]:
    session = max(groups, key=lambda s: float(np.nansum(groups[s]["target"])))
    g = groups[session]
    return g, int(np.argmax(np.nansum(g["target"], axis=(1, 2))))


def _figures(out: Path, metrics: dict, predictions: dict, horizons, bin_size) -> dict:
    results, figs = metrics["results"], {}
    longest = str(max(horizons))
    curves = {}
    for m in results:
        key = "rollout"
        curve = _get(results[m], longest, "pooled", key, "per_bin_fp_bps", default=None)
        if curve is not None:
            curves[f"{m} (rollout)" if m == MODEL else m] = np.asarray(curve, dtype=float)
    tf_curve = _get(results.get(MODEL, {}), longest, "pooled", "teacher_forced", "per_bin_fp_bps", default=None)
    if tf_curve is not None:
        curves[f"{MODEL} (teacher-forced)"] = np.asarray(tf_curve, dtype=float)
    ceilings = {name: _get(results.get(MODEL, {}), longest, "pooled", "oracle", f"{name}_per_bin_fp_bps",
                           default=None) for name in ("oracle", "causal_oracle")}
    figs["decay"] = figures.plot_decay(curves, bin_size=bin_size, path=out / "figures" / "decay.png",
                                       horizons=horizons, **{k: None if v is None else np.asarray(v, dtype=float)
                                                              for k, v in ceilings.items()})
    g, i = example_window(predictions[MODEL])
    samples = g.get("samples")
    figs["raster"] = figures.plot_forecast_raster(
        context=g["context"][i], target=g["target"][i], mean=g["rollout"][i],
        samples=None if samples is None else samples[:, i], bin_size=bin_size,
        path=out / "figures" / "forecast_raster.png")
    cond = np.asarray(g["condition"])
    if (cond >= 0).any():
        labels = sorted(set(cond[cond >= 0].tolist()))
        names = g.get("condition_names") or []
        name = {c: names[c] if c < len(names) else c for c in labels}  # the data's labels where known
        pred = {name[c]: g["rollout"][cond == c].mean(0) for c in labels}
        # observed counts before and after onset alike (the PSTH R² metric scores against true
        # rates where the data have them; a figure mixing the two would look like a jump at 0)
        act = {name[c]: np.nanmean(g["target"][cond == c], 0) for c in labels}
        ctx = {name[c]: g["context"][cond == c].mean(0) for c in labels}
        # the units the forecast modulates most across conditions and time: chosen from the
        # prediction, never from how well it matches
        modulation = np.nanstd(np.stack(list(pred.values())), axis=(0, 1))
        order = np.argsort(-np.nan_to_num(modulation, nan=-1.0))[:6]
        figs["psth"] = figures.plot_psths(predicted=pred, actual=act, context=ctx, bin_size=bin_size,
                                          units=[int(u) for u in order], path=out / "figures" / "psth.png")
    cal = calibration_block(results, longest)
    if cal:
        levels, coverage = coverage_series(cal["coverage"])
        figs["calibration"] = figures.plot_calibration(
            nominal=levels, coverage=coverage,
            fano_pred=_floats(cal.get("fano_predicted_per_neuron", [cal["fano_predicted"]])),
            fano_obs=_floats(cal.get("fano_observed_per_neuron", [cal["fano_observed"]])),
            path=out / "figures" / "calibration.png")
    return figs


def _floats(values) -> np.ndarray:
    """JSON numbers to floats; null (a NaN written to JSON) becomes NaN."""
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _horizon_note(horizons: list[int], bin_size: float) -> str:
    """'12 bins are 240 ms (the '250 ms' horizon).' for the shortest horizon evaluated."""
    h = min(horizons)
    ms = h * bin_size * 1000
    called = f" (the '{round(ms / 50) * 50:g} ms' horizon)" if abs(ms - round(ms / 50) * 50) > 1e-6 else ""
    return f"{h} bins are {ms:g} ms{called}."


def calibration_block(results: dict, horizon: str) -> dict | None:
    """NeuroHorizon's calibration at `horizon` (first session), or None when no samples were drawn."""
    sessions = _get(results.get(MODEL, {}), horizon, "sessions", default={})
    return next(iter(sessions.values()), {}).get("calibration") if sessions else None


def calibration_sessions_text(results: dict, horizon: str, names: dict) -> str:
    """With several sessions, which one the calibration figure shows, and every session's
    population-count coverage of the 50 % / 90 % intervals; empty for one session."""
    sessions = _get(results.get(MODEL, {}), horizon, "sessions", default={})
    cals = {names.get(k, k): v.get("calibration") for k, v in sessions.items() if v.get("calibration")}
    if len(cals) < 2:
        return ""

    def held(cal, level):
        return 100 * _level(cal["coverage"]["population"]["pit"], level)

    listed = "; ".join(f"{name} {held(cal, 0.5):.1f} % / {held(cal, 0.9):.1f} %" for name, cal in cals.items())
    return (f" The figure and the numbers above are session {next(iter(cals))}'s, the first of {len(cals)}. "
            f"Population-count coverage of the 50 % / 90 % intervals in each session: {listed}.")


def _level(d: dict, level: float) -> float:
    """A coverage entry whose key is the level as written to JSON ("0.5") or in memory (0.5)."""
    return d[str(level)] if str(level) in d else d[level]


def coverage_series(cov: dict) -> tuple[list[float], dict[str, list[float]]]:
    """Nominal levels and the randomised-PIT coverage per neuron and of the population count."""
    levels = sorted(float(k) for k in cov["neuron"]["pit"])
    names = {"neuron": "per neuron", "population": "population count"}
    return levels, {names[s]: [_level(cov[s]["pit"], lv) for lv in levels] for s in names if s in cov}


def calibration_text(cal: dict) -> str:
    levels, coverage = coverage_series(cal["coverage"])
    shown = [i for i, lv in enumerate(levels) if lv in (0.5, 0.9)] or range(len(levels))  # the figure has all
    parts = [f"{name}: " + ", ".join(f"{100 * levels[i]:.0f}% intervals hold {100 * cov[i]:.1f}%" for i in shown)
             for name, cov in coverage.items()]
    predicted, observed = _floats([cal.get("fano_predicted"), cal.get("fano_observed")])
    fano = (f"Mean predicted Fano factor {predicted:.2f}" if np.isfinite(predicted) else
            "No Fano factor: too few repeats (samples, or windows per condition)")
    if np.isfinite(observed):
        fano += f", observed {observed:.2f}"
    n = f"{cal['n_samples']} " if "n_samples" in cal else ""
    return (f"Central predictive intervals of the {n}sampled trajectories per window (randomised rank PIT, so a "
            "calibrated forecaster's coverage equals the level): " + "; ".join(parts) + f". {fano}.")


def write_evaluation_report(out: Path, metrics: dict, predictions: dict, *, title: str,
                            extra_sections: list | None = None, overwrite: bool = False):
    bin_size = metrics["bin_size_s"]
    horizons = [int(h) for h in metrics["horizons"]]
    results = metrics["results"]
    table, lines = horizon_table(results, horizons, bin_size, predictions)
    figs = _figures(out, metrics, predictions, horizons, bin_size)
    longest = str(max(horizons))
    decay = _get(results.get(MODEL, {}), longest, "pooled", "rollout", "per_bin_fp_bps", default=[])
    pred = predictability(decay, bin_size)
    summary = [
        f"Data: {metrics['data']} ({metrics['split']}); decoder {metrics['decoder']}, "
        f"likelihood {metrics['likelihood']}, feedback '{metrics['feedback']}'"
        + _prior_text(metrics.get("rate_prior", "none")),
        predictability_text(pred, _reference_predictability(results, longest, bin_size,
                                                            metrics.get("rate_prior", "none"))),
        *lines,
    ]
    if "training_unfinished" in metrics:
        summary.insert(0, f"Warning: {metrics['training_unfinished']}.")
    if "count_truncation" in metrics:  # categorical likelihood: counts above K are one overflow class
        summary.append(Categorical.truncation_text(metrics["count_truncation"], counts="evaluated") + ".")
    sections = [Section(title="Forecast quality per horizon", tables=[table], figures=[figs["decay"]],
                        paragraphs=["Bits/spike: NLB definition, null = per-neuron mean of the evaluated "
                                    "spikes; a null model scores 0. Horizons are whole bins: "
                                    + _horizon_note(horizons, bin_size)])]
    held = held_out_table(results, horizons, bin_size, metrics.get("held_out_sessions") or [])
    if held is not None:
        sections.append(Section(title="Held-out sessions", tables=[held], paragraphs=[
            "Sessions the run never trained on (data.holdout_sessions): "
            + ", ".join(metrics["held_out_sessions"]) + ". The table above pools them with the test time of "
            "the training sessions; this one says how the model transfers to a new session."]))
    gaps = gap_table(results, horizons, bin_size)
    if gaps is not None:
        sections.append(Section(title="Teacher forcing vs rollout", tables=[gaps], paragraphs=[
            "Teacher-forced numbers feed the true past counts; rollout feeds the model's own output, as in "
            "real use. A large gap signals exposure bias (see the study command)."]))
    sections.append(Section(title="Forecast vs actual", figures=[figs["raster"]]))
    if "psth" in figs:
        sections.append(Section(title="Condition-averaged PSTHs", figures=[figs["psth"]]))
    if "calibration" in figs:
        sections.append(Section(title="Calibration of sampled trajectories", figures=[figs["calibration"]],
                                paragraphs=[f"Over the {horizon_label(int(longest), bin_size)} forecast. "
                                            + calibration_text(calibration_block(results, longest))
                                            + calibration_sessions_text(results, longest, metrics.get("sessions", {}))]))
    sections += extra_sections or []
    return write_report(out, title=title, summary=summary, sections=sections,
                        metadata={"run": metrics["run"], "checkpoint": metrics["checkpoint"],
                                  "step": metrics["step"]}, overwrite=overwrite)


def _prior_text(rate_prior: str) -> str:
    """How the model's forecast is anchored, for the summary's first line."""
    if rate_prior == "none":
        return "."
    factors = (", and moves it by single-trial latent factors inferred from the context, as psth_factors does"
               if rate_prior == "psth_factors" else "")
    return (f", forecasting around the training trials' condition average (data.rate_prior={rate_prior}: it knows "
            f"the condition, as the PSTH baseline does{factors}). model_prior is that prior on its own: what the "
            "network adds is NeuroHorizon's margin over it.")
