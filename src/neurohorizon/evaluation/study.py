"""`neurohorizon study`: the knowledge base's horizon plan (section 3.3).

For each horizon (12, 25, 50 bins = 240, 500, 1000 ms) it trains and evaluates
  - the autoregressive decoder with teacher forcing only,
  - the autoregressive decoder with scheduled sampling,
  - the parallel (non-autoregressive) decoder,
  - optionally other likelihood families (teacher forcing),
then reports the decision signals and a verdict on scheduled sampling per horizon.
Each finished cell is stored as cells/<name>.json, so a resumed study skips it; a cell that
finished training (cells/<name>.trained) is only evaluated, and one stopped mid-training
continues from its last.pt.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np

from neurohorizon.config import RunConfig, apply_override, load_config
from neurohorizon.data.binning import DEFAULT_BIN_SIZE, horizon_label, standard_horizons
from neurohorizon.data.prepare import window_spec
from neurohorizon.runs import json_text, new_run_dir, write_text_atomic

GAP_THRESHOLD = 0.10  # teacher-forced/rollout gap, relative to |rollout|
LATE_STEP = 30  # the knowledge base's "step 30+" PSTH-correlation check
MIN_GAP_BPS = 1e-3  # below this teacher-forced/rollout gap there is nothing for scheduled sampling to close


def cell_configs(base: RunConfig, horizons, likelihoods) -> dict[str, RunConfig]:
    """One config per (horizon, variant), each a copy of `base` (data, model, loss, training)."""
    cells = {}
    for h in horizons:
        for variant in ["teacher_forcing", "scheduled_sampling", "parallel", *likelihoods]:
            cfg = copy.deepcopy(base)
            cfg.data.horizon_ms = h * base.data.bin_size_ms
            cfg.name = f"h{h}-{variant}"
            cfg.sampling.kind, cfg.sampling.value = "constant", 1.0  # teacher forcing unless SS
            if variant == "scheduled_sampling":
                # near F2's shape (benchmarks/results/ss_seeds_reach.json): teacher forcing for the first
                # quarter, then epsilon falls to 0 and stays there; three passes, so the fed counts
                # come from a pass that itself saw mixed inputs. On reach this kept the rollout of a
                # floor-0.1, two-pass schedule and shrank the teacher-forced/rollout gap
                cfg.sampling.kind, cfg.sampling.unit, cfg.sampling.floor = "linear", "step", 0.0
                cfg.sampling.warmup = max(1, base.train.max_steps // 4)
                cfg.sampling.n = max(1, base.train.max_steps // 2)
                cfg.sampling.passes = 3
            elif variant == "parallel":
                cfg.model.decoder = "parallel"
            elif variant != "teacher_forcing":
                cfg.loss.likelihood = variant
            cfg.loss.options = likelihood_options(cfg.loss.likelihood, base.loss.options)
            cells[cfg.name] = cfg
    return cells


def check_study_args(horizons, likelihoods, max_steps: int, minutes_per_cell: float) -> None:
    """Settings every cell needs, checked before anything is trained or written."""
    from neurohorizon.losses import LIKELIHOODS

    bad = [h for h in horizons if not (isinstance(h, int) and h > 0)]
    if bad or not horizons:
        raise ValueError(f"study: horizons must be positive whole numbers of bins, got {list(horizons)}")
    if len(set(horizons)) != len(horizons):
        raise ValueError(f"study: --horizons lists a horizon twice: {list(horizons)}")
    unknown = [name for name in likelihoods if name not in LIKELIHOODS]
    if unknown:
        raise ValueError(f"study: unknown likelihood(s) {unknown}; valid names: {', '.join(LIKELIHOODS)}")
    if max_steps < 1 or not minutes_per_cell > 0:
        raise ValueError(f"study: --steps-per-cell must be >= 1 and --minutes-per-cell > 0, got {max_steps} "
                         f"and {minutes_per_cell}")


STUDY_DEFAULTS = {"horizons": [12, 25, 50], "options": {}, "preset": "tiny", "minutes_per_cell": 3.0,
                  "likelihoods": [], "max_steps": 600, "overrides": []}


def resumed_settings(study_dir: Path, data: str, given: dict) -> dict:
    """The settings saved in study.json; a different DATA or a setting given with another value is
    refused rather than silently ignored (a resumed study keeps the settings its finished cells
    were made with)."""
    if not (study_dir / "study.json").is_file():
        raise FileNotFoundError(f"{study_dir} is not a study folder (no study.json): give the folder that "
                                f"`neurohorizon study` created")
    saved = {**STUDY_DEFAULTS, **json.loads((study_dir / "study.json").read_text())}
    saved["data"] = absolute_source(saved["data"])  # older studies saved the path as given
    if absolute_source(data) != saved["data"]:
        raise ValueError(f"{study_dir} is a study of {saved['data']}, not {data}")
    changed = [k for k, v in given.items() if v != saved[k]]
    if changed:
        raise ValueError(f"study --resume keeps the settings of {study_dir / 'study.json'}; these differ: "
                         + ", ".join(f"{k} (saved {saved[k]!r}, given {given[k]!r})" for k in changed))
    return saved


def absolute_source(data: str) -> str:
    """A data path made absolute, so cells and the study resume from any folder (other sources as given)."""
    return str(Path(data).resolve()) if Path(data).exists() else data


def base_config(settings: dict, recordings) -> RunConfig:
    """The config every cell starts from: the study's settings plus its overrides."""
    steps = settings["max_steps"]
    base = load_config(None, [f"data.source={settings['data']}", f"model.preset={settings['preset']}",
                              f"train.max_minutes={settings['minutes_per_cell']}", f"train.max_steps={steps}",
                              f"train.eval_every={max(1, steps // 3)}"])
    base.data.options = settings["options"]
    if recordings[0].trials is not None and recordings[0].trials.events:
        base.data.align_event = "go_cue" if "go_cue" in recordings[0].trials.events else None
    for item in settings["overrides"]:
        key = item.split("=", 1)[0].strip()
        if key == "data.horizon_ms":
            raise ValueError("study: each cell's horizon comes from --horizons (in bins), not data.horizon_ms")
        if key == "data.source" or key.startswith("data.options"):
            raise ValueError(f"study: {key} cannot be overridden; the data is the DATA argument and its options "
                             "are given with -o KEY=VALUE (e.g. `neurohorizon study synthetic:reach -o n_neurons=50`)")
        if key in ("train.max_steps", "train.max_minutes"):
            raise ValueError(f"study: {key} is set by --steps-per-cell / --minutes-per-cell (recorded with the study)")
        if key.startswith("sampling.") or key == "model.decoder":
            raise ValueError(f"study: {key} is what the cells compare (teacher forcing, scheduled sampling, the "
                             "parallel decoder); it cannot be overridden for all of them")
        apply_override(base, item)
    if not base.data.bin_size_ms > 0:  # the cells' horizons are multiples of it
        raise ValueError(f"study: data.bin_size_ms must be > 0, got {base.data.bin_size_ms}")
    return base


