"""Count statistics for `neurohorizon inspect` and a reasoned likelihood recommendation.

Dispersion is measured against a rate estimate so that rate modulation does not fake
over-dispersion: trial data use the per-condition PSTH at matched bins (across-trial
variance); continuous data use a leave-one-out Gaussian-smoothed rate. For a Poisson
process both give a dispersion index (variance / mean) of 1.

Per neuron we report:
    rate_hz, zero_fraction                  raw descriptive statistics
    fano                                    classic Fano factor (trials: across trials per
                                            condition and bin, mean over bins with mean > 0;
                                            continuous: counts in `fano_window` windows)
    dispersion_index, dispersion_z          pooled var/mean vs the rate estimate, and a
                                            z-score against Poisson (Var[(x-mu)^2] = mu + 2 mu^2)
    nb_alpha                                NB over-dispersion, Var = mu + alpha mu^2 (moments)
    zero_observed / zero_poisson / zero_nb  zero fraction observed and predicted by Poisson and
                                            by NB(alpha) given the same rate estimate
    zero_z_poisson, zero_z_nb               z-scores of the observed zeros vs those predictions
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.ndimage import convolve1d

from neurohorizon.data.binning import bin_recording, bin_spikes

Z_SIG = 3.09  # one-sided p < 0.001
LARGE_DATA_HOURS = 100.0  # recorded hours above which a categorical likelihood is worth it
# below this many spikes the compact preset beat the small one (benchmarks/results/
# small_data_variants.json: pmd 0.1 M and lorenz 0.3 M spikes); above, small won (reach 0.6 M)
COMPACT_BELOW_SPIKES = 500_000


# --------------------------------------------------------------- count layouts
def trial_counts(rec, bin_size: float, event: str | None):
    """{condition label: (n_trials, K, N) counts aligned at the anchor} or None if unusable.

    Conditions with fewer than 2 usable trials are left out.
    """
    tr = rec.trials
    if tr is None or len(tr.start) < 2:
        return None
    if event is None or event == "start":
        anchor = tr.start
    elif tr.events and event in tr.events:
        anchor = tr.events[event]
    else:
        raise ValueError(f"{rec.source}: no trial event {event!r} for statistics")
    ok = np.isfinite(anchor) & (tr.end > anchor)
    if ok.sum() < 2:
        return None
    k = int(np.floor(np.min((tr.end - anchor)[ok]) / bin_size + 1e-9))
    if k < 1:
        return None
    labels = tr.condition if tr.condition is not None else np.zeros(len(tr.start), str)
    times, units, n = rec.spike_times, rec.spike_units, rec.n_units
    groups = {}
    for label in sorted(set(labels[ok].tolist())):
        idx = np.flatnonzero(ok & (labels == label))
        if len(idx) >= 2:
            groups[label] = np.stack(
                [
                    bin_spikes(times, units, n, start=anchor[i], n_steps=k, bin_size=bin_size)
                    for i in idx
                ]
            ).astype(np.float64)
    return groups or None


def _loo_smooth(counts: np.ndarray, sigma_bins: float):
    """Leave-one-out Gaussian smoothing along time; returns (rate (T, N), sum of w^2)."""
    half = max(1, int(np.ceil(4 * sigma_bins)))
    w = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma_bins) ** 2)
    w[half] = 0.0  # exclude the bin itself so the estimate is independent of it
    w /= w.sum()
    return convolve1d(counts, w, axis=0, mode="reflect"), float((w**2).sum())


# ----------------------------------------------------------------- statistics
def _zero_stats(counts, mu, alpha, weight=None):
    """Observed vs predicted zero counts per neuron; counts/mu broadcast to (..., N)."""
    weight = np.ones_like(mu) if weight is None else weight
    axes = tuple(range(counts.ndim - 1))
    n = (np.ones_like(counts) * 1.0).sum(axis=axes)
    obs = (counts == 0).sum(axis=axes)
    p_pois = np.exp(-mu)
    a = np.maximum(alpha, 1e-8)
    p_nb = (1 + a * mu) ** (-1 / a)
    out = {"zero_observed": obs / n}
    for name, p in (("poisson", p_pois), ("nb", p_nb)):
        pred = (weight * p).sum(axis=axes)
        var = (weight * p * (1 - p)).sum(axis=axes)
        out[f"zero_{name}"] = pred / n
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"zero_z_{name}"] = (obs - pred) / np.sqrt(var)
    return out


def _trial_dispersion(groups):
    """Across-trial dispersion per neuron from per-condition (n_trials, K, N) arrays."""
    w = np.concatenate([np.full(g.shape[1:], g.shape[0] - 1.0) for g in groups])  # (sum K, N)
    m = np.concatenate([g.mean(0) for g in groups])
    v = np.concatenate([g.var(0, ddof=1) for g in groups])
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a silent unit's Fano factor is NaN, said elsewhere
        fano = np.nanmean(np.where(m > 0, v / np.where(m > 0, m, 1), np.nan), axis=0)
        index = (w * v).sum(0) / (w * m).sum(0)
        z = (w * (v - m)).sum(0) / np.sqrt((w * (m + 2 * m**2)).sum(0))
        alpha = np.maximum(0.0, (w * (v - m)).sum(0) / (w * m**2).sum(0))
    counts = np.concatenate([g.reshape(-1, g.shape[-1]) for g in groups])
    mu = np.concatenate(
        [np.broadcast_to(g.mean(0), g.shape).reshape(-1, g.shape[-1]) for g in groups]
    )
    zeros = _zero_stats(counts, mu, alpha)
    return dict(fano=fano, dispersion_index=index, dispersion_z=z, nb_alpha=alpha, **zeros)


def _continuous_dispersion(counts, bin_size, fano_window, smooth_s):
    """Dispersion per neuron of (T, N) counts against a leave-one-out smoothed rate."""
    x = counts.astype(np.float64)
    width = max(1, int(round(fano_window / bin_size)))
    n_win = len(x) // width
    agg = x[: n_win * width].reshape(n_win, width, -1).sum(1)
    mu, c = _loo_smooth(x, smooth_s / bin_size)
    resid = (x - mu) ** 2 / (1 + c)  # E[(x - mu_loo)^2] = mu (1 + c) for a Poisson process
    with np.errstate(invalid="ignore", divide="ignore"):
        m_agg = agg.mean(0) if n_win > 1 else np.full(x.shape[1], np.nan)
        fano = agg.var(0, ddof=1) / m_agg if n_win > 1 else m_agg
        index = resid.sum(0) / mu.sum(0)
        z = (resid - mu).sum(0) / np.sqrt((mu + 2 * mu**2).sum(0))
        alpha = np.maximum(0.0, (resid - mu).sum(0) / (mu**2).sum(0))
    zeros = _zero_stats(x, mu, alpha)
    return dict(fano=fano, dispersion_index=index, dispersion_z=z, nb_alpha=alpha, **zeros)


def _summary(per: dict, hours: float) -> dict:
    def med(key):
        v = np.asarray(per[key], float)
        v = v[np.isfinite(v)]
        return float(np.median(v)) if len(v) else float("nan")

    def frac(key, sign):
        v = np.asarray(per[key], float)
        v = v[np.isfinite(v)]
        return float(np.mean(sign * v > Z_SIG)) if len(v) else float("nan")

    zo, zp = np.asarray(per["zero_observed"], float), np.asarray(per["zero_poisson"], float)
    return {
        "n_units": len(per["rate_hz"]),
        "n_spikes": int(np.sum(per["n_spikes"])),
        "hours": hours,
        "mean_rate_hz": float(np.mean(per["rate_hz"])) if len(per["rate_hz"]) else float("nan"),
        "median_rate_hz": med("rate_hz"),
        "zero_fraction": float(np.average(per["zero_fraction"], weights=per["n_bins"])),
        "median_fano": med("fano"),
        "median_dispersion_index": med("dispersion_index"),
        "frac_overdispersed": frac("dispersion_z", 1),
        "frac_underdispersed": frac("dispersion_z", -1),
        "median_nb_alpha": med("nb_alpha"),
        "mean_excess_zeros_vs_poisson": float(np.nanmean(zo - zp)) if len(zo) else float("nan"),
        "frac_excess_zeros_vs_poisson": frac("zero_z_poisson", 1),
        "frac_excess_zeros_vs_nb": frac("zero_z_nb", 1),
    }


def _inside_domain(rec, n_steps: int, bin_size: float) -> np.ndarray:
    """(n_steps,) bool: bins of `bin_recording` that lie wholly inside a domain interval."""
    lo = rec.domain[0] + np.arange(n_steps) * bin_size
    starts, ends = np.asarray(rec.data.domain.start), np.asarray(rec.data.domain.end)
    k = np.searchsorted(starts, lo + 1e-9, side="right") - 1
    k = np.clip(k, 0, len(starts) - 1)
    return (lo >= starts[k] - 1e-9) & (lo + bin_size <= ends[k] + 1e-9)


def _session_stats(rec, bin_size, trial_event, fano_window, smooth_s) -> dict:
    counts = bin_recording(rec, bin_size)  # (T, N)
    counts = counts[_inside_domain(rec, len(counts), bin_size)]  # e.g. not the gaps between trials
    dur = len(counts) * bin_size
    groups = trial_counts(rec, bin_size, trial_event) if rec.trials is not None else None
    if groups is not None:
        method = "trials"
        disp = _trial_dispersion(list(groups.values()))
    else:
        method = "continuous"
        # unit chunks bound memory (a float64 copy of 1 h x 300 units is ~0.4 GB)
        parts = [
            _continuous_dispersion(counts[:, i : i + 32], bin_size, fano_window, smooth_s)
            for i in range(0, counts.shape[1], 32)
        ]
        disp = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    per = {
        "unit_id": rec.unit_ids.tolist(),
        "rate_hz": (counts.sum(0) / dur).tolist(),
        "n_spikes": counts.sum(0).astype(int).tolist(),
        "zero_fraction": (counts == 0).mean(0).tolist(),
        "n_bins": [len(counts)] * rec.n_units,
        **{k: np.asarray(v, float).tolist() for k, v in disp.items()},
    }
    tr = rec.trials
    return {
        "session": rec.session_id,
        "source": rec.source,
        "method": method,
        "duration_s": dur,  # time in whole bins inside the recorded intervals
        "recorded_s": float(np.sum(np.asarray(rec.data.domain.end) - np.asarray(rec.data.domain.start))),
        "n_units": rec.n_units,
        "n_spikes": int(counts.sum()),
        "n_trials": 0 if tr is None else len(tr.start),
        "fano_window_s": bin_size if method == "trials" else fano_window,  # the counts the Fano factor uses
        "count_histogram": np.bincount(counts.astype(np.int64).ravel()).tolist(),  # (unit, bin) cells per count
        "trials": trial_structure(rec),
        "summary": _summary(per, dur / 3600),
        "per_neuron": per,
    }


def count_summary(histograms: list, *, default_k: int = 8, max_truncated: float = 1e-3) -> dict:
    """What a categorical likelihood (classes 0..K, one overflow class) would make of these
    counts: the largest count per bin, the fraction of (unit, bin) counts above the default K
    (`losses.Categorical`'s max_count; a test keeps the two equal), and the smallest K that
    truncates at most `max_truncated` of them."""
    hist = np.zeros(max(1, *(len(h) for h in histograms)), np.int64)
    for h in histograms:
        hist[: len(h)] += h
    above = hist.sum() - np.cumsum(hist)  # above[k]: counts > k
    total = max(int(hist.sum()), 1)
    return {
        "max_count": int(np.flatnonzero(hist)[-1]) if hist.any() else 0,
        "default_k": default_k,
        "fraction_above_default_k": float(above[default_k] / total) if default_k < len(above) else 0.0,
        "k_for_max_truncated": int(np.argmax(above / total <= max_truncated)),
        "max_truncated": max_truncated,
    }


def trial_structure(rec) -> dict | None:
    """What data.align_event / data.events / conditions can name: the trial events (with their
    median time from the trial start), the condition labels and the range of trial lengths."""
    tr = rec.trials
    if tr is None or not len(tr.start):
        return None
    start = np.asarray(tr.start, float)
    lengths = np.asarray(tr.end, float) - start
    events = {}
    for name, times in sorted((tr.events or {}).items()):
        offsets = np.asarray(times, float) - start
        offsets = offsets[np.isfinite(offsets)]
        events[name] = float(np.median(offsets)) if len(offsets) else float("nan")
    return {
        "n_trials": len(start),
        "events_median_s_from_start": events,
        "conditions": [] if tr.condition is None else sorted({str(c) for c in tr.condition}),
        "length_s": [float(lengths.min()), float(lengths.max())],
    }


def describe_trials(stats: dict, max_labels: int = 8) -> list[str]:
    """Text lines with each session's trial structure (sessions without trials are left out)."""
    lines = []
    for s in stats["sessions"]:
        t = s.get("trials")
        if not t:
            continue
        events = ", ".join(f"{k} ({v:+.2f} s)" for k, v in t["events_median_s_from_start"].items()) or "none"
        labels = t["conditions"]
        shown = ", ".join(labels[:max_labels]) + (f" and {len(labels) - max_labels} more" if len(labels) > max_labels else "")
        lines += [
            f"    {s['session']}: {t['n_trials']} trials of {t['length_s'][0]:.2f}-{t['length_s'][1]:.2f} s; "
            f"{len(labels)} condition(s){': ' + shown if labels else ''}",
            f"      events (median time from trial start): {events}",
        ]
    return lines


def _check_bin_fits(rec, bin_size: float) -> None:
    """A bin longer than every trial (or than the recording) leaves nothing to count: say so first."""
    if not bin_size > 0:
        raise ValueError(f"{rec.source}: bin size must be > 0 s, got {bin_size!r}")
    t = rec.trials
    longest = float(np.max(np.asarray(t.end) - np.asarray(t.start))) if t is not None and len(t.start) else \
        float(rec.domain[1] - rec.domain[0])
    if bin_size > longest:
        what = "longest trial" if t is not None and len(t.start) else "recording"
        raise ValueError(f"{rec.source}: a {bin_size * 1000:g} ms bin is longer than its {what} "
                         f"({longest * 1000:.0f} ms); choose a shorter --bin-size-ms")


def recording_stats(
    recordings,
    bin_size: float = 0.02,
    *,
    trial_event: str | None = None,
    fano_window: float = 0.1,
    smooth_s: float = 0.1,
) -> dict:
    """Statistics per session and overall (JSON-serialisable; NaN where undefined).

    Args:
        trial_event: anchor for across-trial statistics (default: trial start).
        fano_window: counting window (s) of the continuous Fano factor.
        smooth_s: Gaussian sigma (s) of the continuous leave-one-out rate estimate.
    """
    for r in recordings:
        _check_bin_fits(r, bin_size)
    sessions = [_session_stats(r, bin_size, trial_event, fano_window, smooth_s) for r in recordings]
    keys = sessions[0]["per_neuron"].keys()
    per = {k: [v for s in sessions for v in s["per_neuron"][k]] for k in keys}
    hours = sum(s["duration_s"] for s in sessions) / 3600
    summary = _summary(per, hours)  # n_units counts each session's units; some data share ids across sessions
    summary["n_distinct_units"] = len({str(u) for r in recordings for u in r.unit_ids})
    summary["counts"] = count_summary([s["count_histogram"] for s in sessions])
    return {
        "bin_size": bin_size,
        "fano_window": fano_window,
        "smooth_s": smooth_s,
        "trial_event": trial_event,
        "sessions": sessions,
        "overall": {"summary": summary, "per_neuron": per},
    }


# -------------------------------------------------------------- recommendation
MIXED_FRACTION = 0.3  # over- and under-dispersed units both at least this common: say so


def recommend_likelihood(stats: dict) -> tuple[str, list[str]]:
    """Pick "poisson" | "negbin" | "zip" | "categorical" from `recording_stats` output.

    Poisson is the default (one parameter, a useful prior on limited data); NB when counts
    are clearly over-dispersed relative to the rate; ZIP when zeros exceed even what NB
    predicts; categorical only with very large data and non-Poisson counts.
    """
    s = stats["overall"]["summary"]
    reasons = []
    disp, over, under = (
        s["median_dispersion_index"],
        s["frac_overdispersed"],
        s["frac_underdispersed"],
    )
    reasons.append(
        f"median dispersion index {disp:.2f} ({_dispersion_method(stats)}); "
        f"{over:.0%} of units significantly over-, {under:.0%} under-dispersed (|z| > {Z_SIG})"
    )
    reasons.append(
        f"median Fano factor {s['median_fano']:.2f} ({_fano_method(stats)}): shown for reference; the choice "
        "uses the dispersion index, which measures variance around the rate estimate, not rate changes"
    )
    overdispersed = disp > 1.1 and over >= 0.5
    subpoisson = disp < 0.9 and under >= 0.5
    zero_inflated = s["frac_excess_zeros_vs_nb"] >= 0.5 and s["mean_excess_zeros_vs_poisson"] > 0.01
    reasons.append(
        f"zeros: {s['mean_excess_zeros_vs_poisson']:+.3f} mean excess over Poisson given the rate; "
        f"{s['frac_excess_zeros_vs_nb']:.0%} of units have more zeros than NB(alpha) predicts"
    )
    if s["hours"] >= LARGE_DATA_HOURS and (overdispersed or subpoisson or zero_inflated):
        reasons.append(
            f"{s['hours']:.0f} h of data: enough to learn a full categorical count distribution"
        )
        if "counts" in s:
            c = s["counts"]
            reasons.append(f"loss.options.max_count={c['k_for_max_truncated']} truncates at most "
                           f"{100 * c['max_truncated']:g} % of the counts (the largest is {c['max_count']})")
        return "categorical", reasons
    reasons.append(
        f"{s['hours']:.2f} h of data: limited, prefer a parametric likelihood"
        if s["hours"] < LARGE_DATA_HOURS
        else f"{s['hours']:.0f} h of data, but counts look Poisson"
    )
    if zero_inflated:
        reasons.append("excess zeros beyond over-dispersion: zero-inflated Poisson")
        return "zip", reasons
    if overdispersed:
        reasons.append(
            f"clearly over-dispersed (median NB alpha {s['median_nb_alpha']:.2f}): negative binomial"
        )
        return "negbin", reasons
    if subpoisson:
        reasons.append(
            f"dispersion index {disp:.2f} with {under:.0%} of units under-dispersed: sub-Poisson (more regular "
            "than Poisson): Poisson over-states the variance but neither NB nor ZIP can express this; "
            "Poisson kept as the robust default"
        )
    else:
        reasons.append(_poisson_reason(disp, over, under))
    if over >= MIXED_FRACTION and under >= MIXED_FRACTION:  # the median hides two populations
        reasons.append(f"mixed population: {over:.0%} of units over- and {under:.0%} under-dispersed, so no "
                       "single dispersion fits; Poisson is the compromise. negbin (loss.options.dispersion="
                       "per_neuron) fits only the over-dispersed ones; categorical fits both, given enough data")
    return "poisson", reasons


def _poisson_reason(disp: float, over: float, under: float) -> str:
    """Why Poisson, in terms of the dispersion index it was decided on."""
    if not np.isfinite(disp):
        return "dispersion index undefined (no counts to measure it): Poisson (the default)"
    if 0.9 <= disp <= 1.1:
        return f"dispersion index {disp:.2f} close to 1: Poisson (the default)"
    side, frac = ("over", over) if disp > 1.1 else ("under", under)
    return (f"dispersion index {disp:.2f}, but only {frac:.0%} of units significantly {side}-dispersed "
            f"(it takes half to call the data {side}-dispersed): Poisson (the default)")


def _methods(stats: dict) -> set:
    return {s["method"] for s in stats["sessions"]}


def _dispersion_method(stats: dict) -> str:
    """How the dispersion index was measured, for the recommendation's reasons."""
    counts = f"variance/mean of {stats['bin_size'] * 1000:g} ms counts around the rate estimate"
    where = {"trials": "the per-condition PSTH across trials",
             "continuous": f"a leave-one-out rate smoothed over {stats['smooth_s'] * 1000:g} ms"}
    return f"{counts}: " + " or ".join(where[m] for m in sorted(_methods(stats)))


def _fano_method(stats: dict) -> str:
    """Which counts the Fano factor was computed on (it differs between trial and continuous data)."""
    where = {"trials": f"across trials, per condition and {stats['bin_size'] * 1000:g} ms bin",
             "continuous": f"counts in {stats['fano_window'] * 1000:g} ms windows"}
    return " or ".join(where[m] for m in sorted(_methods(stats)))


def recommend_preset(stats: dict) -> tuple[str, str]:
    """"compact" or "small" from the data size (a rule of thumb from the measured datasets)."""
    n = stats["overall"]["summary"]["n_spikes"]
    if n < COMPACT_BELOW_SPIKES:
        return "compact", (f"{n:,} spikes: the small preset (4.3 M params) tends to overfit data this size; "
                           "compact (0.16 M) won on pmd (0.1 M spikes) and lorenz (0.3 M)")
    return "small", f"{n:,} spikes: the small preset (4.3 M params) won on synthetic reach (0.6 M spikes)"
