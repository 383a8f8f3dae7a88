"""Forecast metrics: bits/spike (NLB), fp-bps and its per-bin decay, R², PSTH R², calibration.

All functions take numpy arrays (torch tensors are converted) of *expected counts per bin*
and observed counts, and return floats or numpy arrays. Shapes: n windows/trials, T horizon
bins, N neurons, S samples. The neuron axis must mean the same neuron in every row: evaluate
one session (unit set) at a time. NaN in the observed counts marks missing entries (e.g.
padded units) and is masked everywhere.

Bits/spike follows nlb_tools.evaluation.bits_per_spike: Poisson log-likelihood of the model
minus that of a per-neuron constant-rate null, in bits, divided by the total spike count.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import convolve1d
from scipy.special import gammaln

LN2 = math.log(2.0)
RATE_FLOOR = 1e-9  # NLB replaces zero rate predictions by this value


class MetricError(ValueError):
    """Bad metric input; the message names the argument and the problem."""


def _np(x, name: str) -> np.ndarray:
    if x is None:
        raise MetricError(f"{name}: got None")
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _same_shape(a: np.ndarray, b: np.ndarray, names: str) -> None:
    if a.shape != b.shape:
        raise MetricError(f"{names}: shapes differ, {a.shape} vs {b.shape}")


# ------------------------------------------------------------------ bits/spike
def poisson_nll(rates, spikes) -> float:
    """Total Poisson NLL (with log k!) over entries whose spike count is not NaN."""
    rates, spikes = _np(rates, "rates"), _np(spikes, "spikes")
    _same_shape(rates, spikes, "poisson_nll(rates, spikes)")
    keep = ~np.isnan(spikes)
    r, k = rates[keep], spikes[keep]
    if np.isnan(r).any():
        raise MetricError("rates: NaN prediction where the spike count is observed")
    if (r < 0).any():
        raise MetricError(f"rates: negative expected count ({r.min():.3g})")
    r = np.where(r == 0, RATE_FLOOR, r)
    return float(np.sum(r - k * np.log(r) + gammaln(k + 1.0)))


def _to_2d(x: np.ndarray, name: str) -> np.ndarray:
    if x.ndim < 2:
        raise MetricError(f"{name}: need (..., n_neurons), got shape {x.shape}")
    return x.reshape(-1, x.shape[-1])


def null_rates_from(spikes) -> np.ndarray:
    """(N,) per-neuron mean count per bin over all rows/bins (NaN ignored)."""
    spikes = _to_2d(_np(spikes, "spikes"), "spikes")
    with np.errstate(invalid="ignore"), _quiet():
        return np.nanmean(spikes, axis=0)


def bits_per_spike(rates, spikes, null_rates=None) -> float:
    """NLB bits/spike of predicted expected counts `rates` for observed `spikes`.

    Args:
        rates: (n, T, N) or (n, N) expected counts per bin (>= 0; zeros become 1e-9).
        spikes: same shape, observed counts; NaN entries are masked in both arrays.
        null_rates: (N,) null expected count per bin per neuron. None (NLB) uses the
            nanmean of the evaluated `spikes`; pass training-split means for a train null.
    Returns:
        (NLL_null - NLL_model) / (total spikes * ln 2). The null model itself scores 0
        (exactly, for the default null). NaN when there are no spikes.
    """
    spikes = _to_2d(_np(spikes, "spikes"), "spikes")
    total = np.nansum(spikes)
    if total == 0:
        return float("nan")
    return nll_gain_nats(rates, spikes, null_rates) / total / LN2


def nll_gain_nats(rates, spikes, null_rates=None) -> float:
    """NLL_null - NLL_model in nats, the additive quantity behind bits/spike: sums over windows,
    bins and sessions (also those without spikes, where bits/spike is undefined but a forecaster
    predicting spikes still loses), so pooled bits/spike = sum of gains / (sum of spikes * ln 2)."""
    rates = _to_2d(_np(rates, "rates"), "rates")
    spikes = _to_2d(_np(spikes, "spikes"), "spikes")
    _same_shape(rates, spikes, "nll_gain_nats(rates, spikes)")
    null_rates = null_rates_from(spikes) if null_rates is None else _np(null_rates, "null_rates").ravel()
    if null_rates.shape != (spikes.shape[1],):
        raise MetricError(f"null_rates: need ({spikes.shape[1]},), got {null_rates.shape}")
    null = np.nan_to_num(np.broadcast_to(null_rates, spikes.shape))  # a unit never observed: no rows count
    return poisson_nll(null, spikes) - poisson_nll(rates, spikes)


def fp_bps(pred, target, *, null: str = "eval", null_rates=None) -> float:
    """Forward-prediction bits/spike over the whole horizon.

    Args:
        pred, target: (n, T, N) expected / observed counts of the forecast bins.
        null: "eval" (NLB: per-neuron mean of `target`) or "train" (needs `null_rates`,
            the per-neuron mean count per bin of the training split).
    """
    return bits_per_spike(pred, target, _choose_null(target, null, null_rates))


def per_bin_fp_bps(pred, target, *, null: str = "eval", null_rates=None) -> np.ndarray:
    """(T,) bits/spike of each horizon bin: the decay curve.

    The null is one per-neuron rate for the whole horizon (the same null as `fp_bps`), so
    when every bin has spikes the spike-weighted mean of the curve equals `fp_bps`; a bin
    without spikes gives NaN (`per_bin_nll_gain_nats` is the exact, additive decomposition).
    """
    return _bps(*_per_bin(pred, target, null, null_rates))


def _bps(gains, spikes):
    """Bits/spike from gains (nats) and spike totals of the same shape; NaN where there are no spikes."""
    gains, spikes = np.asarray(gains, float), np.asarray(spikes, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(spikes > 0, gains / np.where(spikes > 0, spikes, 1.0) / LN2, np.nan)


def per_bin_nll_gain_nats(pred, target, *, null: str = "eval", null_rates=None) -> np.ndarray:
    """(T,) NLL_null - NLL_model of each horizon bin in nats; sums to the whole horizon's gain."""
    return _per_bin(pred, target, null, null_rates)[0]


