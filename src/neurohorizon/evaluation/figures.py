"""Figures for `evaluate`, `demo` and `study`: forecast decay, rasters, PSTHs, calibration, bars.

Every function takes plain numpy arrays plus an output path, writes one PNG and returns the path.
Figures are built on `matplotlib.figure.Figure` with the Agg canvas, never through pyplot, so
no global figure state is created (nothing to leak, safe on machines without a display).
Time axes are in ms; horizons are labelled in bins and ms with `horizon_label`.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from neurohorizon.data.binning import DEFAULT_BIN_SIZE, horizon_label, standard_horizons
from neurohorizon.evaluation.metrics import smooth_gaussian

DPI = 120
ONSET_STYLE = dict(color="tab:red", lw=1.2, ls="-")


# ------------------------------------------------------------------ helpers
def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")
    fig.clear()  # free memory now; the figure is not registered with pyplot
    return path


def _array(x, name: str, ndim: int) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-d array, got shape {a.shape}")
    return a


def _ms(bin_size: float) -> float:
    if not bin_size > 0:
        raise ValueError(f"bin_size must be positive, got {bin_size}")
    return bin_size * 1000.0


def _finite_max(*arrays: np.ndarray, q: float = 99.0, floor: float = 1.0) -> float:
    vals = np.concatenate([a[np.isfinite(a)].ravel() for a in arrays])
    return max(floor, float(np.percentile(vals, q))) if vals.size else floor


def _method_style(name: str) -> dict:
    """NeuroHorizon lines thick, teacher-forced dashed, baselines thin."""
    low = name.lower()
    ours = low.startswith("neurohorizon")
    style = dict(lw=2.2 if ours else 1.3, alpha=1.0 if ours else 0.85, zorder=3 if ours else 2)
    if "teacher-forced" in low:  # the evaluation mode, not a model's name ("teacher_forcing (rollout)")
        style.update(ls="--", zorder=2.5)
    return style


# ------------------------------------------------------------------ decay
# distinct colours for up to 15 methods (no grey: grey is the null line; no black: the oracle's)
DECAY_COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
                "tab:olive", "tab:cyan", "navy", "darkgoldenrod", "lime", "maroon", "teal", "magenta"] * 2


def _clip_far_below(ax, curves: dict, oracle) -> None:
    """Keep the informative range readable: a method far below the null (e.g. persistence at -1.2
    bits/spike) would squash every other curve, so the axis stops at -0.5x the best value and says so."""
    values = np.concatenate([np.asarray(c, float).ravel() for c in curves.values()]
                            + ([np.asarray(oracle, float).ravel()] if oracle is not None else []))
    values = values[np.isfinite(values)]
    if not values.size or values.max() <= 0:
        return
    floor = -0.5 * values.max()
    if values.min() < floor:
        ax.set_ylim(bottom=floor)
        ax.text(0.01, 0.01, "axis clipped: lower values run off the bottom", transform=ax.transAxes,
                fontsize=7, color="0.35")
def plot_decay(
    curves: dict[str, np.ndarray],
    *,
    bin_size: float,
    path,
    oracle: np.ndarray | None = None,
    causal_oracle: np.ndarray | None = None,
    title: str = "Forecast quality vs time ahead",
    horizons: Sequence[int] | None = None,
) -> Path:
    """Per-bin forecast bits/spike vs time ahead, one line per method.

    curves: name -> (T,) per-bin bits/spike (NaN allowed: gaps in the line). Bin k (0-based) is
    plotted at its end, (k + 1) * bin_size, so the last bin of a 12-bin forecast sits at 240 ms.
    oracle: (T,) per-bin bits/spike of the true rates (synthetic data), drawn black dashed.
    causal_oracle: (T,) per-bin bits/spike of the causal oracle (the best forecast from the past),
        drawn grey dashed.
    """
    ms = _ms(bin_size)
    if not curves:
        raise ValueError("plot_decay: no curves given")
    fig = _new_figure(8.0, 4.6)
    ax = fig.add_subplot()
    t_max, colors = 0, iter(DECAY_COLORS)
    for name, curve in curves.items():
        y = _array(curve, f"plot_decay curve {name!r}", 1)
        t_max = max(t_max, len(y))
        ax.plot((np.arange(len(y)) + 1) * ms, y, label=name, color=next(colors), **_method_style(name))
    for ceiling, color, label in ((oracle, "black", "oracle (true rates)"),
                                  (causal_oracle, "0.45", "causal oracle (best from the past)")):
        if ceiling is not None:
            y = _array(ceiling, f"plot_decay {label}", 1)
            t_max = max(t_max, len(y))
            ax.plot((np.arange(len(y)) + 1) * ms, y, color=color, ls="--", lw=1.5, label=label)
    ax.axhline(0.0, color="0.4", lw=0.9, ls="-", label="null (per-neuron mean rate) = 0")
    shown = [h for h in (standard_horizons(bin_size) if horizons is None else horizons) if h <= t_max]
    for h in shown:
        ax.axvline(h * ms, color="0.55", ls=":", lw=1.0)
    top = ax.secondary_xaxis("top")  # horizon marks labelled in bins and ms
    top.set_xticks([h * ms for h in shown], [horizon_label(h, bin_size) for h in shown], fontsize=8)
    top.tick_params(length=0, colors="0.3")
    ax.set_xlim(0, t_max * ms)
    _clip_far_below(ax, curves, oracle)
    ax.set_xlabel(f"time ahead of forecast onset (ms; {ms:g} ms bins)")
    ax.set_ylabel("forecast bits/spike in that bin")
    ax.set_title(title)
    ax.grid(alpha=0.25)
    fig.legend(loc="outside right upper", fontsize=8, frameon=False)
    return _save(fig, path)


# ------------------------------------------------------------------ forecast raster
def _choose_units(context, target, mean, unit_order, max_units: int) -> np.ndarray:
    """Unit columns to show: the given order, else the most active units sorted by predicted peak time."""
    n = target.shape[1]
    if unit_order is not None:
        order = np.asarray(unit_order, dtype=np.int64)
        if order.size and (order.min() < 0 or order.max() >= n):
            raise ValueError(f"plot_forecast_raster: unit_order indexes outside 0..{n - 1}")
        return order[:max_units]
    activity = np.nansum(context, axis=0) + np.nansum(target, axis=0) + np.nansum(mean, axis=0)
    top = np.argsort(-activity, kind="stable")[:max_units]
    filled = np.where(np.isfinite(mean[:, top]), mean[:, top], -np.inf)
    peak = np.argmax(filled, axis=0) if len(mean) else np.zeros(len(top), dtype=np.int64)
    return top[np.argsort(peak, kind="stable")]


def _raster_panel(fig, ax, data, extent, vmax, label, cbar_label, cmap="Greys"):
    missing = ~np.isfinite(data)
    if missing.any():  # bins past the recording's end: hatched, so they are not read as zero counts
        ax.set_facecolor("none")
        ax.add_patch(Rectangle((extent[0], extent[2]), extent[1] - extent[0], extent[3] - extent[2], zorder=0,
                               facecolor="white", edgecolor="0.6", hatch="///", lw=0))
        label += " (hatched: not recorded)"
    im = ax.imshow(
        np.ma.masked_invalid(data.T),
        aspect="auto",
        origin="lower",
        interpolation="nearest",
        extent=extent,
        cmap=cmap,
        vmin=0,
        vmax=vmax,
    )
    ax.axvline(0, **ONSET_STYLE)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # units are whole rows, not 2.5
    ax.set_ylabel("unit (sorted)")
    ax.set_title(label, loc="left", fontsize=10)
    fig.colorbar(im, ax=ax, pad=0.01, fraction=0.03).set_label(cbar_label, fontsize=8)


def _raster_inputs(context, target, mean, samples):
    """The forecast figure's arrays, checked to agree: (Tc, N), (T, N), (T, N), (S, T, N) or None."""
    context = _array(context, "plot_forecast_raster context", 2)
    target = _array(target, "plot_forecast_raster target", 2)
    mean = _array(mean, "plot_forecast_raster mean", 2)
    if target.shape != mean.shape or context.shape[1] != target.shape[1]:
        raise ValueError(f"plot_forecast_raster: shapes disagree, context {context.shape}, "
                         f"target {target.shape}, mean {mean.shape}")
    if samples is not None:
        samples = _array(samples, "plot_forecast_raster samples", 3)
        if samples.shape[1:] != target.shape:
            raise ValueError(f"plot_forecast_raster: samples {samples.shape} do not match target {target.shape}")
    return context, target, mean, samples


