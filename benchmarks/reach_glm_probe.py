"""Can a simple model learn reach's single-trial deviations from the demo's 224 training trials? (JSON)

    python benchmarks/reach_glm_probe.py [--out benchmarks/results/reach_glm_probe.json]

A diagnostic for the quality target of the reach benchmark. On the demo's data (go-cue windows),
a low-rank Poisson GLM predicts the future bins' log-rates as the condition prior's log-rate plus
B A x, where x is the context's deviation from the prior (counts minus prior counts, summed in
100 ms chunks per unit: 500 standardised features). A and B have rank k and a ridge penalty; it
is fitted by full-batch Adam on the training trials' go-cue windows, whose prior is left-one-out
(data/prior.py), and scored on the validation and test windows with the NLB null. If it cannot beat
the prior alone, the deviations are not learnable from this many trials by a linear route.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from neurohorizon.config import load_config
from neurohorizon.data.prepare import prepare_data
from neurohorizon.evaluation.metrics import bits_per_spike

DEMO = Path(__file__).resolve().parents[1] / "src/neurohorizon/configs/demo.yaml"
HORIZONS, CHUNK = (12, 25, 50), 5
# the condition prior (rank 16) the probe was written for: demo.yaml's prior now adds factors and paths
PLAIN_PRIOR = ["data.rate_prior=psth", "data.rate_prior_dynamics=0"]


def window_arrays(ds, prior, spec) -> dict:
    """Context counts, prior over context and future, and target counts of every window of ds."""
    out = {k: [] for k in ("context", "context_prior", "prior", "target")}
    tc = spec.context_bins
    for i, w in enumerate(ds.windows):
        item, rec = ds[i], ds.recordings[w.rec]
        edges = w.onset + spec.bin_size * np.arange(-tc, spec.horizon_bins)
        expected = prior.expected(rec, item["units"], edges, rec_index=w.rec, onset=w.onset)
        out["context"].append(item["context_counts"])
        out["context_prior"].append(expected[:tc])
        out["prior"].append(expected[tc:])
        out["target"].append(item["target_counts"])
    return {k: np.stack(v).astype(np.float64) for k, v in out.items()}


def dense_windows(data, epochs: int) -> dict:
    """window_arrays over `epochs` redraws of the training set's random windows (its own
    leave-one-out prior), i.e. what the trainer sees rather than one window per trial."""
    parts = []
    for epoch in range(epochs):
        data.train.resample(100 + epoch)
        parts.append(window_arrays(data.train, data.train.prior, data.spec))
    return {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}


def deviation_features(a: dict) -> np.ndarray:
    dev = a["context"] - a["context_prior"]  # (n, Tc, N)
    n, T, N = dev.shape
    return dev[:, T % CHUNK:].reshape(n, -1, CHUNK, N).sum(2).reshape(n, -1)


def fit_glm(x, log_prior, y, rank: int, ridge: float, iters: int = 600):
    g = torch.Generator().manual_seed(0)
    A = (torch.randn(x.shape[1], rank, generator=g, dtype=torch.float64) * 0.01).requires_grad_()
    B = (torch.randn(rank, y.shape[1], generator=g, dtype=torch.float64) * 0.01).requires_grad_()
    opt = torch.optim.Adam([A, B], lr=0.01)
    for _ in range(iters):
        eta = (log_prior + x @ A @ B).clamp(-10, 10)
        loss = (eta.exp() - y * eta).sum(1).mean() + ridge * (A.pow(2).sum() + B.pow(2).sum())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return A.detach(), B.detach()


def scores(x, log_prior, y, shape, weights=None) -> dict:
    eta = log_prior if weights is None else log_prior + x @ weights[0] @ weights[1]
    rate = eta.clamp(-10, 10).exp().reshape(shape).numpy()
    counts = y.reshape(shape).numpy()
    return {str(h): round(float(bits_per_spike(rate[:, :h], counts[:, :h])), 4) for h in HORIZONS}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/reach_glm_probe.json")
    parser.add_argument("--dense-epochs", type=int, default=0,
                        help="fit on this many epochs of the trainer's random training windows (4096 each, "
                             "anywhere in the training trials) instead of the 224 go-cue windows; slow")
    parser.add_argument("--grid", default="2,4,8:1e-3,1e-2,1e-1,1",
                        help="ranks:ridges to fit, e.g. 4:1e-3 (default: the full grid)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_config(DEMO, PLAIN_PRIOR)
    data = prepare_data(cfg.data)
    spec = data.spec
    splits = {"train": dense_windows(data, args.dense_epochs) if args.dense_epochs else
              window_arrays(data.train_aligned, data.prior.leave_one_out(), spec),
              "valid": window_arrays(data.valid, data.prior, spec),
              "test": window_arrays(data.test, data.prior, spec)}
    feats = {k: deviation_features(a) for k, a in splits.items()}
    mu, sd = feats["train"].mean(0), feats["train"].std(0) + 1e-6
    t = {k: (torch.tensor((feats[k] - mu) / sd), torch.tensor(np.log(np.maximum(a["prior"], 1e-6))).flatten(1),
             torch.tensor(a["target"]).flatten(1), a["target"].shape) for k, a in splits.items()}
    result = {"data": cfg.data.source, "n_windows": {k: len(a["target"]) for k, a in splits.items()},
              "features": int(feats["train"].shape[1]), "null": "NLB (per-neuron mean of the evaluated spikes)",
              "prior_alone": {k: scores(*t[k]) for k in ("train", "valid", "test")}, "glm": []}
    ranks, ridges = ([float(x) for x in part.split(",")] for part in args.grid.split(":"))
    result["train_windows"] = f"{args.dense_epochs} epochs of random windows" if args.dense_epochs else "go cue"
    for rank in map(int, ranks):
        for ridge in ridges:
            w = fit_glm(*t["train"][:3], rank, ridge, iters=400 if args.dense_epochs else 600)
            row = {"rank": rank, "ridge": ridge, **{k: scores(*t[k], w) for k in ("valid", "test")}}
            result["glm"].append(row)
            print(json.dumps(row), flush=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result["prior_alone"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