def likelihood_options(name: str, options: dict) -> dict:
    """The part of `loss.options` that likelihood `name` takes (e.g. max_count only for categorical)."""
    import inspect

    from neurohorizon.losses import LIKELIHOODS

    if name not in LIKELIHOODS:
        return dict(options)  # an unknown name: check_cell says so
    takes = inspect.signature(LIKELIHOODS[name]).parameters
    return {k: v for k, v in options.items() if k in takes}


def check_cell(cfg: RunConfig, recordings) -> None:
    """What would stop a cell's training, checked before the study folder is made."""
    from neurohorizon.data.dataset import resolve_events
    from neurohorizon.losses import LIKELIHOODS, build_likelihood
    from neurohorizon.model.presets import PRESETS, check_model_overrides
    from neurohorizon.training.run import build_model
    from neurohorizon.training.trainer import check_train_config, schedule_from

    spec = window_spec(cfg.data)
    check_model_overrides(cfg.model.overrides, cfg.model.preset, spec.horizon_bins)  # the model reaches that far
    check_train_config(cfg.train)
    schedule_from(cfg.sampling)
    if cfg.model.preset not in PRESETS:
        raise ValueError(f"unknown model preset {cfg.model.preset!r}; choose from {sorted(PRESETS)}")
    if cfg.loss.likelihood not in LIKELIHOODS:
        raise ValueError(f"unknown loss.likelihood {cfg.loss.likelihood!r}; valid names: {', '.join(LIKELIHOODS)}")
    likelihood = build_likelihood(cfg.loss.likelihood, **cfg.loss.options)
    build_model(cfg, ["check/0"], likelihood)  # model.overrides, on one stand-in unit
    resolve_events(cfg.data.events, recordings)
    events = set() if recordings[0].trials is None else set(recordings[0].trials.events)
    for key, name in [("data.align_event", cfg.data.align_event), *(("data.events", e) for e in cfg.data.events)]:
        if name and name.split("@")[0] not in events:
            raise ValueError(f"{key}: {name!r} is not a trial event of {cfg.data.source} (events: {sorted(events)})")


