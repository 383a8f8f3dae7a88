"""How much does the single-trial part add to the condition average? psth vs psth_factors (JSON).

    python benchmarks/factor_baseline.py [--datasets demo pmd] [--out-dir benchmarks/results]

Fits the PSTH baseline and the PSTH plus single-trial latent factors (evaluation/baselines/factors.py)
exactly as `neurohorizon evaluate` does (training trials at the evaluation alignment, choices made on
the validation windows) and scores both on the test windows with the NLB null, at 12 / 25 / 50 bins.
`demo` is the demo's reach data; the other names are `quality.py`'s datasets (real recordings skip
when ../shared/data is absent).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from neurohorizon.config import load_config
from neurohorizon.data.prepare import prepare_data
from neurohorizon.evaluation.baselines import PSTH, PSTHFactors
from neurohorizon.evaluation.baselines._data import iter_batches
from neurohorizon.evaluation.metrics import bits_per_spike

sys.path.insert(0, str(Path(__file__).parent))
from quality import DATASETS  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "src/neurohorizon/configs/demo.yaml"


def score(model, dataset) -> dict:
    batch = next(iter_batches(dataset, 100_000))
    rate = model.predict(batch).double().numpy()
    counts = batch["target_counts"].double().numpy()
    return {str(h): round(float(bits_per_spike(rate[:, :h], counts[:, :h])), 4)
            for h in (12, 25, 50) if h <= counts.shape[1]}


def run(name: str) -> dict:
    if name == "demo":
        cfg = load_config(DEMO, [])
    else:
        source, overrides = DATASETS[name]
        cfg = load_config(None, [f"data.source={source}", *overrides])
    data = prepare_data(cfg.data)
    out = {"dataset": name, "source": cfg.data.source, "null": "NLB (per-neuron mean of the evaluated spikes)",
           "n_windows": {"train": len(data.train_aligned), "valid": len(data.valid), "test": len(data.test)}}
    for label, model in (("psth", PSTH()), ("psth_factors", PSTHFactors())):
        t0 = time.monotonic()
        model.fit(data.train_aligned, data.valid)
        out[label] = {"chosen": model.chosen(), "fit_s": round(time.monotonic() - t0, 1),
                      "valid_fp_bps": score(model, data.valid), "test_fp_bps": score(model, data.test)}
        print(name, label, json.dumps(out[label]), flush=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["demo", "pmd"])
    parser.add_argument("--out-dir", default="benchmarks/results")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for name in args.datasets:
        try:
            result = run(name)
        except FileNotFoundError as err:  # a real recording that is not on this machine
            print(f"{name}: skipped ({err})")
            continue
        Path(args.out_dir, f"factor_baseline_{name}.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
