"""Continuous recording driven by a chaotic Lorenz latent (LFADS synthetic benchmark style).

The Lorenz system (sigma 10, rho 28, beta 8/3) is integrated with RK4 at 2.5 ms of
neural time, after a burn-in of 10 Lorenz time units from a seeded random state. Time is
rescaled so that one Lorenz time unit lasts `time_scale` seconds (default 1 s): the lobe
oscillation is then ~1.3 Hz and the Lyapunov time (~1.1 units) ~1.1 s, so the standard
horizons (0.24 / 0.5 / 1 s) go from predictable to hard. The z-scored 3-d latent drives
log-linear rates, rate = exp(b + C z), with per-neuron mean rates log-normal (median 8 Hz,
sd 0.6 in log units, clipped to 1-40 Hz) and log-rate modulation sd ~0.8 (as in
Sussillo et al. 2016, LFADS, where Lorenz latents set log firing rates). No trials.
"""

from __future__ import annotations

import numpy as np

from neurohorizon.data.recording import Recording
from neurohorizon.data.synthetic.common import (
    FINE_DT,
    assemble,
    check_count,
    log_linear_rates,
    lognormal_mean_rates,
    non_default,
    streams,
)

SIGMA, RHO, BETA = 10.0, 28.0, 8.0 / 3.0
SUBSTEPS = 2  # RK4 steps per 5 ms fine bin
BURN_IN = 10.0  # Lorenz time units discarded before recording starts
LOG_SD = 0.8


def _deriv(x, y, z):
    return SIGMA * (y - x), x * (RHO - z) - y, x * y - BETA * z


def lorenz_trajectory(n_steps: int, h: float, state: tuple[float, float, float]) -> np.ndarray:
    """(n_steps, 3) RK4 trajectory with step h (Lorenz time units), starting after one step."""
    out = np.empty((n_steps, 3))
    x, y, z = state
    for i in range(n_steps):  # plain floats: ~5x faster than numpy for 3-vectors
        a = _deriv(x, y, z)
        b = _deriv(x + 0.5 * h * a[0], y + 0.5 * h * a[1], z + 0.5 * h * a[2])
        c = _deriv(x + 0.5 * h * b[0], y + 0.5 * h * b[1], z + 0.5 * h * b[2])
        d = _deriv(x + h * c[0], y + h * c[1], z + h * c[2])
        x += h / 6 * (a[0] + 2 * b[0] + 2 * c[0] + d[0])
        y += h / 6 * (a[1] + 2 * b[1] + 2 * c[1] + d[1])
        z += h / 6 * (a[2] + 2 * b[2] + 2 * c[2] + d[2])
        out[i] = x, y, z
    return out


def make_lorenz(
    *,
    n_neurons: int = 50,
    duration: float = 600.0,
    time_scale: float = 1.0,
    noise: str = "poisson",
    dispersion: float | None = None,
    seed: int = 0,
) -> Recording:
    """Continuous Lorenz-driven session.

    Args:
        n_neurons: Number of units N.
        duration: Seconds; rounded up to whole 20 ms bins.
        time_scale: Seconds of neural time per Lorenz time unit.
        noise: Count-noise family, one of NOISE_FAMILIES.
        dispersion: Family parameter (see make_reach); None for the default.
        seed: Seed (same seed -> identical arrays; same rates under every family).

    Returns:
        Recording with behaviour "latent" (T, 3) z-scored Lorenz state, true_rate (T, N)
        at 200 Hz and a generator_params JSON attribute. No trials.
    """
    n_neurons = check_count(n_neurons, "n_neurons")
    if not np.isfinite(duration) or duration <= 0:
        raise ValueError(f"duration must be a positive number of seconds, got {duration}")
    if not np.isfinite(time_scale) or time_scale <= 0:
        raise ValueError(f"time_scale must be positive, got {time_scale}")
    net_rng, latent_rng, spike_rng = streams(seed)
    n_fine = int(np.ceil(round(duration / FINE_DT, 6)))
    n_fine += -n_fine % 4  # whole 20 ms bins
    h = FINE_DT / SUBSTEPS / time_scale
    start = tuple(latent_rng.normal(0.0, 10.0, size=3) + [0.0, 0.0, 25.0])
    burn = lorenz_trajectory(int(BURN_IN / h), h, start)
    # sample each fine bin at its centre: offset by one substep of the 2-per-bin grid
    traj = lorenz_trajectory(n_fine * SUBSTEPS, h, tuple(burn[-1]))[::SUBSTEPS]
    latent = (traj - traj.mean(0)) / traj.std(0)
    mean_hz = lognormal_mean_rates(net_rng, n_neurons, median_hz=8.0, sigma=0.6)
    loadings = net_rng.standard_normal((n_neurons, 3)) * LOG_SD / np.sqrt(3)
    rates = log_linear_rates(latent, loadings, mean_hz)
    times = (np.arange(n_fine) + 0.5) * FINE_DT
    params = dict(
        n_neurons=n_neurons,
        duration=n_fine * FINE_DT,
        time_scale=time_scale,
        lorenz=dict(sigma=SIGMA, rho=RHO, beta=BETA, rk4_step=h),
    )
    return assemble(
        name="lorenz",
        seed=seed,
        rates=rates,
        noise=noise,
        dispersion=dispersion,
        rng=spike_rng,
        params=params,
        behavior={"latent": (times, latent.astype(np.float32))},
        variant=non_default(make_lorenz, n_neurons=n_neurons, duration=duration, time_scale=time_scale,
                           dispersion=dispersion),
    )
