"""Shared pieces of the generators: fine grid, seeding, readout, recording assembly."""

from __future__ import annotations

import inspect

import numpy as np

from neurohorizon.data.recording import Recording, Trials
from neurohorizon.data.synthetic.noise import DISPERSION, noise_params, sample_spikes
from neurohorizon.data.synthetic.oracle import attach_params

FINE_RATE_HZ = 200.0  # true rates are piecewise constant on 5 ms bins
FINE_DT = 1.0 / FINE_RATE_HZ
MAX_RATE_HZ = 200.0  # ceiling on instantaneous rates (peak M1/PMd rates rarely exceed it)


def streams(seed: int) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """Independent generators for (network, latent/trial variability, spike noise).

    Separate streams mean the same seed gives the same rate field under every noise
    family: only the spikes change.
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return tuple(np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(3))


def check_count(value, name: str, minimum: int = 1) -> int:
    if not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def lognormal_mean_rates(rng, n, *, median_hz, sigma, lo=1.0, hi=40.0) -> np.ndarray:
    """(N,) per-neuron mean rates, log-normal (Buzsaki & Mizuseki 2014) clipped to [lo, hi]."""
    rates = median_hz * np.exp(sigma * rng.standard_normal(n))
    return np.clip(rates, lo, hi)


def _normalised_gain(latent, loadings, mean_hz):
    """exp(C x) shifted for overflow safety, and the per-neuron scale giving mean rate mean_hz."""
    drive = latent @ loadings.T  # (T, N)
    shift = drive.max(axis=0, keepdims=True)  # overflow guard; the scale absorbs it
    gain = np.exp(drive - shift)
    return gain, shift[0], mean_hz / gain.mean(axis=0)


def log_linear_rates(latent: np.ndarray, loadings: np.ndarray, mean_hz: np.ndarray) -> np.ndarray:
    """rate = exp(b + C x), with b chosen so each neuron's time-averaged rate is mean_hz.

    Args:
        latent: (T, D) latent trajectory on the fine grid.
        loadings: (N, D) readout C.
        mean_hz: (N,) target time-averaged rates.

    Returns:
        (T, N) float32 rates in Hz (clipped to MAX_RATE_HZ).
    """
    gain, _, scale = _normalised_gain(latent, loadings, mean_hz)
    return np.minimum(gain * scale, MAX_RATE_HZ).astype(np.float32)


def log_rate_offset(latent: np.ndarray, loadings: np.ndarray, mean_hz: np.ndarray) -> np.ndarray:
    """(N,) the b of `log_linear_rates`: rate = min(exp(b + C x), MAX_RATE_HZ)."""
    _, shift, scale = _normalised_gain(latent, loadings, mean_hz)
    return np.log(scale) - shift


def non_default(maker, **values) -> str:
    """Session-id suffix naming each of `values` that differs from `maker`'s default, so that
    recordings of different shapes never share a session id (e.g. "_n_neurons50")."""
    defaults = inspect.signature(maker).parameters
    return "".join(f"_{k}{v:g}" if isinstance(v, float) else f"_{k}{v}"
                   for k, v in values.items() if v != defaults[k].default)


def assemble(
    *,
    name: str,
    seed: int,
    rates: np.ndarray,
    noise: str,
    dispersion: float | None,
    rng: np.random.Generator,
    params: dict,
    trials: Trials | None = None,
    behavior: dict | None = None,
    variant: str = "",
) -> Recording:
    """Draw spikes from the (float32) rates and build a Recording with the ground truth.
    `variant` (`non_default`) ends the session id."""
    family = noise_params(noise, dispersion)
    if len(rates) % 4:
        raise ValueError(f"{name}: {len(rates)} fine bins is not whole 20 ms bins")
    # spikes come from exactly the stored float32 rates, so the oracle is exact
    value = family.get(DISPERSION[noise][0]) if DISPERSION[noise][0] else None
    times, units = sample_spikes(
        rates.astype(np.float64), sampling_rate=FINE_RATE_HZ, noise=noise, dispersion=value, rng=rng
    )
    n_units = rates.shape[1]
    session = f"synthetic_{name}_seed{seed}_{noise}{variant}"
    rec = Recording.from_arrays(
        session_id=session,
        spike_times=times,
        unit_ids=np.array([f"u{i:03d}" for i in range(n_units)]),
        spike_units=units,
        domain=(0.0, len(rates) * FINE_DT),
        trials=trials,
        behavior=behavior,
        true_rate=(rates, FINE_RATE_HZ, 0.0),
        source=f"synthetic:{name}(seed={seed}, noise={noise})",
    )
    meta = dict(
        generator=name,
        seed=int(seed),
        fine_dt=FINE_DT,
        noise_bin_size=0.02,
        true_rate_is_mean=True,
        poisson_likelihood_is_exact=noise == "poisson",
        **family,
        **params,
    )
    return attach_params(rec, meta)
