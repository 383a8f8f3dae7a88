"""Causal oracle for reach: the best mean forecast any model of the past could make.

The oracle (`expected_counts`) knows the future latents, including what no forecaster can
know at the window start: this trial's reaction time and the future of the single-trial
Ornstein-Uhlenbeck noise. The causal oracle knows *everything up to* the window start (the
condition, the per-trial gain and preparatory state, the OU state, the previous trial) and
averages the rest over its true law:

- the reaction time exactly, over its clipped-normal law on the 5 ms grid;
- the OU future exactly: given its last value x, the value j steps on is Gaussian, so each
  neuron's log-rate is Gaussian and E[min(exp(D), max_rate)] has a closed form.

Since the expected Poisson NLL is minimised by the true conditional mean, no forecaster
scores more expected bits/spike than this; it is the ceiling for "fraction of oracle".
Defined for windows that start at a go cue (the reach evaluation windows).
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from neurohorizon.data.recording import Recording, RecordingError
from neurohorizon.data.synthetic import reach
from neurohorizon.data.synthetic.common import FINE_DT, MAX_RATE_HZ, log_rate_offset
from neurohorizon.data.synthetic.oracle import generator_params

N_TASK = 7  # task latent dims (6 rotation + CIS); the last 3 latent dims are the OU


class ReachTruth:
    """The reach generator's internals for one recording, re-simulated from its parameters."""

    def __init__(self, rec: Recording):
        params = generator_params(rec)
        if params.get("generator") != "reach":
            raise RecordingError(f"{rec.source}: the causal oracle needs synthetic reach data, "
                                 f"got generator {params.get('generator')!r}")
        sim = reach.simulate_internals(params["n_neurons"], params["n_conditions"],
                                       params["trials_per_condition"], params["seed"])
        self.source = rec.source
        self.sched, self.latent, self.gain = sim["sched"], sim["latent"], sim["gain"]
        self.prep_mean = sim["prep"][self.sched["cond"]]  # (trials, 6) condition prep states
        self.p = sim["gain"][:, None] * (self.prep_mean + sim["jitter"])
        self.c_task, self.c_ou = sim["loadings"][:, :N_TASK], sim["loadings"][:, N_TASK:]
        self.offset = log_rate_offset(sim["latent"], sim["loadings"], sim["mean_hz"])
        self._check_against(rec)

    def _check_against(self, rec: Recording) -> None:
        """The re-simulation must reproduce the stored true rates (e.g. not a unit subset)."""
        stored = np.asarray(rec.data.true_rate.rates) if rec.has_true_rate else np.empty((0, 0))
        if stored.shape != (self.sched["total"], len(self.offset)):
            raise RecordingError(f"{self.source}: stored true rates {stored.shape} do not match the "
                                 "generator parameters; the causal oracle needs the unmodified recording")
        steps = np.linspace(0, len(stored) - 1, 64).astype(int)
        drive = self.offset + self.latent[steps, :N_TASK] @ self.c_task.T + self.latent[steps, N_TASK:] @ self.c_ou.T
        if not np.allclose(np.minimum(np.exp(drive), MAX_RATE_HZ), stored[steps], rtol=1e-5):
            raise RecordingError(f"{self.source}: stored true rates differ from a re-simulation with "
                                 "its generator parameters; the causal oracle needs the unmodified recording")

    def trial_at_go(self, start: float) -> int:
        g = int(round(start / FINE_DT))
        hit = np.flatnonzero(self.sched["go"] == g)
        if abs(g * FINE_DT - start) > 1e-6 or not len(hit):
            raise ValueError(f"{self.source}: window start {start:.4f} s is not a go cue; "
                             "the causal oracle is defined for go-cue-aligned windows")
        return int(hit[0])

    def task_latent(self, i: int, steps: np.ndarray, rt_steps: int) -> np.ndarray:
        """(len(steps), 7) task latent of trial i at `steps` (>= its go cue) for a given RT."""
        k0 = self.sched["target"][i]
        kr = self.sched["go"][i] + rt_steps - reach.ROT_LEAD_STEPS
        out = np.zeros((len(steps), N_TASK))
        before = steps < kr
        out[before, :-1] = reach.prep_part(self.p[i], k0, steps[before])
        after = steps[~before]
        out[~before] = self._tail(i - 1, after) + reach.movement_part(
            reach.rotation_start(self.p[i], k0, kr), self.gain[i], (after - kr + 0.5) * FINE_DT)
        return out

    def _tail(self, j: int, steps: np.ndarray) -> np.ndarray:
        """Trial j's movement latent still present at `steps` (it adds after the next rotation onset)."""
        if j < 0:
            return np.zeros((len(steps), N_TASK))
        kr = self.sched["move"][j] - reach.ROT_LEAD_STEPS
        tau = (steps - kr + 0.5) * FINE_DT
        p_r = reach.rotation_start(self.p[j], self.sched["target"][j], kr)
        live = (steps - kr < reach.MOVE_SPAN_STEPS)[:, None]
        return np.where(live, reach.movement_part(p_r, self.gain[j], tau), 0.0)

    def mean_rates(self, task: np.ndarray, ou_mean: np.ndarray, ou_var: np.ndarray) -> np.ndarray:
        """(F, N) E[min(exp(D), max)] with D ~ N(b + C_task x + C_ou m, |C_ou|^2 v) per step."""
        m = self.offset + task @ self.c_task.T + ou_mean @ self.c_ou.T
        s2 = ou_var[:, None] * (self.c_ou**2).sum(1)[None, :]
        return clipped_lognormal_mean(m, s2, MAX_RATE_HZ)


