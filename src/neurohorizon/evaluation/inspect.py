"""`neurohorizon inspect`: data statistics as text, stats.json and figures."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from neurohorizon.data.binning import bin_recording  # noqa: E402
from neurohorizon.data.stats import (  # noqa: E402
    describe_trials,
    recommend_likelihood,
    recommend_preset,
    recording_stats,
    trial_counts,
)
from neurohorizon.runs import json_text  # noqa: E402

FILES = ("stats.json", "summary.txt", "rates.png", "fano.png", "raster.png")
RASTER_S = 10.0  # length of the raster stretch (s)


def _unit_count(summary: dict) -> str:
    """'N units', or 'N unit recordings (M distinct units)' when sessions share unit ids."""
    n, distinct = summary["n_units"], summary.get("n_distinct_units", summary["n_units"])
    return f"{n} units" if distinct == n else f"{n} unit recordings ({distinct} distinct units)"


def summary_text(stats: dict, name: str, recommendation) -> str:
    lines = [f"== {name}: {len(stats['sessions'])} session(s), bin {stats['bin_size'] * 1000:g} ms"]
    for s in stats["sessions"]:
        m = s["summary"]
        lines.append(
            f"  {s['session']:<24} {s['method']:<10} {s['duration_s']:9.1f} s  {s['n_units']:4d} units  "
            f"{s['n_trials']:4d} trials  rate {m['mean_rate_hz']:6.2f} Hz  zeros {m['zero_fraction']:.3f}  "
            f"Fano {m['median_fano']:.2f}  disp {m['median_dispersion_index']:.2f}"
        )
        recorded = s.get("recorded_s", s["duration_s"])
        if s["duration_s"] < 0.9 * recorded:  # bins crossing the edges of recorded intervals are not counted
            lines.append(f"    only {s['duration_s']:.1f} s of the {recorded:.1f} s recorded fall in whole "
                         f"{stats['bin_size'] * 1000:g} ms bins inside the recorded intervals (e.g. trials); "
                         "a shorter bin counts more")
    o = stats["overall"]["summary"]
    lines += [
        f"  overall: {_unit_count(o)}, {o['hours']:.3f} h, mean rate {o['mean_rate_hz']:.2f} Hz "
        f"(median {o['median_rate_hz']:.2f}), zero bins {o['zero_fraction']:.3f}",
        f"  median Fano {o['median_fano']:.2f}, dispersion index {o['median_dispersion_index']:.2f}, "
        f"over-dispersed units {o['frac_overdispersed']:.0%}, under-dispersed {o['frac_underdispersed']:.0%}, "
        f"median NB alpha {o['median_nb_alpha']:.3f}",
        f"  excess zeros vs Poisson {o['mean_excess_zeros_vs_poisson']:+.3f}; units with zeros "
        f"beyond NB {o['frac_excess_zeros_vs_nb']:.0%}",
        _counts_line(o["counts"], stats["bin_size"]),
        f"  recommended likelihood: {recommendation[0]} (loss.likelihood={recommendation[0]})",
        *[f"    - {r}" for r in recommendation[1]],
    ]
    preset, why = recommend_preset(stats)
    lines += [f"  recommended model size: {preset} (model.preset={preset})", f"    - {why}"]
    trials = describe_trials(stats)
    if trials:  # the names data.align_event and data.events accept
        lines += ["  trials (event names for data.align_event and data.events):", *trials]
    return "\n".join(lines)


def _counts_line(c: dict, bin_size: float) -> str:
    """The count range a categorical likelihood's K must cover."""
    return (f"  counts per {bin_size * 1000:g} ms bin: up to {c['max_count']}; above K={c['default_k']} (the "
            f"categorical default): {100 * c['fraction_above_default_k']:.3g} %; K truncating at most "
            f"{100 * c['max_truncated']:g} %: {c['k_for_max_truncated']} (loss.options.max_count)")