def _per_bin(pred, target, null: str, null_rates) -> tuple[np.ndarray, np.ndarray]:
    """(T,) gains in nats and (T,) spike totals, with one null for the whole horizon."""
    pred, target = _np(pred, "pred"), _np(target, "target")
    _same_shape(pred, target, "per_bin_fp_bps(pred, target)")
    if pred.ndim != 3:
        raise MetricError(f"pred: need (n, T, N), got shape {pred.shape}")
    nr = _choose_null(target, null, null_rates)
    gains = np.array([nll_gain_nats(pred[:, t], target[:, t], nr) for t in range(pred.shape[1])])
    return gains, np.nansum(target, axis=(0, 2))


def _choose_null(target, null: str, null_rates):
    if null == "eval":
        return null_rates_from(target)
    if null == "train":
        if null_rates is None:
            raise MetricError("null='train' needs null_rates (training-split mean counts per bin)")
        return null_rates
    raise MetricError(f"null: expected 'eval' or 'train', got {null!r}")


def oracle_bits_per_spike(true_expected, spikes, null_rates=None) -> float:
    """Bits/spike of the ground-truth expected counts: the ceiling for any forecaster."""
    return bits_per_spike(true_expected, spikes, null_rates)


def fraction_of_oracle(model_bps: float, oracle_bps: float) -> float:
    """model / oracle bits/spike; NaN when the oracle is not positive."""
    if not (oracle_bps > 0):
        return float("nan")
    return float(model_bps) / float(oracle_bps)


def window_nll(rates, spikes) -> np.ndarray:
    """(n,) Poisson NLL of each window of (n, T, N) arrays, without log k! (it cancels in
    differences), over entries whose count is not NaN."""
    rates, spikes = _np(rates, "rates"), _np(spikes, "spikes")
    _same_shape(rates, spikes, "window_nll(rates, spikes)")
    keep = ~np.isnan(spikes)
    r = np.where(keep, np.where(rates == 0, RATE_FLOOR, rates), 1.0)
    return np.where(keep, r - np.where(keep, spikes, 0) * np.log(r), 0.0).reshape(len(r), -1).sum(1)


