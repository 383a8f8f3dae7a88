"""Delayed centre-out reaching with rotational motor-cortex dynamics.

Parameters are fixed from the literature, not tuned to any model:

- Task (Churchland et al. 2010 J Neurosci / 2012 Nature, delayed centre-out reach):
  0.4 s baseline, target onset, instructed delay uniform 0.3-0.8 s, go cue, reaction
  time ~ N(320, 40) ms clipped to 220-450 ms, movement ~0.5 s (minimum-jerk, 10 cm),
  0.8 s after movement onset, inter-trial gap 0.2-0.4 s. Conditions are block-randomised.
- Preparatory state: after target onset a 6-d latent relaxes (tau 100 ms; Churchland
  2006, Afshar 2011) to a condition-specific state that varies smoothly with direction.
- Movement: from 150 ms before movement onset the preparatory state is the initial
  condition of rotations in 3 planes at 1.0 / 1.5 / 2.0 Hz (jPCA rotations, Churchland
  2012), with a rise-and-decay envelope so activity returns to baseline ~1 s later.
- Condition-invariant signal (Kaufman et al. 2016): a large 1-d transient peaking at
  movement onset.
- Trial-to-trial variability: per-trial gain (log-normal, sd 0.15), preparatory-state
  noise (sd 0.12 per dim; cf. Churchland 2006, prep-state variability), and a
  3-d Ornstein-Uhlenbeck latent (tau 300 ms) running through the whole session, so
  the single-trial past informs the future beyond the PSTH.
- Readout: log-linear, rate = exp(b + C x); per-neuron mean rates log-normal (median
  6 Hz, sd 0.8 in log units, clipped to 1-40 Hz; Buzsaki & Mizuseki 2014); loadings
  give log-rate modulation sd ~1.2 (task), 0.8 (CIS), 0.3 (OU). That makes the peak
  condition PSTH ~3x a neuron's mean rate (typical of Churchland 2012 PSTHs) and the
  oracle's bits/spike ~0.3 in the NLB MC_Maze window (-250..+450 ms around movement),
  the order of the best published MC_Maze co-bps (~0.35, Pei et al. 2021), which is a
  lower bound on real data's oracle. 80-90 % of 20 ms bins are empty (measured ~0.86).
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

from neurohorizon.data.recording import Recording, Trials
from neurohorizon.data.synthetic.common import (
    FINE_DT,
    assemble,
    check_count,
    log_linear_rates,
    lognormal_mean_rates,
    non_default,
    streams,
)

FREQS_HZ = (1.0, 1.5, 2.0)  # rotation frequency of each plane
TAU_PREP = 0.100  # s, relaxation to the preparatory state
ROT_LEAD = 0.150  # s, rotations start this long before movement onset
TAU_ENV = 0.250  # s, movement envelope time scale
TAU_OU = 0.300  # s, persistent single-trial latent noise
LOG_SD = dict(task=1.2, cis=0.8, ou=0.3)  # log-rate modulation sd per latent source
RT_MEAN, RT_SD, RT_RANGE = 0.32, 0.04, (0.22, 0.45)  # s, reaction time law (clipped normal)
LOG_GAIN_SD, JITTER_SD = 0.15, 0.12  # per-trial gain (log sd) and preparatory jitter (sd per dim)


def _steps(seconds: float) -> int:
    return int(round(seconds / FINE_DT))


ROT_LEAD_STEPS = _steps(ROT_LEAD)
MOVE_SPAN_STEPS = _steps(ROT_LEAD + 2.5)  # support after rotation onset (envelope < 1e-3 by then)


def _schedule(n_conditions, trials_per_condition, rng) -> dict:
    """Trial event times as integer fine-grid steps (so all events are on the 5 ms grid)."""
    n = n_conditions * trials_per_condition
    cond = np.concatenate([rng.permutation(n_conditions) for _ in range(trials_per_condition)])
    delay = rng.integers(_steps(0.3), _steps(0.8) + 1, size=n)
    rt = np.round(rng.normal(RT_MEAN, RT_SD, size=n) / FINE_DT)
    rt = np.clip(rt, _steps(RT_RANGE[0]), _steps(RT_RANGE[1]))
    gap = rng.integers(_steps(0.2), _steps(0.4) + 1, size=n)
    length = _steps(0.4) + delay + rt.astype(int) + _steps(0.8)
    start = _steps(0.5) + np.concatenate([[0], np.cumsum(length + gap)[:-1]])
    target = start + _steps(0.4)
    go = target + delay
    move = go + rt.astype(int)
    end = move + _steps(0.8)
    total = end[-1] + _steps(0.5)
    total += -total % 4  # whole 20 ms bins
    return dict(cond=cond, start=start, target=target, go=go, move=move, end=end, total=total)


def _prep_states(n_conditions, rng) -> np.ndarray:
    """(C, 6) preparatory states, smooth in reach direction, mean norm 1."""
    theta = 2 * np.pi * np.arange(n_conditions) / n_conditions
    basis = np.stack([np.cos(theta), np.sin(theta), np.cos(2 * theta), np.sin(2 * theta)], 1)
    states = basis @ rng.standard_normal((4, 2 * len(FREQS_HZ)))
    return states / np.linalg.norm(states, axis=1).mean()


def _trial_variability(n_trials, dims, rng) -> tuple[np.ndarray, np.ndarray]:
    """Per-trial gain (n,) and preparatory-state jitter (n, dims)."""
    gain = np.exp(LOG_GAIN_SD * rng.standard_normal(n_trials))
    jitter = JITTER_SD * rng.standard_normal((n_trials, dims))
    return gain, jitter


def prep_part(p, k0, steps) -> np.ndarray:
    """(len(steps), 6) relaxation towards prep state p, `steps` fine steps after target onset k0."""
    t = (steps - k0 + 0.5) * FINE_DT  # time since target onset, bin centres
    return p * (1 - np.exp(-t / TAU_PREP))[:, None]


def rotation_start(p, k0, kr) -> np.ndarray:
    """(6,) state reached at rotation onset kr after relaxing from target onset k0."""
    return p * (1 - np.exp(-(kr - k0) * FINE_DT / TAU_PREP))


def movement_part(x_r, gain, tau) -> np.ndarray:
    """(len(tau), 7) rotations from x_r plus the CIS, `tau` s after rotation onset."""
    omega = 2 * np.pi * np.repeat(np.asarray(FREQS_HZ), 2)
    env = (1 + 2 * tau / TAU_ENV) * np.exp(-tau / TAU_ENV)  # 1 at 0, peak 1.2, then 0
    cos, sin = np.cos(omega * tau[:, None]), np.sin(omega * tau[:, None])
    a, b = x_r[0::2], x_r[1::2]  # plane coordinates
    out = np.empty((len(tau), len(x_r) + 1))
    out[:, 0:-1:2] = env[:, None] * (cos[:, 0::2] * a - sin[:, 0::2] * b)
    out[:, 1:-1:2] = env[:, None] * (sin[:, 0::2] * a + cos[:, 0::2] * b)
    x = tau / ROT_LEAD  # condition-invariant transient, peak 1 (x gain) at movement onset
    out[:, -1] = gain * x**2 * np.exp(2 * (1 - x))
    return out


def _task_latent(sched, prep, gain, jitter) -> np.ndarray:
    """(T, 7) task latent: 6-d prep/rotation state and the condition-invariant signal."""
    out = np.zeros((sched["total"], prep.shape[1] + 1))
    for i in range(len(sched["cond"])):
        p = gain[i] * (prep[sched["cond"][i]] + jitter[i])
        k0, kr = sched["target"][i], sched["move"][i] - ROT_LEAD_STEPS
        out[k0:kr, :-1] = prep_part(p, k0, np.arange(k0, kr))  # overwrites the last trial's tail
        kend = min(kr + MOVE_SPAN_STEPS, sched["total"])
        tau = (np.arange(kend - kr) + 0.5) * FINE_DT  # time since rotation onset
        out[kr:kend] += movement_part(rotation_start(p, k0, kr), gain[i], tau)
    return out


def _ou(n_steps, dims, tau, rng) -> np.ndarray:
    """(T, dims) stationary unit-variance Ornstein-Uhlenbeck, exact AR(1) on the grid."""
    a = np.exp(-FINE_DT / tau)
    eps = rng.standard_normal((n_steps, dims)) * np.sqrt(1 - a**2)
    eps[0] = rng.standard_normal(dims)  # start in the stationary law
    return lfilter([1.0], [1.0, -a], eps, axis=0)


def _hand_velocity(sched, n_conditions) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-jerk 10 cm reach over 0.5 s from movement onset; (T,), (T, 2) in m/s."""
    vel = np.zeros((sched["total"], 2))
    dur, dist = 0.5, 0.10
    s = (np.arange(_steps(dur)) + 0.5) * FINE_DT / dur
    speed = dist / dur * 30 * s**2 * (1 - s) ** 2
    for c, k in zip(sched["cond"], sched["move"]):
        theta = 2 * np.pi * c / n_conditions
        vel[k : k + len(s)] = speed[:, None] * [np.cos(theta), np.sin(theta)]
    return (np.arange(sched["total"]) + 0.5) * FINE_DT, vel


