"""How much of the reach oracle can any forecaster reach? The causal ceiling (JSON).

    python benchmarks/reach_ceiling.py [--out benchmarks/results/reach_ceiling.json]

The oracle's bits/spike uses the true future rates, which depend on things no model of the
past can know at the go cue: this trial's reaction time (sd 40 ms) and the future of the
single-trial OU noise. The causal oracle (`neurohorizon.data.synthetic.causal`) averages
exactly over those and knows everything else; its bits/spike bounds every forecaster's
expected score. Scored on the demo's test windows (go-cue aligned) and, for a steadier
ratio, on every trial's go cue. Both use the NLB null of the evaluated spikes.

The ideal observer (`neurohorizon.data.synthetic.observer`) knows what the causal oracle knows
except the trial's gain, preparatory jitter and OU state, which it infers from the context's
spikes (the demo's 0.5 s) under their true priors: what a perfectly learned model of this
generator could reach from that context (up to Laplace's approximation).

`generator_psth` is the observer before it sees a spike: the generator's own condition average
(gain, jitter and OU state averaged over their priors). A PSTH fitted from the training trials
falls short of it by the cost of estimating it; the observer beats it by what single-trial
inference is worth.

`causal_without_ou` is the causal oracle without the OU state at the go cue (averaged over its
stationary law): what knowing the single-trial OU state is worth at each horizon.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from neurohorizon.config import load_config
from neurohorizon.data.binning import bin_spikes_at_edges
from neurohorizon.data.prepare import prepare_data
from neurohorizon.data.synthetic.causal import ReachTruth, reach_causal_expected
from neurohorizon.data.synthetic.observer import reach_generator_psth, reach_observer_expected
from neurohorizon.data.synthetic.oracle import expected_counts
from neurohorizon.evaluation.metrics import bits_per_spike

DEMO = Path(__file__).resolve().parents[1] / "src/neurohorizon/configs/demo.yaml"
HORIZONS = (12, 25, 50)


def observed(rec, starts, n_bins, bin_size):
    times = np.asarray(rec.data.spikes.timestamps)
    units = np.asarray(rec.data.spikes.unit_index)
    n_units = len(rec.data.units.id)
    return np.stack([bin_spikes_at_edges(times, units, n_units, s + bin_size * np.arange(n_bins + 1))
                     for s in starts]).astype(float)


def score(rec, truth, starts, bin_size, context) -> dict:
    n = max(HORIZONS)
    target = observed(rec, starts, n, bin_size)
    oracle = np.stack([expected_counts(rec, start=s, n_steps=n, bin_size=bin_size) for s in starts])
    causal = reach_causal_expected(rec, starts, n_bins=n, bin_size=bin_size, truth=truth)
    blind = reach_causal_expected(rec, starts, n_bins=n, bin_size=bin_size, truth=truth, know_ou=False)
    observer = reach_observer_expected(rec, starts, n_bins=n, bin_size=bin_size, context=context,
                                       truth=truth)
    psth = reach_generator_psth(rec, starts, n_bins=n, bin_size=bin_size, truth=truth)
    out = {}
    for h in HORIZONS:
        o, c, v, b, p = (bits_per_spike(x[:, :h], target[:, :h]) for x in (oracle, causal, observer, blind, psth))
        out[str(h)] = {"oracle_fp_bps": o, "causal_oracle_fp_bps": c, "causal_fraction_of_oracle": c / o,
                       "causal_without_ou_fp_bps": b, "causal_without_ou_fraction_of_oracle": b / o,
                       "observer_fp_bps": v, "observer_fraction_of_oracle": v / o,
                       "observer_fraction_of_causal": v / c,
                       "generator_psth_fp_bps": p, "generator_psth_fraction_of_oracle": p / o}
    return {"n_windows": len(starts), "fp_bps": out}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/reach_ceiling.json")
    args = parser.parse_args(argv)
    cfg = load_config(DEMO, [])
    data = prepare_data(cfg.data)
    rec = data.recordings[0]
    truth = ReachTruth(rec)
    bin_size = cfg.data.bin_size_ms / 1000
    test_starts = [w.onset for w in data.test.windows]
    all_starts = truth.sched["go"][1:] * 0.005  # every trial but the first (no earlier trial)
    context = cfg.data.context_ms / 1000
    result = {"data": cfg.data.source, "null": "NLB (per-neuron mean of the evaluated spikes)",
              "observer_context_s": context,
              "test_windows": score(rec, truth, test_starts, bin_size, context),
              "all_go_cues": score(rec, truth, all_starts, bin_size, context)}
    print(json.dumps(result, indent=1))
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