def paired_bps_difference(pred_a: list, pred_b: list, targets: list, *, n_boot: int = 2000,
                          level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Bits/spike of forecaster a minus b on the same windows, with a paired bootstrap interval.

    pred_a, pred_b, targets: one (n, T, N) array per session. Pooled bits/spike is the
    spike-weighted mean over sessions, so the null cancels in the difference:
    sum over windows of (NLL_b - NLL_a) / (spikes * ln 2). Windows are resampled with replacement.
    Returns (difference, low, high); the interval is NaN when over 1 % of the resamples hold no
    spike (bits/spike undefined there: too few spikes for a bootstrap to mean anything).
    """
    d = np.concatenate([window_nll(b, y) - window_nll(a, y) for a, b, y in zip(pred_a, pred_b, targets)])
    k = np.concatenate([np.nansum(_np(y, "targets").reshape(len(y), -1), 1) for y in targets])
    if k.sum() == 0:
        return (float("nan"),) * 3
    idx = np.random.default_rng(seed).integers(0, len(d), (n_boot, len(d)))
    spikes = k[idx].sum(1)
    if np.mean(spikes == 0) > 0.01:
        return float(d.sum() / k.sum() / LN2), float("nan"), float("nan")
    boot = d[idx].sum(1)[spikes > 0] / spikes[spikes > 0] / LN2
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return float(d.sum() / k.sum() / LN2), float(lo), float(hi)


# ------------------------------------------------------------------------- R²
def r2_per_neuron(pred, target) -> np.ndarray:
    """(N,) coefficient of determination per neuron over all rows/bins (NaN targets masked).

    `target` may be observed counts or true expected counts; the caller says which (the
    summary reports both). A neuron with zero target variance gets 1 if predicted exactly,
    else 0 (sklearn's r2_score convention, which NLB uses).
    """
    pred = _to_2d(_np(pred, "pred"), "pred")
    target = _to_2d(_np(target, "target"), "target")
    _same_shape(pred, target, "r2_per_neuron(pred, target)")
    ss_res, ss_tot = _ss(pred, target)
    return _r2_from(ss_res, ss_tot)


def r2_pooled(pred, target) -> float:
    """1 - sum of squared errors / sum over neurons of squared deviations from each
    neuron's mean: the variance-weighted average of the per-neuron R²."""
    pred = _to_2d(_np(pred, "pred"), "pred")
    target = _to_2d(_np(target, "target"), "target")
    _same_shape(pred, target, "r2_pooled(pred, target)")
    ss_res, ss_tot = _ss(pred, target)
    return float(_r2_from(ss_res.sum(keepdims=True), ss_tot.sum(keepdims=True))[0])


def _ss(pred: np.ndarray, target: np.ndarray):
    keep = ~np.isnan(target)
    if np.isnan(pred[keep]).any():
        raise MetricError("pred: NaN where the target is observed")
    t = np.where(keep, target, 0.0)
    p = np.where(keep, pred, 0.0)
    n = keep.sum(0)
    mean = t.sum(0) / np.maximum(n, 1)
    ss_res = ((p - t) ** 2 * keep).sum(0)
    ss_tot = ((t - mean) ** 2 * keep).sum(0)
    return ss_res, ss_tot


def _r2_from(ss_res: np.ndarray, ss_tot: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = 1.0 - ss_res / ss_tot
    degenerate = ss_tot == 0
    return np.where(degenerate, np.where(ss_res == 0, 1.0, 0.0), r2)


# ----------------------------------------------------------------------- PSTH
def smooth_gaussian(x, sigma_bins: float, axis: int = 1) -> np.ndarray:
    """Gaussian smoothing along `axis` (kernel ±3 sigma), renormalised at the window edges
    so that edge bins are not biased towards zero (NLB smooths the continuous recording,
    which has no window edges). NaN bins (past a recording's end) are left out of their
    neighbours' averages and stay NaN."""
    x = _np(x, "x")
    if sigma_bins <= 0:
        return x.copy()
    half = max(1, int(math.ceil(3 * sigma_bins)))
    k = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma_bins) ** 2)
    ok = np.isfinite(x)
    # zero beyond the edges (np.convolve's "same" would lengthen a window shorter than the kernel)
    num = convolve1d(np.where(ok, x, 0.0), k, axis=axis, mode="constant")
    den = convolve1d(ok.astype(float), k, axis=axis, mode="constant")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, num / den, np.nan)