def simulate_internals(n_neurons, n_conditions, trials_per_condition, seed) -> dict:
    """Everything behind the rates: schedule, network, per-trial variability, latents.

    The causal oracle (`reach_causal`) re-runs this to know what was fixed before a window.
    """
    net_rng, trial_rng, spike_rng = streams(seed)
    # network: preparatory geometry and readout, independent of the trial draw
    prep = _prep_states(n_conditions, net_rng)
    mean_hz = lognormal_mean_rates(net_rng, n_neurons, median_hz=6.0, sigma=0.8)
    d_task = prep.shape[1]
    loadings = np.concatenate(
        [
            net_rng.standard_normal((n_neurons, d_task)) * LOG_SD["task"] / np.sqrt(d_task),
            net_rng.standard_normal((n_neurons, 1)) * LOG_SD["cis"],
            net_rng.standard_normal((n_neurons, 3)) * LOG_SD["ou"] / np.sqrt(3),
        ],
        axis=1,
    )
    sched = _schedule(n_conditions, trials_per_condition, trial_rng)
    gain, jitter = _trial_variability(len(sched["cond"]), d_task, trial_rng)
    latent = np.concatenate(
        [_task_latent(sched, prep, gain, jitter), _ou(sched["total"], 3, TAU_OU, trial_rng)], 1
    )
    return dict(sched=sched, prep=prep, mean_hz=mean_hz, loadings=loadings, gain=gain,
                jitter=jitter, latent=latent, spike_rng=spike_rng)


