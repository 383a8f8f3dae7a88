"""Trainer steps/s on the demo data (small preset, batch 16), for settings compared in one process.

Comparisons, each run A/B/.../A so drift on a shared machine shows up as a gap between the A's:

- ``attention``: the encoder's variable-length cross-attention restricted to kernels that need no
  plan (``encoder.VARIABLE_LENGTH_ATTENTION``) vs cuDNN attention allowed (PyTorch's default on
  Hopper, which re-planned at every step because the number of context spikes changes per batch).
- ``levers``: the trainer's own options, ``train.num_workers`` (batches built ahead in worker
  processes) and ``train.compile`` (torch.compile), vs the defaults.
- ``batch``: batch sizes 16 / 64 / 128 of the small preset, and the base preset at 64 (windows/s).
- ``workers``: batch 128 with the batches built in the loop vs by 8 worker processes.

Rates per round: ``step_per_s`` times ``Trainer.train_step`` alone; ``loop_per_s`` times the
whole loop between steps, batch building included (what num_workers changes); ``windows_per_s``
is the loop's rate times the batch size. ``--profile``
adds a cProfile of the timed steps of the default settings (the functions with the most own time).
Ratios are to the mean of the first setting's rounds; their spread is recorded too.

    python benchmarks/bench_trainer.py [--compare attention|levers|batch|workers] [--steps 300] [--profile] [--out FILE]
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import json
import pstats
import tempfile
import time
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend

from neurohorizon.config import load_config
from neurohorizon.model import encoder
from neurohorizon.training import run as run_module

DEMO = Path(__file__).parents[1] / "src" / "neurohorizon" / "configs" / "demo.yaml"
RESULTS = Path(__file__).parent / "results"
# (name, config overrides, cuDNN attention allowed)
COMPARISONS = {
    "attention": [("no-plan kernels", [], False), ("cuDNN allowed", [], True), ("no-plan kernels", [], False)],
    "levers": [("defaults", [], False), ("num_workers=4", ["train.num_workers=4"], False),
               ("compile", ["train.compile=true"], False), ("defaults", [], False)],
    "batch": [("small, batch 16", [], False), ("small, batch 64", ["train.batch_size=64"], False),
              ("small, batch 128", ["train.batch_size=128"], False),
              ("base, batch 64", ["model.preset=base", "train.batch_size=64"], False),
              ("small, batch 16", [], False)],
    "workers": [("batch 128", ["train.batch_size=128"], False),
                ("batch 128, num_workers=8", ["train.batch_size=128", "train.num_workers=8"], False),
                ("batch 128", ["train.batch_size=128"], False)],
}


def timed_run(steps: int, *, skip: int, overrides: list[str], cudnn: bool, runs_dir: Path,
              profile: cProfile.Profile | None = None) -> dict:
    """Train `steps` steps (scheduled sampling on from step 50); rates over the steps after `skip`."""
    kernels = list(encoder.VARIABLE_LENGTH_ATTENTION)
    if cudnn:
        encoder.VARIABLE_LENGTH_ATTENTION.insert(0, SDPBackend.CUDNN_ATTENTION)
    starts, durations = [], []
    step = run_module.Trainer.train_step

    def timed(self, batch):
        if profile is not None and len(starts) == skip:  # from the first timed step on
            profile.enable()
        starts.append(time.perf_counter())
        out = step(self, batch)  # ends in .item(): the GPU work is done when it returns
        durations.append(time.perf_counter() - starts[-1])
        if profile is not None and len(starts) == steps:  # not the final validation
            profile.disable()
        return out

    run_module.Trainer.train_step = timed
    try:
        cfg = load_config(DEMO, [f"train.max_steps={steps}", "train.eval_every=100000", "train.max_minutes=0",
                                 "train.checkpoint_every=100000", "sampling.warmup=50", "sampling.n=100",
                                 *overrides])
        run = run_module.train_run(cfg, runs_dir=runs_dir, quiet=True)
    finally:
        if profile is not None:
            profile.disable()
        run_module.Trainer.train_step = step
        encoder.VARIABLE_LENGTH_ATTENTION[:] = kernels
    with open(run / "train_log.csv") as handle:
        rows = list(csv.DictReader(handle))
    n = len(starts) - 1 - skip
    loop_per_s = n / (starts[-1] - starts[skip])
    return {"overrides": overrides, "cudnn_allowed": cudnn,
            "step_per_s": (len(durations) - skip) / sum(durations[skip:]), "loop_per_s": loop_per_s,
            "windows_per_s": loop_per_s * cfg.train.batch_size, "final_loss": float(rows[-1]["loss"])}


def top_functions(profile: cProfile.Profile, n: int = 25) -> list[dict]:
    stats = pstats.Stats(profile)
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:n]
    return [{"function": f"{Path(file).name}:{line}:{name}", "calls": calls, "own_s": round(own, 3),
             "cumulative_s": round(cum, 3)} for (file, line, name), (_, calls, own, cum, _) in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compare", choices=sorted(COMPARISONS), default="levers")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--skip", type=int, default=60, help="steps left out of the rates (compilation, warm-up)")
    ap.add_argument("--profile", action="store_true", help="also profile one run with the default settings")
    ap.add_argument("--out", default=None, help="default: results/[gpu/]train_<compare>.json")
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides, cudnn in COMPARISONS[args.compare]:
            result = timed_run(args.steps, skip=args.skip, overrides=overrides, cudnn=cudnn, runs_dir=Path(tmp))
            rounds.append({"name": name, **result})
            print(f"{name:>16}: {result['step_per_s']:.2f} steps/s in the step, {result['loop_per_s']:.2f} in the loop "
                  f"({result['windows_per_s']:.0f} windows/s)", flush=True)
        profile = None
        if args.profile:
            profile = cProfile.Profile()
            timed_run(args.steps, skip=args.skip, overrides=[], cudnn=False, runs_dir=Path(tmp), profile=profile)
    repeats = [r["windows_per_s"] for r in rounds if r["name"] == rounds[0]["name"]]
    base = sum(repeats) / len(repeats)
    out = {"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
           "threads": torch.get_num_threads(), "steps": args.steps, "skip": args.skip, "rounds": rounds,
           "first_setting_spread": [min(repeats) / base, max(repeats) / base]}
    for r in rounds:
        r["windows_per_s_vs_first_setting_mean"] = r["windows_per_s"] / base
    if profile is not None:
        out["profile_top_own_time"] = top_functions(profile)
    path = Path(args.out) if args.out else RESULTS / ("gpu" if cuda else "") / f"train_{args.compare}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