def condition_average(x, conditions) -> tuple[np.ndarray, np.ndarray]:
    """(C, T, N) nanmean of `x` (n, T, N) per condition >= 0, and the (C,) condition labels."""
    x, conditions = _np(x, "x"), np.asarray(conditions).ravel()
    if conditions.shape[0] != x.shape[0]:
        raise MetricError(f"conditions: {conditions.shape[0]} labels for {x.shape[0]} rows")
    labels = np.unique(conditions[conditions >= 0])
    if len(labels) == 0:
        raise MetricError("conditions: no condition >= 0 (-1 means no condition)")
    with _quiet():
        avg = np.stack([np.nanmean(x[conditions == c], axis=0) for c in labels])
    return avg, labels


def psth_r2(pred, target, conditions, smooth_sigma_bins: float = 0.0) -> float:
    """NLB 'psth R2': R² of predicted vs true PSTHs, per neuron, averaged over neurons.

    True PSTH = condition average of `target` counts smoothed with a Gaussian of
    `smooth_sigma_bins` (NLB: 70 ms kernel on MC_Maze; pass 0 when `target` already is a
    rate, e.g. true expected counts). Predicted PSTH = condition average of `pred` (not
    smoothed, as NLB). Rows of every condition are stacked over (condition, bin) and R² is
    computed per neuron, then averaged uniformly (sklearn r2_score default).
    """
    pred, target = _np(pred, "pred"), _np(target, "target")
    _same_shape(pred, target, "psth_r2(pred, target)")
    true_psth, _ = condition_average(smooth_gaussian(target, smooth_sigma_bins), conditions)
    pred_psth, _ = condition_average(pred, conditions)
    return float(np.nanmean(r2_per_neuron(pred_psth, true_psth)))


def psth_correlation_per_step(pred, target, conditions) -> np.ndarray:
    """(T,) Pearson correlation, at each horizon bin, between predicted and true
    condition-averaged counts over all (condition, neuron) pairs, each neuron's mean over the
    conditions removed first: what is scored is how the conditions differ, not how neurons'
    rates differ (which a per-neuron mean rate alone would get right). A forecast with no
    condition differences scores 0; NaN where the truth has none either (one condition).
    Use true expected counts as `target` when known; with observed counts the ceiling is below 1."""
    pred, target = _np(pred, "pred"), _np(target, "target")
    _same_shape(pred, target, "psth_correlation_per_step(pred, target)")
    p, _ = condition_average(pred, conditions)
    t, _ = condition_average(target, conditions)
    with _quiet():  # a neuron without any count at some step has no mean there
        p, t = p - np.nanmean(p, axis=0), t - np.nanmean(t, axis=0)
    out = np.full(p.shape[1], np.nan)
    for step in range(p.shape[1]):
        a, b = p[:, step].ravel(), t[:, step].ravel()
        keep = ~(np.isnan(a) | np.isnan(b))
        a, b = a[keep], b[keep]
        spread_a, spread_b = float((a * a).sum()), float((b * b).sum())
        if spread_b > 0:
            out[step] = float((a * b).sum()) / math.sqrt(spread_a * spread_b) if spread_a > 0 else 0.0
    return out