def _hist(ax, values, title, xlabel, ref=None):
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    ax.hist(v, bins=min(40, max(5, len(v) // 3)), color="0.4")
    if ref is not None:
        ax.axvline(ref, color="r", ls="--", lw=1)
    ax.set(title=title, xlabel=xlabel, ylabel="units")


def _raster(rec, stats_session, bin_size, trial_event, path):
    fig, (ax_r, ax_p) = plt.subplots(2, 1, figsize=(9, 6), height_ratios=(2, 1))
    t0 = rec.domain[0]
    t1 = min(rec.domain[1], t0 + RASTER_S)
    times, units = rec.spike_times, rec.spike_units
    keep = (times >= t0) & (times < t1)
    ax_r.scatter(times[keep], units[keep], s=1, c="k", marker="|")
    ax_r.set(title=f"{rec.session_id}: raster {t0:.1f}-{t1:.1f} s", ylabel="unit", xlim=(t0, t1))
    groups = (
        trial_counts(rec, bin_size, trial_event) if stats_session["method"] == "trials" else None
    )
    if groups is not None:
        for label, g in groups.items():
            x = np.arange(g.shape[1]) * bin_size
            ax_p.plot(x, g.mean((0, 2)) / bin_size, label=str(label), lw=1)
        ax_p.set(
            title="PSTH per condition (population mean)",
            xlabel=f"time from {trial_event or 'trial start'} (s)",
        )
        if 1 < len(groups) <= 10 and ax_p.get_legend_handles_labels()[0]:  # one group needs no legend
            ax_p.legend(fontsize=7)
    else:
        counts = bin_recording(rec, bin_size, start=t0, end=t1)
        x = t0 + np.arange(len(counts)) * bin_size
        ax_p.plot(x, counts.mean(1) / bin_size, lw=0.8, c="k")
        ax_p.set(title="population rate (mean per unit)", xlabel="time (s)", xlim=(t0, t1))
    ax_p.set_ylabel("rate (Hz)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def inspect_data(
    recordings,
    out_dir: str | Path,
    *,
    bin_size: float = 0.02,
    name: str = "data",
    trial_event: str | None = None,
    overwrite: bool = False,
) -> dict:
    """Print and save a data summary into the existing folder `out_dir`.

    Writes stats.json, summary.txt, rates.png, fano.png and raster.png (raster of the
    first session with PSTH per condition, or its population rate). Refuses to replace
    existing files unless `overwrite`.

    Returns:
        dict(stats, recommendation=(name, reasons), text, files={key: path}).
    """
    out = Path(out_dir)
    if not out.is_dir():
        raise FileNotFoundError(f"inspect output folder {out} does not exist (create it first)")
    existing = [f for f in FILES if (out / f).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out}: would overwrite {existing}; choose a new folder")
    if not recordings:
        raise ValueError(f"{name}: no recordings to inspect")
    stats = recording_stats(recordings, bin_size, trial_event=trial_event)
    rec = recommend_likelihood(stats)
    text = summary_text(stats, name, rec)
    print(text)
    files = {f.split(".")[0]: out / f for f in FILES}
    preset = recommend_preset(stats)
    payload = {"name": name, "recommendation": {"likelihood": rec[0], "reasons": rec[1],
                                                "preset": preset[0], "preset_reason": preset[1]}, **stats}
    files["stats"].write_text(json_text(payload, indent=1))
    files["summary"].write_text(text + "\n")
    per = stats["overall"]["per_neuron"]

    fig, ax = plt.subplots(figsize=(5, 3.5))
    _hist(ax, per["rate_hz"], f"{name}: firing rates", "rate (Hz)")
    fig.tight_layout()
    fig.savefig(files["rates"], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    _hist(axes[0], per["fano"], "Fano factor", "Fano", ref=1.0)
    _hist(axes[1], per["dispersion_index"], "dispersion vs rate estimate", "var / mean", ref=1.0)
    fig.tight_layout()
    fig.savefig(files["fano"], dpi=110)
    plt.close(fig)

    _raster(recordings[0], stats["sessions"][0], bin_size, trial_event, files["raster"])
    return {"stats": stats, "recommendation": rec, "text": text, "files": files}
