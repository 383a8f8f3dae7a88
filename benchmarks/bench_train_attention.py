"""Training steps/s on the demo data with the encoder's attention kernels, vs cuDNN attention allowed.

The encoder's cross-attention sees a different number of context spikes in every batch. cuDNN
attention (which PyTorch prefers on Hopper GPUs) builds an execution plan per shape, so it
re-planned at every step. `model/encoder.py` restricts that call to kernels that need no plan
(VARIABLE_LENGTH_ATTENTION). This runs the trainer with that list, then with cuDNN added back
(PyTorch's default), then the list again, in one process, and writes steps/s and final losses.

    python benchmarks/bench_train_attention.py [--steps 200] [--out FILE]
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend

from neurohorizon.config import load_config
from neurohorizon.model import encoder
from neurohorizon.training import run as run_module

DEMO = Path(__file__).parents[1] / "src" / "neurohorizon" / "configs" / "demo.yaml"


def steps_per_s(steps: int, *, cudnn: bool, runs_dir: Path) -> dict:
    """Train `steps` steps (scheduled sampling on from step 50) and time the steps alone."""
    kernels = list(encoder.VARIABLE_LENGTH_ATTENTION)
    if cudnn:
        encoder.VARIABLE_LENGTH_ATTENTION.insert(0, SDPBackend.CUDNN_ATTENTION)
    times = []
    step = run_module.Trainer.train_step

    def timed(self, batch):
        t0 = time.perf_counter()
        out = step(self, batch)  # ends in .item(): the GPU work is done when it returns
        times.append(time.perf_counter() - t0)
        return out

    run_module.Trainer.train_step = timed
    try:
        cfg = load_config(DEMO, [f"train.max_steps={steps}", "train.eval_every=100000", "train.max_minutes=0",
                                 "train.checkpoint_every=100000", "sampling.warmup=50", "sampling.n=100"])
        run = run_module.train_run(cfg, runs_dir=runs_dir, quiet=True)
    finally:
        run_module.Trainer.train_step = step
        encoder.VARIABLE_LENGTH_ATTENTION[:] = kernels
    with open(run / "train_log.csv") as handle:
        rows = list(csv.DictReader(handle))
    timed_steps = times[10:]  # the first steps pay one-off costs
    return {"cudnn_allowed": cudnn, "steps_per_s": len(timed_steps) / sum(timed_steps),
            "final_loss": float(rows[-1]["loss"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "gpu" / "train_attention.json"))
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        rounds = [steps_per_s(args.steps, cudnn=c, runs_dir=Path(tmp)) for c in (False, True, False)]
    ours = [r["steps_per_s"] for r in rounds if not r["cudnn_allowed"]]
    out = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
           "steps": args.steps, "rounds": rounds,
           "speedup_vs_cudnn_allowed": min(ours) / rounds[1]["steps_per_s"]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