# ---------------------------------------------------------------- calibration
# nominal levels of the central intervals: a reliability curve, not just two points
COVERAGE_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def interval_coverage(
    samples, target, levels=COVERAGE_LEVELS, *, seed: int = 0, chunk: int = 64
) -> dict:
    """Coverage of central predictive intervals, per-neuron counts and population count.

    Counts are discrete, so two conventions are reported for each level l:
      - "pit": randomized rank PIT u = (#{s < y} + V (#{s = y} + 1)) / (S + 1), V ~ U(0,1):
        y's rank among the S samples and itself, ties broken at random; covered when
        |u - 1/2| <= l/2. For a calibrated forecaster y and its S samples are exchangeable,
        so u is exactly uniform and the coverage ≈ l for any S (the primary number; the
        empirical-CDF PIT would cover 0 % at S = 1).
      - "inclusive": y within [q_lo, q_hi] (both ends included), q = empirical quantiles
        at (1-l)/2 and (1+l)/2 of the samples. For discrete counts this is >= l even when
        calibrated (many windows have q_lo = q_hi = 0).

    Args:
        samples: (S, n, T, N) sampled count trajectories.
        target: (n, T, N) observed counts (NaN entries are excluded; the population count
            sums the non-NaN neurons of each (row, bin), with the samples masked alike).
    Returns:
        {"neuron": {"pit": {l: cov}, "inclusive": {...}}, "population": {...}}
    """
    samples, target = _np(samples, "samples"), _np(target, "target")
    if samples.ndim != 4 or samples.shape[1:] != target.shape:
        raise MetricError(f"samples: need (S, *{target.shape}), got {samples.shape}")
    keep = ~np.isnan(target)
    pop_t = np.where(keep, target, 0).sum(-1)
    pop_s = np.where(keep, samples, 0).sum(-1)
    rng = np.random.default_rng(seed)
    return {
        "neuron": _coverage(samples, target, keep, levels, rng, chunk),
        "population": _coverage(pop_s, pop_t, np.ones_like(pop_t, bool), levels, rng, chunk),
    }


def _coverage(samples, target, keep, levels, rng, chunk) -> dict:
    hits_pit = {lv: 0 for lv in levels}
    hits_inc = {lv: 0 for lv in levels}
    for lo in range(0, target.shape[0], chunk):
        s, y, k = samples[:, lo : lo + chunk], target[lo : lo + chunk], keep[lo : lo + chunk]
        y0 = np.where(k, y, 0.0)
        below, equal = (s < y0).sum(0), (s == y0).sum(0)
        u = (below + rng.random(y0.shape) * (equal + 1)) / (len(s) + 1)
        for lv in levels:
            hits_pit[lv] += int((np.abs(u - 0.5) <= lv / 2)[k].sum())
            q_lo = np.quantile(s, (1 - lv) / 2, axis=0, method="lower")
            q_hi = np.quantile(s, (1 + lv) / 2, axis=0, method="higher")
            hits_inc[lv] += int(((y0 >= q_lo) & (y0 <= q_hi))[k].sum())
    total = max(int(keep.sum()), 1)
    return {
        "pit": {lv: hits_pit[lv] / total for lv in levels},
        "inclusive": {lv: hits_inc[lv] / total for lv in levels},
    }