def clipped_lognormal_mean(m, s2, cap) -> np.ndarray:
    """E[min(exp(D), cap)] for D ~ N(m, s2), elementwise; s2 = 0 gives min(exp(m), cap)."""
    s = np.sqrt(np.maximum(s2, 1e-300))
    lc = np.log(cap)
    below = np.exp(np.minimum(m + s2 / 2, 700.0)) * ndtr((lc - m - s2) / s)
    stochastic = below + cap * (1 - ndtr((lc - m) / s))
    return np.where(s2 > 0, stochastic, np.minimum(np.exp(np.minimum(m, 700.0)), cap))


def rt_law() -> tuple[np.ndarray, np.ndarray]:
    """Reaction-time support (fine steps) and probabilities: round(N(mean, sd) / dt), clipped."""
    lo, hi = (int(round(v / FINE_DT)) for v in reach.RT_RANGE)
    steps = np.arange(lo, hi + 1)
    cdf = ndtr(((steps + 0.5) * FINE_DT - reach.RT_MEAN) / reach.RT_SD)
    prob = np.diff(np.concatenate([[0.0], cdf]))
    prob[-1] += 1 - cdf[-1]  # the clip puts the upper tail on the last step
    return steps, prob


def ou_forecast(last: np.ndarray, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean (F, 3) and variance (F,) of the unit-variance OU 1..F steps after value `last`."""
    a = np.exp(-FINE_DT / reach.TAU_OU) ** np.arange(1, n_steps + 1)
    return a[:, None] * last[None, :], 1 - a**2


def reach_causal_expected(rec: Recording, starts, *, n_bins: int, bin_size: float = 0.02,
                          truth: ReachTruth | None = None, know_ou: bool = True) -> np.ndarray:
    """(n, n_bins, N) causal-oracle expected counts for windows starting at go cues `starts`.
    know_ou=False averages over the OU state at the go cue too (its stationary law), to measure
    what knowing it is worth."""
    truth = truth or ReachTruth(rec)
    per_bin = int(round(bin_size / FINE_DT))
    n_fine = n_bins * per_bin
    rt_steps, rt_prob = rt_law()
    if n_fine > rt_steps[0] + int(round(0.8 / FINE_DT)):
        raise ValueError(f"{rec.source}: horizon {n_bins * bin_size:.3f} s reaches past the shortest "
                         "trial's end; the causal oracle covers one trial")
    out = np.empty((len(starts), n_bins, len(truth.offset)))
    for w, start in enumerate(np.asarray(starts, dtype=float)):
        i = truth.trial_at_go(start)
        steps = truth.sched["go"][i] + np.arange(n_fine)
        ou_mean, ou_var = ou_forecast(truth.latent[steps[0] - 1, N_TASK:], n_fine)
        if not know_ou:
            ou_mean, ou_var = np.zeros_like(ou_mean), np.ones_like(ou_var)
        rate = sum(prob * truth.mean_rates(truth.task_latent(i, steps, rt), ou_mean, ou_var)
                   for rt, prob in zip(rt_steps, rt_prob))
        out[w] = rate.reshape(n_bins, per_bin, -1).sum(1) * FINE_DT
    return out