def plot_forecast_raster(
    *,
    context: np.ndarray,
    target: np.ndarray,
    mean: np.ndarray,
    samples: np.ndarray | None,
    bin_size: float,
    path,
    unit_order=None,
    max_units: int = 40,
    title: str = "Forecast vs actual",
) -> Path:
    """Forecast vs actual for one window.

    context (Tc, N) and target (T, N) observed counts, mean (T, N) predicted expected counts,
    samples (S, T, N) sampled count trajectories or None. Panels: (a) actual counts, context
    and future; (b) predicted expected counts; (c, d) up to two sampled trajectories; last, the
    population count, actual vs predicted mean with 50% / 90% bands from the samples. Rasters show
    at most `max_units` units (default: the most active, sorted by predicted peak time); the
    population panel sums all N.
    """
    ms = _ms(bin_size)
    context, target, mean, samples = _raster_inputs(context, target, mean, samples)
    Tc, T = len(context), len(target)
    units = _choose_units(context, target, mean, unit_order, max_units)
    n_shown = len(units)
    n_sample_panels = 0 if samples is None else min(2, len(samples))

    heights = [1.0, 1.0] + [1.0] * n_sample_panels + [0.9]
    fig = _new_figure(9.0, 2.0 * len(heights) + 0.6)
    axes = fig.subplots(len(heights), 1, sharex=True, gridspec_kw=dict(height_ratios=heights))
    vmax = _finite_max(context[:, units], target[:, units])
    y_ext = (-0.5, n_shown - 0.5)
    full = np.concatenate([context, target])[:, units]
    _raster_panel(
        fig,
        axes[0],
        full,
        (-Tc * ms, T * ms, *y_ext),
        vmax,
        f"(a) actual spike counts, {n_shown} of {target.shape[1]} units"
        + (" (sorted by predicted peak time)" if unit_order is None else ""),
        "spikes / bin",
    )
    _raster_panel(
        fig,
        axes[1],
        mean[:, units],
        (0, T * ms, *y_ext),
        _finite_max(mean[:, units], floor=1e-3),
        "(b) predicted expected counts",
        "expected spikes / bin",
        cmap="viridis",
    )
    for i in range(n_sample_panels):
        _raster_panel(
            fig,
            axes[2 + i],
            samples[i][:, units],
            (0, T * ms, *y_ext),
            vmax,
            f"({'cd'[i]}) sampled trajectory {i + 1}",
            "spikes / bin",
        )
    _population_panel(axes[-1], context, target, mean, samples, ms)
    axes[-1].set_title(
        f"({'cde'[n_sample_panels]}) population count, all {target.shape[1]} units",
        loc="left",
        fontsize=10,
    )
    axes[-1].set_xlabel("time relative to forecast onset (ms)")
    axes[-1].set_xlim(-Tc * ms, T * ms)
    # the title (often a long session id) wraps to the figure's width instead of running off it
    width = int(fig.get_figwidth() * 11)  # characters per line at the default title size
    fig.suptitle(textwrap.fill(f"{title} — horizon {horizon_label(T, bin_size)}, context {Tc * ms:g} ms", width))
    return _save(fig, path)