def make_reach(
    *,
    n_neurons: int = 100,
    n_conditions: int = 8,
    trials_per_condition: int = 40,
    noise: str = "poisson",
    dispersion: float | None = None,
    seed: int = 0,
) -> Recording:
    """Trial-structured reaching session (~2.4 s per trial; default ~13 min, 100 units).

    Args:
        n_neurons: Number of units N.
        n_conditions: Reach directions, evenly spaced; labels "reach_000", "reach_045", ...
        trials_per_condition: Trials per direction (block-randomised order).
        noise: Count-noise family, one of NOISE_FAMILIES.
        dispersion: Family parameter (gamma_poisson alpha, zero_inflated pi,
            refractory shape); None for the family default.
        seed: Seed; the same seed gives identical arrays, and the same rates under
            every noise family.

    Returns:
        Recording with trials (events target_on, go_cue, move), behaviour hand_vel
        (T, 2), true_rate (T, N) at 200 Hz and a generator_params JSON attribute.
    """
    n_neurons = check_count(n_neurons, "n_neurons")
    n_conditions = check_count(n_conditions, "n_conditions", 2)
    trials_per_condition = check_count(trials_per_condition, "trials_per_condition")
    if n_conditions > 360:
        raise ValueError(f"n_conditions must be <= 360 (1 degree labels), got {n_conditions}")
    sim = simulate_internals(n_neurons, n_conditions, trials_per_condition, seed)
    sched = sim["sched"]
    rates = log_linear_rates(sim["latent"], sim["loadings"], sim["mean_hz"])
    labels = np.array([f"reach_{round(360 * c / n_conditions):03d}" for c in range(n_conditions)])
    sec = {k: sched[k] * FINE_DT for k in ("start", "target", "go", "move", "end")}
    trials = Trials(
        start=sec["start"],
        end=sec["end"],
        condition=labels[sched["cond"]],
        events={"target_on": sec["target"], "go_cue": sec["go"], "move": sec["move"]},
    )
    params = dict(
        n_neurons=n_neurons,
        n_conditions=n_conditions,
        trials_per_condition=trials_per_condition,
        rotation_freqs_hz=list(FREQS_HZ),
        tau_ou=TAU_OU,
        conditions=labels.tolist(),
    )
    return assemble(
        name="reach",
        seed=seed,
        rates=rates,
        noise=noise,
        dispersion=dispersion,
        rng=sim["spike_rng"],
        params=params,
        trials=trials,
        behavior={"hand_vel": _hand_velocity(sched, n_conditions)},
        variant=non_default(make_reach, n_neurons=n_neurons, n_conditions=n_conditions,
                           trials_per_condition=trials_per_condition, dispersion=dispersion),
    )