def fano_factors(samples, target=None, conditions=None) -> dict:
    """Per-neuron Fano factors, predicted vs observed.

    Within each condition (all rows form one condition when `conditions` is None) and
    bin, Fano = variance / mean across repeats: across rows for the observed `target`, and
    across rows x samples for the predictions, so both include trial-to-trial variability
    and are comparable. Averaged over (condition, bin) cells with a positive mean.
    "predicted_within" is the mean Fano of each window's own predictive distribution
    (1 for Poisson, > 1 for over-dispersed likelihoods).

    Args:
        samples: (S, n, T, N); target: (n, T, N) or None; conditions: (n,) or None.
    Returns:
        dict of (N,) arrays: predicted, predicted_within, observed (None without target).
    """
    samples = _np(samples, "samples")
    if samples.ndim != 4:
        raise MetricError(f"samples: need (S, n, T, N), got {samples.shape}")
    s_mean = samples.mean(0)
    # unbiased, as the across-repeat Fano; undefined from a single sample
    s_var = samples.var(0, ddof=1) if len(samples) > 1 else np.full_like(s_mean, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"), _quiet():
        within = np.nanmean(np.where(s_mean > 0, s_var / s_mean, np.nan), axis=(0, 1))
    groups = _groups(samples.shape[1], conditions)
    pred = _mean_fano([samples[:, g].reshape(-1, *samples.shape[2:]) for g in groups])
    obs = None
    if target is not None:
        target = _np(target, "target")
        obs = _mean_fano([target[g] for g in groups])
    return {"predicted": pred, "predicted_within": within, "observed": obs}


def _groups(n: int, conditions) -> list[np.ndarray]:
    if conditions is None or not (np.asarray(conditions) >= 0).any():
        return [np.arange(n)]  # continuous data: every window is a repeat
    conditions = np.asarray(conditions).ravel()
    return [np.flatnonzero(conditions == c) for c in np.unique(conditions[conditions >= 0])]


def _mean_fano(blocks: list[np.ndarray]) -> np.ndarray:
    """blocks: list of (repeats, T, N) -> (N,) mean over cells of var/mean across repeats."""
    cells = []
    for b in blocks:
        if b.shape[0] < 2:
            continue
        with _quiet():
            m, v = np.nanmean(b, 0), np.nanvar(b, 0, ddof=1)
        cells.append(np.where(m > 0, v / np.where(m > 0, m, 1), np.nan))
    if not cells:
        raise MetricError("fano_factors: every condition has fewer than 2 repeats")
    with _quiet():
        return np.nanmean(np.concatenate(cells, 0), axis=0)


# ------------------------------------------------------------------ summary
def summarize_forecast(
    pred_mean,
    target,
    *,
    tf_mean=None,
    samples=None,
    conditions=None,
    true_expected=None,
    causal_expected=None,
    null_rates=None,
    bin_size: float = 0.02,
    psth_sigma_bins: float = 0.0,
) -> dict:
    """All metrics for one forecaster on one session, as a JSON-serialisable dict.

    Args:
        pred_mean: (n, T, N) rollout expected counts (no ground truth fed back).
        target: (n, T, N) observed counts (NaN = missing).
        tf_mean: (n, T, N) teacher-forced expected counts; adds a side-by-side block and
            the rollout - teacher-forced gap.
        samples: (S, n, T, N) sampled trajectories for calibration.
        conditions: (n,) condition per row (-1 = none) for PSTH metrics.
        true_expected: (n, T, N) oracle expected counts, for oracle bits/spike and R² vs truth.
        causal_expected: (n, T, N) causal-oracle expected counts (the best forecast from the
            past, `data.synthetic.causal`), for the achievable ceiling; needs true_expected.
        null_rates: (N,) training-split mean count per bin; adds "train"-null bits/spike.
    """
    pred_mean, target = _np(pred_mean, "pred_mean"), _np(target, "target")
    _same_shape(pred_mean, target, "summarize_forecast(pred_mean, target)")
    n, T, N = target.shape
    out = {
        "n_windows": n,
        "n_bins": T,
        "n_units": N,
        "bin_size_s": bin_size,
        "horizon_ms": T * bin_size * 1000,
        "n_spikes": float(np.nansum(target)),
        "n_spikes_per_bin": np.nansum(target, axis=(0, 2)),  # to pool per-bin curves over sessions
        "null": {
            "eval": "per-neuron mean count per bin of the evaluated targets (NLB)",
            "train": "per-neuron mean count per bin of the training split"
            if null_rates is not None
            else None,
        },
        "rollout": _block(pred_mean, target, null_rates),
    }
    if tf_mean is not None:
        tf = out["teacher_forced"] = _block(_np(tf_mean, "tf_mean"), target, null_rates)
        out["gap_rollout_minus_tf"] = {k: out["rollout"][k] - tf[k] for k in ("fp_bps", "r2_pooled", "per_bin_fp_bps")}
    if true_expected is not None:
        true_expected = _np(true_expected, "true_expected")
        if not np.isnan(true_expected[~np.isnan(target)]).any():
            out["oracle"] = _oracle(pred_mean, true_expected, target, out["rollout"], causal_expected)
    if conditions is not None and (np.asarray(conditions) >= 0).any():
        known = "oracle" in out  # score against the true rates where the data have them
        out["psth"] = {
            "reference": "true expected counts" if known else "observed counts",
            "psth_r2": psth_r2(pred_mean, true_expected if known else target, conditions,
                               0.0 if known else psth_sigma_bins),
            "corr_per_step": psth_correlation_per_step(pred_mean, true_expected if known else target, conditions),
        }
    if samples is not None:
        out["calibration"] = _calibration(_np(samples, "samples"), target, conditions)
    return _jsonable(out)


def _block(pred, target, null_rates) -> dict:
    block = {
        **_gains("", pred, target),
        "r2_pooled": r2_pooled(pred, target),
        "r2_reference": "observed counts",
    }
    if null_rates is not None:
        block["fp_bps_train_null"] = fp_bps(pred, target, null="train", null_rates=null_rates)
        block["nll_gain_nats_train_null"] = nll_gain_nats(pred, target, null_rates)
    return block


def _gains(prefix: str, pred, target) -> dict:
    """`{prefix}fp_bps` and its per-bin curve (NLB null), each from its NLL gain in nats, which is
    kept too: the additive quantity that pooling over sessions sums."""
    gain, spikes = nll_gain_nats(pred, target), np.nansum(target)
    per_bin, per_bin_spikes = _per_bin(pred, target, "eval", None)
    return {f"{prefix}fp_bps": float(_bps(gain, spikes)), f"{prefix}per_bin_fp_bps": _bps(per_bin, per_bin_spikes),
            f"{prefix}nll_gain_nats": gain, f"{prefix}per_bin_nll_gain_nats": per_bin}


def _oracle(pred, true_expected, target, rollout, causal_expected=None) -> dict:
    out = _gains("oracle_", true_expected, target)
    out["fraction_of_oracle"] = fraction_of_oracle(rollout["fp_bps"], out["oracle_fp_bps"])
    out["r2_vs_true_pooled"] = r2_pooled(pred, true_expected)
    if causal_expected is not None:  # the best forecast from the past (synthetic reach)
        causal_expected = _np(causal_expected, "causal_expected")
        out.update(_gains("causal_oracle_", causal_expected, target))
        out["fraction_of_causal_oracle"] = fraction_of_oracle(rollout["fp_bps"], out["causal_oracle_fp_bps"])
    return out


def _calibration(samples, target, conditions) -> dict:
    """Interval coverage and Fano factors of the sampled trajectories."""
    fano = _fano_or_nan(samples, target, conditions)
    return {
        "n_samples": int(samples.shape[0]),
        "coverage": interval_coverage(samples, target),
        "fano_predicted": _nanmean_or_nan(fano["predicted"]),
        "fano_predicted_within": _nanmean_or_nan(fano["predicted_within"]),  # NaN from one sample
        "fano_observed": _nanmean_or_nan(fano["observed"]),
        "fano_predicted_per_neuron": np.asarray(fano["predicted"], float).tolist(),
        "fano_observed_per_neuron": np.asarray(fano["observed"], float).tolist(),
    }


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return [_jsonable(v) for v in x.tolist()]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


class _quiet:
    """Silence numpy's 'Mean of empty slice' warnings for all-NaN columns."""

    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


def _fano_or_nan(samples, target, conditions) -> dict:
    """fano_factors, with NaN where there are too few repeats: for the observed Fano factor
    (fewer than 2 windows per condition), and for the predicted one too (one sample of one
    window per condition, e.g. a condition label unique to each trial)."""
    for observed in (target, None):
        try:
            fano = fano_factors(samples, observed, conditions)
        except MetricError:
            continue
        if observed is None:
            fano["observed"] = np.full_like(fano["predicted"], np.nan)
        return fano
    nan = np.full(samples.shape[-1], np.nan)
    return {"predicted": nan, "predicted_within": nan, "observed": nan}


def _nanmean_or_nan(x) -> float:
    x = np.asarray(x, dtype=float)
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")
