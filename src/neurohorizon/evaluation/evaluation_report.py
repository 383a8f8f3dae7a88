"""Figures, tables and plain-language conclusions for an evaluation folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neurohorizon.data.binning import horizon_label
from neurohorizon.evaluation import figures
from neurohorizon.evaluation.report import Section, Table, write_report

MODEL = "NeuroHorizon"
PREDICTABLE_BPS = 0.01  # per-bin bits/spike below which a bin is treated as unpredictable


def _get(d: dict, *path, default=np.nan):
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return default
        d = d[key]
    return d


def predictability(decay: np.ndarray, bin_size: float) -> dict:
    """How far ahead the forecast carries information, read off the per-bin decay curve."""
    decay = np.asarray(decay, dtype=float)
    ahead = (np.arange(len(decay)) + 1) * bin_size * 1000
    above = np.nonzero(decay > PREDICTABLE_BPS)[0]
    first = decay[0] if len(decay) else np.nan
    half = np.nonzero(decay < first / 2)[0] if first > 0 else np.array([0])
    return {
        "limit_ms": float(ahead[above[-1]]) if len(above) else 0.0,
        "half_life_ms": float(ahead[half[0]]) if len(half) else float(ahead[-1]),
        "first_bin_bps": float(first),
    }


def horizon_table(results: dict, horizons: list[int], bin_size: float) -> tuple[Table, list[str]]:
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
        if not finite:
            continue
        best = max(finite, key=finite.get)
        ours = vals.get(MODEL, np.nan)
        rivals = {m: v for m, v in finite.items() if m != MODEL}
        rival = max(rivals, key=rivals.get) if rivals else None
        frac = _get(results.get(MODEL, {}), str(h), "pooled", "oracle", "fraction_of_oracle")
        share = ""  # NeuroHorizon's share of the ceilings, said right after its own number
        if np.isfinite(frac):
            causal = _get(results.get(MODEL, {}), str(h), "pooled", "oracle", "fraction_of_causal_oracle")
            share = f"; {100 * frac:.0f}% of the oracle's bits/spike" + (
                f", {100 * causal:.0f}% of the causal oracle's" if np.isfinite(causal) else "")
        text = f"At {horizon_label(h, bin_size)}, the best method is **{best}** ({finite[best]:.3f} bits/spike"
        if rival is not None and best == MODEL:
            text += f"{share}); the strongest baseline, {rival}, reaches {rivals[rival]:.3f}"
        elif rival is not None:
            text += f"); NeuroHorizon reaches {ours:.3f}" + (f" ({share[2:]})" if share else "")
        else:
            text += f"{share})"
        lines.append(text + ".")
    table = Table(columns=cols, rows=rows, caption="Forecast bits/spike (rollout, NLB null) per horizon",
                  highlight_max=cols[1:])
    return table, lines


def gap_table(results: dict, horizons: list[int], bin_size: float) -> Table | None:
    rows = []
    for h in horizons:
        block = _get(results.get(MODEL, {}), str(h), "pooled", default={})
        tf, ro = _get(block, "teacher_forced", "fp_bps"), _get(block, "rollout", "fp_bps")
        if np.isfinite(tf):
            rows.append([horizon_label(h, bin_size), tf, ro, ro - tf,
                         (tf - ro) / abs(ro) if ro else np.nan])
    if not rows:
        return None
    return Table(columns=["horizon", "teacher-forced", "rollout", "rollout − TF", "gap / |rollout|"],
                 rows=rows, caption="Teacher-forced vs rollout bits/spike (exposure-bias gap)")


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
    oracle = _get(results.get(MODEL, {}), longest, "pooled", "oracle", "oracle_per_bin_fp_bps", default=None)
    figs["decay"] = figures.plot_decay(curves, bin_size=bin_size, path=out / "figures" / "decay.png",
                                       oracle=None if oracle is None else np.asarray(oracle, dtype=float),
                                       horizons=horizons)
    g, i = example_window(predictions[MODEL])
    samples = g.get("samples")
    figs["raster"] = figures.plot_forecast_raster(
        context=g["context"][i], target=g["target"][i], mean=g["rollout"][i],
        samples=None if samples is None else samples[:, i], bin_size=bin_size,
        path=out / "figures" / "forecast_raster.png")
    cond = np.asarray(g["condition"])
    if (cond >= 0).any():
        labels = sorted(set(cond[cond >= 0].tolist()))
        pred = {c: g["rollout"][cond == c].mean(0) for c in labels}
        truth = g["true_expected"] if not np.isnan(g["true_expected"]).all() else g["target"]
        act = {c: truth[cond == c].mean(0) for c in labels}
        ctx = {c: g["context"][cond == c].mean(0) for c in labels}
        order = np.argsort(-np.nanmean(g["target"], axis=(0, 1)))[:6]
        figs["psth"] = figures.plot_psths(predicted=pred, actual=act, context=ctx, bin_size=bin_size,
                                          units=[int(u) for u in order], path=out / "figures" / "psth.png")
    cal = _get(results.get(MODEL, {}), longest, "sessions", default={})
    cal = next(iter(cal.values()), {}).get("calibration") if cal else None
    if cal:
        cov = cal["coverage"]
        levels = sorted(float(k) for k in cov.get("per_neuron", {}))
        figs["calibration"] = figures.plot_calibration(
            nominal=levels,
            coverage={name: [cov[name][str(lv)] if str(lv) in cov[name] else cov[name][lv] for lv in levels]
                      for name in ("per_neuron", "population") if name in cov},
            fano_pred=np.atleast_1d(cal["fano_predicted"]), fano_obs=np.atleast_1d(cal["fano_observed"]),
            path=out / "figures" / "calibration.png")
    return figs


def write_evaluation_report(out: Path, metrics: dict, predictions: dict, *, title: str,
                            extra_sections: list | None = None, overwrite: bool = False):
    bin_size = metrics["bin_size_s"]
    horizons = [int(h) for h in metrics["horizons"]]
    results = metrics["results"]
    table, lines = horizon_table(results, horizons, bin_size)
    figs = _figures(out, metrics, predictions, horizons, bin_size)
    longest = str(max(horizons))
    decay = _get(results.get(MODEL, {}), longest, "pooled", "rollout", "per_bin_fp_bps", default=[])
    pred = predictability(decay, bin_size)
    summary = [
        f"Data: {metrics['data']} ({metrics['split']}); decoder {metrics['decoder']}, "
        f"likelihood {metrics['likelihood']}, feedback '{metrics['feedback']}'"
        + (", forecasting around the training trials' condition average (data.rate_prior=psth: it knows the "
           "condition, as the PSTH baseline does)." if metrics.get("rate_prior", "none") != "none" else "."),
        f"**How far ahead is the population predictable?** NeuroHorizon's per-bin forecast information "
        f"stays above {PREDICTABLE_BPS} bits/spike up to {pred['limit_ms']:.0f} ms ahead and halves by "
        f"{pred['half_life_ms']:.0f} ms (first bin: {pred['first_bin_bps']:.3f} bits/spike).",
        *lines,
    ]
    sections = [Section(title="Forecast quality per horizon", tables=[table], figures=[figs["decay"]],
                        paragraphs=["Bits/spike: NLB definition, null = per-neuron mean of the evaluated "
                                    "spikes; a null model scores 0. Horizons are whole bins: 12 bins are "
                                    "240 ms (the '250 ms' horizon)."])]
    gaps = gap_table(results, horizons, bin_size)
    if gaps is not None:
        sections.append(Section(title="Teacher forcing vs rollout", tables=[gaps], paragraphs=[
            "Teacher-forced numbers feed the true past counts; rollout feeds the model's own output, as in "
            "real use. A large gap signals exposure bias (see the study command)."]))
    sections.append(Section(title="Forecast vs actual", figures=[figs["raster"]]))
    if "psth" in figs:
        sections.append(Section(title="Condition-averaged PSTHs", figures=[figs["psth"]]))
    if "calibration" in figs:
        sections.append(Section(title="Calibration of sampled trajectories", figures=[figs["calibration"]]))
    sections += extra_sections or []
    return write_report(out, title=title, summary=summary, sections=sections,
                        metadata={"run": metrics["run"], "checkpoint": metrics["checkpoint"],
                                  "step": metrics["step"]}, overwrite=overwrite)
