"""`neurohorizon demo`: the whole pipeline on built-in synthetic reach data, in one folder.

1. generate the default synthetic `reach` data (ground truth known);
2. inspect it;
3. train a model sized for a 2-core CPU (about 8 minutes);
4. evaluate it against every baseline at 12, 25 and 50 bins (240, 500, 1000 ms);
5. write report.html and report.md, and print where they are.
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

from neurohorizon.config import load_config
from neurohorizon.runs import new_run_dir, removed_on_failure


def demo_config(minutes: float, quick: bool):
    if not minutes > 0:  # 0 would mean no cap at all (train.max_minutes=0)
        raise ValueError(f"demo --minutes must be > 0, got {minutes:g}")
    path = resources.files("neurohorizon") / "configs" / "demo.yaml"
    overrides = [f"train.max_minutes={minutes}"]
    if quick:  # smoke version: tiny model, a few steps, short rollouts for evaluation
        overrides += ["model.preset=tiny", "train.max_steps=60", "train.eval_every=30",
                      "train.checkpoint_every=30", "train.max_minutes=1", "data.train_windows_per_epoch=512",
                      "data.options.trials_per_condition=12", "sampling.warmup=20", "sampling.n=30",
                      "train.warmup_steps=10"]
    return load_config(Path(str(path)), overrides)


def run_demo(*, runs_dir="runs", minutes: float = 9.0, quick: bool = False, log=print) -> Path:
    from neurohorizon.data.sources import load_data
    from neurohorizon.evaluation.evaluate import evaluate_run
    from neurohorizon.evaluation.inspect import inspect_data
    from neurohorizon.training.run import train_run

    t0 = time.monotonic()
    cfg = demo_config(minutes, quick)
    root = new_run_dir(runs_dir, "demo")
    with removed_on_failure(root, keep_if="*/last.pt"):  # a stopped demo keeps only a resumable training
        log(f"[1/5] generating {cfg.data.source} data")
        recordings = load_data(cfg.data.source, **cfg.data.options)
        log(f"[2/5] inspecting -> {root / 'inspect'}")
        (root / "inspect").mkdir()
        inspect_data(recordings, root / "inspect", bin_size=cfg.data.bin_size_ms / 1000, name=cfg.data.source)
        log(f"[3/5] training ({cfg.model.preset} model, up to {cfg.train.max_minutes:g} min)")
        run_dir = train_run(cfg, runs_dir=root, recordings=recordings)
    log(f"run folder (for evaluate, forecast and load_run): {run_dir}")
    log("[4/5] evaluating against every baseline at 12, 25 and 50 bins")
    out = evaluate_run(run_dir, out_dir=root / "evaluation", baseline_budget_s=10 if quick else 60,
                       n_samples=10 if quick else 32, log=log)
    log(f"[5/5] done in {(time.monotonic() - t0) / 60:.1f} min")
    report = out / "report.html"
    log(f"report: {report}\n        {out / 'report.md'}")
    return report