def _population_count(counts: np.ndarray) -> np.ndarray:
    """(T,) summed counts of each bin; NaN where no unit was observed (nothing to plot there)."""
    seen = ~np.isnan(counts).all(1)
    return np.where(seen, np.nansum(counts, 1), np.nan)


def _population_panel(ax, context, target, mean, samples, ms: float) -> None:
    Tc, T = len(context), len(target)
    t_ctx = (np.arange(-Tc, 0) + 0.5) * ms  # bin centres
    t_fut = (np.arange(T) + 0.5) * ms
    actual = np.concatenate([_population_count(context), _population_count(target)])
    ax.plot(np.concatenate([t_ctx, t_fut]), actual, color="black", lw=1.2, label="actual")
    if np.isnan(actual[Tc:]).all():  # e.g. a forecast past the end of the recording
        ax.text(0.99, 0.04, "actual: not recorded after onset", transform=ax.transAxes, ha="right",
                va="bottom", fontsize=8, color="0.3")  # below the legend, which sits at the top
    bands = []
    if samples is not None and len(samples) > 1:
        pop = np.nansum(samples, axis=2)  # (S, T)
        for lo, hi, alpha, name in ((5, 95, 0.18, "90% band"), (25, 75, 0.35, "50% band")):
            band = np.percentile(pop, [lo, hi], axis=0)
            ax.fill_between(
                t_fut,
                band[0],
                band[1],
                color="tab:blue",
                alpha=alpha,
                lw=0,
                label=f"samples {name}",
                step="mid",
            )
            bands.append(band)
    ax.plot(t_fut, np.nansum(mean, 1), color="tab:blue", lw=2, label="predicted mean")
    ax.axvline(0, **ONSET_STYLE, label="forecast onset (t = 0)")
    ax.set_ylim(
        0, _finite_max(actual, np.nansum(mean, 1), *bands, q=100) * 1.4
    )  # headroom for the legend
    ax.set_ylabel("spikes / bin")
    ax.legend(fontsize=8, loc="upper left", ncol=5, framealpha=0.9)
    ax.grid(alpha=0.25)


