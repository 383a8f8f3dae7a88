"""What do slow latent dynamics add to the factor prior? data.rate_prior_dynamics on the demo (JSON).

    python benchmarks/dynamics_prior.py [--paths 2 3 4] [--tau-ms 100 200 400] [--out benchmarks/results/dynamics_prior.json]

The demo's factor prior (`data.rate_prior=psth_factors`, 4 factors, prior rank 16) is fitted once;
then each (number of paths, time constant) is fitted on the training trials by Laplace-EM
(`FactorPrior.with_dynamics`, data/dynamics.py) and scored on its own: the expected counts of the
validation and test go-cue windows, as the model gets them, in forecast bits/spike (NLB null) at
12 / 25 / 50 bins, and the validation Poisson NLL per window (without log k!) that picks the setting.
The reach generator's single-trial OU noise has 3 dimensions and a 300 ms time constant; the grid is
not centred on it, and the choice is made on validation only.
"""

from __future__ import annotations

import argparse
import json
import time
from itertools import product
from pathlib import Path

import numpy as np
import torch

from neurohorizon.config import load_config
from neurohorizon.data.prepare import prepare_data
from neurohorizon.evaluation.baselines._data import iter_batches
from neurohorizon.evaluation.metrics import bits_per_spike

DEMO = Path(__file__).resolve().parents[1] / "src/neurohorizon/configs/demo.yaml"
HORIZONS = (12, 25, 50)


def scored(dataset, prior) -> dict:
    """The prior's forecasts of `dataset`'s windows: fp-bps per horizon and NLL per window."""
    dataset.prior = prior
    batch = next(iter_batches(dataset, 100_000))
    rates, y = batch["prior_counts"].double().numpy(), batch["target_counts"].double().numpy()
    out = {str(h): round(bits_per_spike(rates[:, :h], y[:, :h]), 4) for h in HORIZONS}
    out["nll_per_window"] = round(float((rates - y * np.log(rates)).sum() / len(y)), 3)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paths", type=int, nargs="*", default=[2, 3, 4])
    parser.add_argument("--tau-ms", type=float, nargs="*", default=[100.0, 200.0, 400.0])
    parser.add_argument("--out", default="benchmarks/results/dynamics_prior.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.monotonic()
    data = prepare_data(load_config(DEMO, ["data.rate_prior=psth_factors", "data.rate_prior_dynamics=0"]).data)
    static = data.prior
    out = {"data": "demo (synthetic:reach, go-cue windows)", "null": "NLB (per-neuron mean of the evaluated spikes)",
           "static_factors": static.loadings.shape[1], "prepare_s": round(time.monotonic() - t0, 1),
           "static": {s: scored(ds, static) for s, ds in (("valid", data.valid), ("test", data.test))}, "dynamics": {}}
    print("static", json.dumps(out["static"]), flush=True)
    train = data.splits.all_intervals("train")
    for k, tau_ms in product(args.paths, args.tau_ms):
        t0 = time.monotonic()
        prior = static.with_dynamics(data.recordings, train, lambda r: data.vocab.index(r.unit_ids), k=k,
                                     tau_bins=tau_ms / 1000 / static.table_prior.bin_size)
        row = {"paths": k, "tau_ms": tau_ms, "fit_s": round(time.monotonic() - t0, 1),
               **{s: scored(ds, prior) for s, ds in (("valid", data.valid), ("test", data.test))}}
        out["dynamics"][f"{k}x{tau_ms:g}ms"] = row
        print(json.dumps(row), flush=True)
    best = min(out["dynamics"], key=lambda n: out["dynamics"][n]["valid"]["nll_per_window"])
    out["chosen_on_validation"] = best
    Path(args.out).write_text(json.dumps(out, indent=1))
    print("chosen on validation:", best, json.dumps(out["dynamics"][best]["test"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