def run_cell(name: str, cfg: RunConfig, study_dir: Path, recordings, log=print) -> dict:
    """Train + evaluate one cell unless its result already exists."""
    from neurohorizon.evaluation.evaluate import evaluate_run
    from neurohorizon.training.run import train_run

    result_path = study_dir / "cells" / f"{name}.json"
    if result_path.exists():
        log(f"  {name}: done earlier, skipped")
        return json.loads(result_path.read_text())
    trained = study_dir / "cells" / f"{name}.trained"  # training done, evaluation not (yet)
    if trained.exists() and Path(trained.read_text()).is_dir():
        run_dir = Path(trained.read_text())
        log(f"  {name}: trained earlier, evaluating")
    else:
        stopped = sorted(p for p in (study_dir / "runs").glob(f"{name}-*") if (p / "last.pt").is_file())
        if stopped:  # interrupted mid-training (Ctrl-C saves last.pt): continue it exactly
            log(f"  {name}: resuming its training ({stopped[-1].name})")
            run_dir = train_run(None, resume=stopped[-1], recordings=recordings, quiet=True)
        else:
            log(f"  {name}: training")
            run_dir = train_run(cfg, runs_dir=study_dir / "runs", recordings=recordings, quiet=True)
        trained.parent.mkdir(exist_ok=True)
        write_text_atomic(trained, str(Path(run_dir).resolve()))  # valid from any working folder
    horizon = int(round(cfg.data.horizon_ms / cfg.data.bin_size_ms))
    # the cell's own horizon is scored even when it is none of the standard 12 / 25 / 50 bins
    out = evaluate_run(run_dir, baselines=False, n_samples=5, horizons=sorted({*standard_horizons(cfg.data.bin_size_ms / 1000), horizon}),
                       log=lambda *_: None)
    metrics = json.loads((out / "metrics.json").read_text())
    result = {"name": name, "run": str(run_dir), "horizon": horizon,
              "decoder": cfg.model.decoder, "likelihood": cfg.loss.likelihood,
              "sampling": cfg.sampling.kind, "metrics": metrics["results"]["NeuroHorizon"]}
    result_path.parent.mkdir(exist_ok=True)
    write_text_atomic(result_path, json_text(result))  # a half-written cell is never taken for a finished one
    return result


def _pooled(cell: dict, *path):
    node = cell["metrics"].get(str(cell["horizon"]), {}).get("pooled", {})
    for key in path:
        node = node.get(key, {}) if isinstance(node, dict) else {}
    return np.nan if node is None or isinstance(node, dict) else node  # null in JSON: NaN