# ------------------------------------------------------------------ PSTHs
def _condition_colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10"] if n <= 10 else colormaps["hsv"]
    return [cmap(i if n <= 10 else i / n) for i in range(n)]


def _spread(items: list, k: int) -> list:
    """At most k of `items`, evenly spaced (every condition when there are k or fewer)."""
    if len(items) <= k:
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, k).round().astype(int)]


def _grid(n: int) -> tuple[int, int]:
    """(rows, cols) for n panels: at most 4 columns, 3 when that leaves no empty panel and 4 would."""
    cols = 3 if n % 4 and n % 3 == 0 else min(4, n)
    return int(np.ceil(n / cols)), cols


def plot_psths(
    *,
    predicted: dict,
    actual: dict,
    bin_size: float,
    path,
    units: list[int],
    context: dict | None = None,
    title: str = "Condition-averaged firing rates: actual vs forecast",
    unit_names: list[str] | None = None,
    smooth_ms: float = 40.0,
    max_conditions: int = 4,
) -> Path:
    """Small multiples, one panel per unit: condition-averaged rate (Hz) actual solid, predicted dashed.

    predicted / actual: condition -> (T, N) mean counts per bin over the future; context: optional
    condition -> (Tc, N) actual mean counts before onset (drawn thin). Rates are counts / bin_size.
    Every curve is smoothed by the same Gaussian (sd `smooth_ms`; 0 for none), context and future
    separately, because a few trials per condition give averages too noisy to read bin by bin. At
    most `max_conditions` conditions, evenly spaced in their order, are drawn.
    """
    ms = _ms(bin_size)
    conds = list(actual)
    if not conds or not units:
        raise ValueError("plot_psths: need at least one condition and one unit")
    missing = [c for c in conds if c not in predicted]
    if missing:
        raise ValueError(f"plot_psths: no prediction for conditions {missing}")
    shown = _spread(conds, max_conditions)
    colors = _condition_colors(len(shown))
    sigma = smooth_ms / ms

    def curve(arrays, c, name):
        counts = _array(arrays[c], f"plot_psths {name}[{c!r}]", 2).astype(float)
        return smooth_gaussian(counts, sigma, axis=0) / bin_size

    nrows, ncols = _grid(len(units))
    fig = _new_figure(3.2 * ncols + 1.9, 2.5 * nrows + 0.6)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharex=True, squeeze=False)).ravel()
    for ax, u in zip(axes, units):
        for c, color in zip(shown, colors):
            act, pred = curve(actual, c, "actual"), curve(predicted, c, "predicted")
            ax.plot((np.arange(len(act)) + 0.5) * ms, act[:, u], color=color, lw=1.5)
            ax.plot((np.arange(len(pred)) + 0.5) * ms, pred[:, u], color=color, lw=1.5, ls="--")
            if context is not None and c in context:
                ctx = curve(context, c, "context")
                ax.plot((np.arange(-len(ctx), 0) + 0.5) * ms, ctx[:, u], color=color, lw=0.9, alpha=0.7)
        ax.axvline(0, color="0.3", ls=":", lw=1.0)
        ax.set_title(unit_names[u] if unit_names else f"unit {u}", fontsize=9)
        ax.grid(alpha=0.25)
    for ax in axes[len(units) :]:
        ax.set_visible(False)
    for ax in axes[::ncols]:
        ax.set_ylabel("rate (Hz)")
    for ax in axes[max(0, len(units) - ncols) : len(units)]:  # lowest visible panel of each column
        ax.xaxis.set_tick_params(labelbottom=True)
        ax.set_xlabel("time from forecast onset (ms)")
    _psth_legend(fig, shown, colors, smooth_ms, with_context=context is not None)
    note = f" ({len(shown)} of {len(conds)} conditions)" if len(shown) < len(conds) else ""
    fig.suptitle(title + note)
    return _save(fig, path)


