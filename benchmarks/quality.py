"""Forecast quality of NeuroHorizon vs every baseline, per horizon, per dataset (JSON).

    python benchmarks/quality.py [--datasets reach lorenz pmd aplysia] [--minutes 6]
                                 [--out benchmarks/results/quality.json]

A reduced study: each dataset trains one NeuroHorizon model (time-boxed, CPU), fits every
baseline on the same training split, and evaluates all on held-out test windows at 12, 25
and 50 bins (240, 500, 1000 ms) where the data allow. Synthetic data report the oracle
(true-rate) bits/spike and each method's fraction of it. Aplysia holds out whole sessions
(the third run of every preparation). Real datasets are skipped when ../shared/data is absent.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from neurohorizon.config import load_config
from neurohorizon.evaluation.evaluate import evaluate_run
from neurohorizon.training.run import train_run

DATASETS = {
    # name: (data source, overrides); windows at the go cue for trial data; the model is told
    # the experimenter's cues (target onset, go cue; trial start for pmd) and forecasts around
    # the training trials' condition average (data.rate_prior=psth), as the PSTH baseline is
    "reach": ("synthetic:reach", ["data.align_event=go_cue", "data.events=[target_on, go_cue]",
                                  "data.rate_prior=psth"]),
    "lorenz": ("synthetic:lorenz", []),
    # ex2 trials last 1.0-1.6 s: a 500 ms context leaves room for 25 bins (500 ms), not 50
    "pmd": ("recipe:pmd_reach_yu2009", ["data.horizon_ms=500", "data.align_event=trial_start",
                                         "data.align_offset_ms=500", "data.events=[trial_start]",
                                         "data.rate_prior=psth"]),
    "aplysia": ("recipe:aplysia_bruno2017", ["data.holdout_sessions=[Jun0214da03, Jun0414Bda03, Jun0514da03, "
                                             "Jun0914da03, Jun1114da03, May2214da03, Nov0514da03]"]),
}


def run_dataset(name: str, minutes: float, runs_dir: Path, extra: list[str], reuse: bool = False,
                samples: int = 32) -> dict:
    source, overrides = DATASETS[name]
    cfg = load_config(None, [f"name=quality-{name}", f"data.source={source}", "model.preset=small",
                             f"train.max_minutes={minutes}", "train.max_steps=1500", "train.eval_every=250",
                             "train.checkpoint_every=250", *overrides, *extra])
    t0 = time.monotonic()
    earlier = sorted(runs_dir.glob(f"quality-{name}-*/last.pt")) if reuse else []
    run_dir = earlier[-1].parent if earlier else train_run(cfg, runs_dir=runs_dir, quiet=True)
    train_s = time.monotonic() - t0
    out = evaluate_run(run_dir, n_samples=samples, baseline_budget_s=60.0)
    metrics = json.loads((out / "metrics.json").read_text())
    table = {}
    for method, per_h in metrics["results"].items():
        for h, block in per_h.items():
            pooled = block["pooled"]
            table.setdefault(method, {})[h] = {
                "fp_bps": pooled["rollout"]["fp_bps"],
                "teacher_forced_fp_bps": pooled.get("teacher_forced", {}).get("fp_bps"),
                "oracle_fp_bps": pooled.get("oracle", {}).get("oracle_fp_bps"),
                "fraction_of_oracle": pooled.get("oracle", {}).get("fraction_of_oracle"),
                "causal_oracle_fp_bps": pooled.get("oracle", {}).get("causal_oracle_fp_bps"),
                "fraction_of_causal_oracle": pooled.get("oracle", {}).get("fraction_of_causal_oracle"),
            }
    return {"source": source, "run": str(run_dir), "evaluation": str(out), "train_seconds": train_s,
            "horizons": metrics["horizons"], "fp_bps": table}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--minutes", type=float, default=6.0, help="training budget per dataset")
    parser.add_argument("--runs-dir", default="benchmarks/results/quality_runs")
    parser.add_argument("--out", default="benchmarks/results/quality.json")
    parser.add_argument("--reuse", action="store_true", help="evaluate the latest trained run instead of training")
    parser.add_argument("--samples", type=int, default=32, help="sampled rollouts per test window")
    parser.add_argument("overrides", nargs="*", help="extra config overrides for every dataset")
    args = parser.parse_args(argv)
    torch.set_flush_denormal(True)
    results = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
               "threads": torch.get_num_threads(), "minutes_per_dataset": args.minutes, "datasets": {}}
    for name in args.datasets:
        try:
            results["datasets"][name] = run_dataset(name, args.minutes, Path(args.runs_dir), args.overrides, args.reuse,
                                                   args.samples)
        except FileNotFoundError as err:  # shared data absent: skip cleanly
            results["datasets"][name] = {"skipped": f"dataset not found ({err})"}
        print(json.dumps({name: results["datasets"][name].get("fp_bps", results["datasets"][name])}, indent=1))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