def decision_signals(cells: dict, horizons, *, bin_size: float = DEFAULT_BIN_SIZE) -> dict:
    """Section 3.3's signals and a verdict on scheduled sampling per horizon (bin_size in s: the
    cells' bins, for the labels)."""
    signals = {}
    for h in horizons:
        tf, ss, par = (cells.get(f"h{h}-{v}") for v in ("teacher_forcing", "scheduled_sampling", "parallel"))
        if tf is None:
            continue
        tf_bps, ro_bps = _pooled(tf, "teacher_forced", "fp_bps"), _pooled(tf, "rollout", "fp_bps")
        gap = (tf_bps - ro_bps) / abs(ro_bps) if ro_bps else np.nan
        s = {"tf_only_teacher_forced_bps": tf_bps, "tf_only_rollout_bps": ro_bps, "relative_gap": gap}
        if ss is not None:
            ss_ro, ss_tf = _pooled(ss, "rollout", "fp_bps"), _pooled(ss, "teacher_forced", "fp_bps")
            s.update(ss_rollout_bps=ss_ro, ss_gap=(ss_tf - ss_ro) / abs(ss_ro) if ss_ro else np.nan,
                     gap_closed=1 - (ss_tf - ss_ro) / (tf_bps - ro_bps) if tf_bps - ro_bps > MIN_GAP_BPS else np.nan)
        if par is not None:
            s["parallel_rollout_bps"] = _pooled(par, "rollout", "fp_bps")
        corr = np.asarray(_pooled(tf, "psth", "corr_per_step"), dtype=float)
        if corr.ndim == 1 and len(corr) > LATE_STEP:
            early, late = np.nanmean(corr[:LATE_STEP]), np.nanmean(corr[LATE_STEP:])
            s.update(psth_corr_before_30=early, psth_corr_from_30=late, psth_corr_falls_at_30=bool(late < early - 0.2))
        s["verdict"] = verdict(h, s, bin_size=bin_size)
        signals[str(h)] = s
    _disproportion(signals, horizons)
    return signals


def _disproportion(signals: dict, horizons) -> None:
    """Does rollout quality drop faster with horizon than the no-feedback parallel decoder's?"""
    hs = [h for h in horizons if str(h) in signals]
    for a, b in zip(hs, hs[1:]):
        sa, sb = signals[str(a)], signals[str(b)]
        ratio_ar = _ratio(sb["tf_only_rollout_bps"], sa["tf_only_rollout_bps"])
        ratio_par = _ratio(sb.get("parallel_rollout_bps", np.nan), sa.get("parallel_rollout_bps", np.nan))
        sb["quality_ratio_vs_previous"] = ratio_ar
        sb["parallel_ratio_vs_previous"] = ratio_par
        sb["drops_out_of_proportion"] = bool(np.isfinite(ratio_par) and ratio_ar < ratio_par - 0.1)


def _ratio(later: float, earlier: float) -> float:
    """How much of the earlier horizon's score the later one keeps; NaN unless both are above the
    null (a ratio of negative scores reads backwards: -0.06 / -0.19 = 0.33 is an improvement)."""
    return later / earlier if later > 0 and earlier > 0 else np.nan


def verdict(h: int, s: dict, *, bin_size: float = DEFAULT_BIN_SIZE) -> str:
    label = horizon_label(h, bin_size)
    gap = s["relative_gap"]
    gain = s.get("ss_rollout_bps", np.nan) - s["tf_only_rollout_bps"]
    if not np.isfinite(gap):
        return f"{label}: not enough information for a verdict."
    scores = [s["tf_only_rollout_bps"], s.get("ss_rollout_bps", np.nan), s.get("parallel_rollout_bps", np.nan)]
    if not np.nanmax(scores) > 0:
        return (f"{label}: inconclusive — every model forecasts at or below the null (best rollout "
                f"{np.nanmax(scores):.3f} bits/spike), so the signals say nothing yet; train longer "
                "(--steps-per-cell or --minutes-per-cell).")
    if gap <= GAP_THRESHOLD:
        text = (f"{label}: scheduled sampling is not needed — the teacher-forced/rollout gap is "
                f"{100 * gap:.0f}% (≤ {100 * GAP_THRESHOLD:.0f}%), so errors do not accumulate much.")
    elif np.isfinite(gain) and gain > 0:
        text = (f"{label}: scheduled sampling is needed — teacher forcing alone leaves a {100 * gap:.0f}% gap "
                f"and scheduled sampling improves rollout by {gain:.3f} bits/spike.")
    else:
        text = (f"{label}: the gap is {100 * gap:.0f}% but scheduled sampling did not improve the rollout here; "
                "consider the parallel decoder or a longer schedule.")
    par = s.get("parallel_rollout_bps", np.nan)
    best_ar = np.nanmax([s["tf_only_rollout_bps"], s.get("ss_rollout_bps", np.nan)])
    if np.isfinite(par) and par > best_ar:
        text += f" The parallel decoder beats both autoregressive variants at this horizon (by {par - best_ar:.3f} bits/spike)."
    return text