def _psth_legend(fig, conds, colors, smooth_ms: float, *, with_context: bool = False) -> None:
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color="black", lw=1.5),
        Line2D([], [], color="black", lw=1.5, ls="--"),
    ]
    labels = ["actual (trial average)", "predicted (trial average)"]
    if with_context:
        handles.append(Line2D([], [], color="black", lw=0.9, alpha=0.7))
        labels.append("context before onset (actual)")
    if smooth_ms > 0:  # every curve is smoothed the same way
        handles.append(Line2D([], [], color="none"))
        labels.append(f"all smoothed: Gaussian sd {smooth_ms:g} ms")
    handles += [Line2D([], [], color=col, lw=3) for col in colors]
    labels += [f"condition {c}" for c in conds]
    fig.legend(handles, labels, loc="outside right upper", fontsize=8, frameon=False)


# ------------------------------------------------------------------ calibration
def _predicted_fano_only(ax, fano_pred: np.ndarray) -> None:
    """No observed Fano factor (fewer than 2 windows per condition): the predicted ones alone."""
    ax.hist(fano_pred, bins=min(30, max(5, len(fano_pred) // 3)), color="tab:purple", alpha=0.7)
    ax.axvline(1, color="0.5", ls=":", lw=1, label="1 = Poisson")
    ax.axvline(float(np.mean(fano_pred)), color="tab:purple", lw=1.5, label=f"mean {np.mean(fano_pred):.2f}")
    ax.set(xlabel="predicted Fano factor (from samples)", ylabel="neurons",
           title=f"predicted Fano factor per neuron (n={len(fano_pred)})")
    ax.text(0.98, 0.97, "no observed Fano factor:\nit needs >= 2 windows per condition", transform=ax.transAxes,
            ha="right", va="top", fontsize=8, color="0.35")
    ax.legend(fontsize=8, loc="center right")
    ax.grid(alpha=0.25)


def plot_calibration(
    *,
    nominal: list[float],
    coverage: dict[str, list[float]],
    fano_pred: np.ndarray,
    fano_obs: np.ndarray,
    path,
    title: str = "Calibration of sampled forecasts",
) -> Path:
    """(left) empirical vs nominal interval coverage with identity; (right) predicted vs observed Fano.

    coverage: name (e.g. "per-neuron", "population") -> coverage at each nominal level (0..1).
    fano_pred / fano_obs: (N,) Fano factors per neuron; non-finite pairs are dropped and counted.
    """
    nominal = _array(nominal, "plot_calibration nominal", 1)
    fig = _new_figure(10.0, 4.4)
    ax_cov, ax_fano = fig.subplots(1, 2)
    ax_cov.plot([0, 1], [0, 1], color="0.5", ls=":", lw=1, label="perfect calibration")
    for (name, cov), marker in zip(coverage.items(), "osD^v<>"):
        cov = _array(cov, f"plot_calibration coverage[{name!r}]", 1)
        if cov.shape != nominal.shape:
            raise ValueError(
                f"plot_calibration: coverage[{name!r}] has {cov.shape}, nominal {nominal.shape}"
            )
        ax_cov.plot(nominal, cov, marker=marker, lw=1.5, label=name)
    ax_cov.set(
        xlim=(0, 1),
        ylim=(0, 1.02),
        aspect="equal",
        xlabel="nominal interval level",
        ylabel="empirical coverage (fraction inside)",
        title="central interval coverage",
    )
    ax_cov.legend(fontsize=8, loc="upper left")
    ax_cov.grid(alpha=0.25)

    fp, fo = np.asarray(fano_pred, float).ravel(), np.asarray(fano_obs, float).ravel()
    if fp.shape != fo.shape:
        raise ValueError(f"plot_calibration: fano_pred {fp.shape} vs fano_obs {fo.shape}")
    ok = np.isfinite(fp) & np.isfinite(fo)
    if not ok.any() and np.isfinite(fp).any():
        _predicted_fano_only(ax_fano, fp[np.isfinite(fp)])
        fig.suptitle(title)
        return _save(fig, path)
    ax_fano.scatter(fo[ok], fp[ok], s=14, alpha=0.7, color="tab:purple", edgecolor="none")
    hi = max(2.0, float(np.max(np.r_[fp[ok], fo[ok]]))) * 1.05 if ok.any() else 2.0
    ax_fano.plot([0, hi], [0, hi], color="0.5", ls=":", lw=1, label="identity")
    ax_fano.axhline(1, color="0.75", lw=0.8)
    ax_fano.axvline(1, color="0.75", lw=0.8)
    dropped = f", {int((~ok).sum())} without a finite value" if (~ok).any() else ""
    ax_fano.set(
        xlim=(0, hi),
        ylim=(0, hi),
        aspect="equal",
        xlabel="observed Fano factor (var/mean)",
        ylabel="predicted Fano factor (from samples)",
        title=f"Fano factor per neuron (n={int(ok.sum())}{dropped})",
    )
    ax_fano.text(
        0.98, 0.02, "1 = Poisson", transform=ax_fano.transAxes, ha="right", fontsize=8, color="0.4"
    )
    ax_fano.legend(fontsize=8, loc="upper left")
    ax_fano.grid(alpha=0.25)
    fig.suptitle(title)
    return _save(fig, path)


# ------------------------------------------------------------------ horizon bars
def plot_horizon_bars(
    table: list[dict],
    *,
    metric: str,
    path,
    bin_size: float = DEFAULT_BIN_SIZE,
    ylabel: str | None = None,
    title: str | None = None,
) -> Path:
    """Grouped bars: one group per horizon, one bar per method; rows {"method", "horizon_bins", metric}.

    Missing or NaN values leave a gap marked "n/a".
    """
    if not table:
        raise ValueError("plot_horizon_bars: empty table")
    for row in table:
        if "method" not in row or "horizon_bins" not in row:
            raise ValueError(f"plot_horizon_bars: row lacks 'method' or 'horizon_bins': {row}")
    methods = list(dict.fromkeys(r["method"] for r in table))
    horizons = sorted({int(r["horizon_bins"]) for r in table})
    value = {(r["method"], int(r["horizon_bins"])): r.get(metric) for r in table}
    width = 0.8 / len(methods)
    fig = _new_figure(max(6.0, 1.2 + 0.45 * len(methods) * len(horizons)), 4.4)
    ax = fig.add_subplot()
    for i, m in enumerate(methods):
        x = np.arange(len(horizons)) + (i - (len(methods) - 1) / 2) * width
        y = np.array(
            [np.nan if value.get((m, h)) is None else float(value[(m, h)]) for h in horizons]
        )
        ax.bar(x, np.nan_to_num(y, nan=0.0), width * 0.92, label=m, **_bar_style(m, i))
        for xi, yi in zip(x, y):
            if not np.isfinite(yi):
                ax.text(
                    xi, 0, "n/a", ha="center", va="bottom", fontsize=7, rotation=90, color="0.4"
                )
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xticks(np.arange(len(horizons)), [horizon_label(h, bin_size) for h in horizons])
    ax.set_xlabel("forecast horizon")
    ax.set_ylabel(ylabel or metric)
    ax.set_title(title or f"{metric} by method and horizon")
    ax.grid(axis="y", alpha=0.25)
    fig.legend(loc="outside right upper", fontsize=8, frameon=False)
    return _save(fig, path)


def _bar_style(method: str, i: int) -> dict:
    from matplotlib import colormaps

    color = colormaps["tab10"](i % 10)
    return dict(
        color=color,
        edgecolor="black" if method.lower().startswith("neurohorizon") else "none",
        hatch="//" if "teacher" in method.lower() else None,
    )
