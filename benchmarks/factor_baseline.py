"""How much does the single-trial part add to the condition average? psth vs psth_factors (JSON).

    python benchmarks/factor_baseline.py [--datasets demo pmd] [--out-dir benchmarks/results]

Fits the PSTH baseline and the PSTH plus single-trial latent factors (evaluation/baselines/factors.py)
exactly as `neurohorizon evaluate` does (training trials at the evaluation alignment, choices made on
the validation windows) and scores both on the test windows with the NLB null, at 12 / 25 / 50 bins.
`demo` is the demo's reach data; the other names are `quality.py`'s datasets (real recordings skip
when ../shared/data is absent). On trial data it also scores the model's priors alone
(`data.rate_prior=psth`, and `psth_factors` with 4 factors, with `data.rate_prior_factors=auto`, and
with 4 factors plus 3 slow latent paths, `data.rate_prior_dynamics=3`; the dataset's prior rank, 16 in
the demo): what the model forecasts around.

With `--runs RUN ...` (trained runs, each evaluated on its own test split) it also scores each run's
rollout (mean of 32 sampled trajectories) and its equal-weight average with psth_factors (the weight is
fixed, not tuned): are the model and the factor baseline complementary?
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from neurohorizon.config import load_config
from neurohorizon.data.factors import n_factors
from neurohorizon.data.prepare import prepare_data
from neurohorizon.evaluation.baselines import PSTH, PSTHFactors
from neurohorizon.evaluation.baselines._data import iter_batches
from neurohorizon.evaluation.evaluate import _eval_data
from neurohorizon.evaluation.loading import load_run
from neurohorizon.evaluation.metrics import bits_per_spike
from neurohorizon.evaluation.predict import predict_dataset, predict_forecaster

sys.path.insert(0, str(Path(__file__).parent))
from quality import DATASETS  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "src/neurohorizon/configs/demo.yaml"


def horizons(rate, counts) -> dict:
    return {str(h): round(float(bits_per_spike(rate[:, :h], counts[:, :h])), 4)
            for h in (12, 25, 50) if h <= counts.shape[1]}


def score(model, dataset) -> dict:
    batch = next(iter_batches(dataset, 100_000))
    return horizons(model.predict(batch).double().numpy(), batch["target_counts"].double().numpy())


def mixed_with_run(run_dir: str) -> dict:
    """A run's rollout, psth_factors and their equal-weight average on the run's test windows."""
    run = load_run(run_dir, device="cpu")
    prepared, test, _ = _eval_data(run, None, "error", {})
    model = predict_dataset(run.model, run.likelihood, test, device="cpu", feedback="sample", n_samples=32,
                            teacher_forced=False)["groups"]
    factors = PSTHFactors().fit(prepared.train_aligned, prepared.valid)
    baseline = predict_forecaster(factors, test)["groups"]
    out = {}
    for s, group in model.items():
        a, b, y = (x.astype(float) for x in (group["rollout"], baseline[s]["rollout"], group["target"]))
        out[str(s)] = {"model": horizons(a, y), "psth_factors": horizons(b, y), "average": horizons((a + b) / 2, y)}
    print(run_dir, json.dumps(out), flush=True)
    return out


NO_PATHS = "data.rate_prior_dynamics=0"  # the demo config's prior has 3 slow paths; these rows have none
PRIORS = {"psth": ["data.rate_prior=psth", NO_PATHS], "psth_factors": ["data.rate_prior=psth_factors", NO_PATHS],
          "psth_factors_auto": ["data.rate_prior=psth_factors", "data.rate_prior_factors=auto", NO_PATHS],
          "psth_factors_dynamics": ["data.rate_prior=psth_factors", "data.rate_prior_dynamics=3"]}


def priors_alone(cfg_path, overrides: list) -> dict:
    """The model's priors on their own (`PRIORS`, as the model gets them): expected counts of the
    validation and test windows, scored as forecasts."""
    out = {}
    for name, prior in PRIORS.items():
        t0 = time.monotonic()
        data = prepare_data(load_config(cfg_path, [*overrides, *prior]).data)
        scores = {}
        for split, dataset in (("valid", data.valid), ("test", data.test)):
            batch = next(iter_batches(dataset, 100_000))
            scores[f"{split}_fp_bps"] = horizons(batch["prior_counts"].double().numpy(),
                                                 batch["target_counts"].double().numpy())
        out[name] = {"prepare_s": round(time.monotonic() - t0, 1), **scores}
        if data.factor_scores is not None:
            out[name]["factors_chosen"] = n_factors(data.prior)
            out[name]["valid_nll_per_window"] = {str(k): round(v, 4) for k, v in data.factor_scores.items()}
        print("prior", name, json.dumps(out[name]), flush=True)
    return out


def run(name: str) -> dict:
    cfg_path, overrides = (DEMO, []) if name == "demo" else (None, [f"data.source={DATASETS[name][0]}", *DATASETS[name][1]])
    cfg = load_config(cfg_path, overrides)
    data = prepare_data(cfg.data)
    out = {"dataset": name, "source": cfg.data.source, "null": "NLB (per-neuron mean of the evaluated spikes)",
           "n_windows": {"train": len(data.train_aligned), "valid": len(data.valid), "test": len(data.test)}}
    for label, model in (("psth", PSTH()), ("psth_factors", PSTHFactors())):
        t0 = time.monotonic()
        model.fit(data.train_aligned, data.valid)
        out[label] = {"chosen": model.chosen(), "fit_s": round(time.monotonic() - t0, 1),
                      "valid_fp_bps": score(model, data.valid), "test_fp_bps": score(model, data.test)}
        print(name, label, json.dumps(out[label]), flush=True)
    if cfg.data.align_event:  # trial data: the priors the model can forecast around
        out["model_priors_alone"] = priors_alone(cfg_path, overrides + [f"data.rate_prior_rank={cfg.data.rate_prior_rank}"])
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="*", default=["demo", "pmd"])
    parser.add_argument("--out-dir", default="benchmarks/results")
    parser.add_argument("--runs", nargs="*", default=[], help="trained runs to mix with psth_factors")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    for name in args.datasets:
        try:
            result = run(name)
        except FileNotFoundError as err:  # a real recording that is not on this machine
            print(f"{name}: skipped ({err})")
            continue
        Path(args.out_dir, f"factor_baseline_{name}.json").write_text(json.dumps(result, indent=1))
    if args.runs:
        mixed = {Path(run).name: mixed_with_run(run) for run in args.runs}
        Path(args.out_dir, "factor_baseline_mixed.json").write_text(json.dumps(mixed, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