def run_study(data: str, *, runs_dir="runs", horizons=None, resume: str | None = None,
              minutes_per_cell: float | None = None, preset: str | None = None, likelihoods=None, options=None,
              max_steps: int | None = None, overrides=None, log=print) -> Path:
    """Train and evaluate every (horizon, variant) cell; `overrides` (dotted key=value, e.g.
    "data.events=[target_on, go_cue]") apply to every cell's config. A setting left None takes
    its default (STUDY_DEFAULTS), or with `resume` the study's saved value."""
    from neurohorizon.data.sources import load_data
    from neurohorizon.evaluation.study_report import write_study_report

    given = {k: v for k, v in {"horizons": horizons, "options": options, "preset": preset,
                               "minutes_per_cell": minutes_per_cell, "likelihoods": likelihoods,
                               "max_steps": max_steps, "overrides": overrides}.items() if v is not None}
    given = {k: list(v) if isinstance(v, tuple) else v for k, v in given.items()}
    if resume:
        study_dir = Path(resume)
        settings = resumed_settings(study_dir, data, given)
    else:
        settings = {"data": absolute_source(data), **STUDY_DEFAULTS, **given}
    check_study_args(settings["horizons"], settings["likelihoods"], settings["max_steps"], settings["minutes_per_cell"])
    recordings = load_data(settings["data"], **settings["options"])
    base = base_config(settings, recordings)
    configs = cell_configs(base, settings["horizons"], settings["likelihoods"])
    unused = set(base.loss.options) - {k for cfg in configs.values() for k in cfg.loss.options}
    if unused:
        raise ValueError(f"study: loss.options {sorted(unused)} are taken by no cell's likelihood "
                         f"({sorted({cfg.loss.likelihood for cfg in configs.values()})})")
    for cfg in configs.values():  # every cell's settings work before the first one trains
        check_cell(cfg, recordings)
    if not resume:
        study_dir = new_run_dir(runs_dir, f"study-{data.replace(':', '-').replace('/', '_')}")
        write_text_atomic(study_dir / "study.json", json.dumps(settings))
    cells = {}
    try:
        for name, cfg in configs.items():
            cells[name] = run_cell(name, cfg, study_dir, recordings, log=log)
    except KeyboardInterrupt:  # a cell's own resume hint would not continue the study
        raise KeyboardInterrupt(f"stopped; finished cells and the stopped cell's checkpoint are kept: continue "
                                f"with `neurohorizon study {settings['data']} --resume {study_dir}`") from None
    except Exception:
        kept = [*(study_dir / "cells").glob("*"), *(study_dir / "runs").glob("*/last.pt")]
        if not resume and not kept:  # no cell finished, trained or checkpointed
            shutil.rmtree(study_dir, ignore_errors=True)  # nothing finished: leave no half-made study behind
        raise
    horizons, data = settings["horizons"], settings["data"]
    bin_size = base.data.bin_size_ms / 1000
    signals = decision_signals(cells, horizons, bin_size=bin_size)
    write_text_atomic(study_dir / "study_results.json", json_text({"cells": cells, "signals": signals},
                                                             indent=1, default=float))
    write_study_report(study_dir, cells, signals, horizons, data=data, bin_size=bin_size)
    return study_dir
