"""`neurohorizon train`: a new run folder with the resolved config, splits, logs and checkpoints."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from neurohorizon.config import RunConfig, from_dict, save_config
from neurohorizon.data.factors import n_factors
from neurohorizon.data.prepare import check_rate_prior, prepare_data, window_spec
from neurohorizon.data.sources import load_data
from neurohorizon.data.splits import Splits
from neurohorizon.data.windows import UnitVocab
from neurohorizon.losses import build_likelihood
from neurohorizon.model.presets import check_model_overrides, count_parameters, from_config
from neurohorizon.runs import (
    check_run_folder,
    check_runs_root,
    new_run_dir,
    removed_on_failure,
    source_name,
    training_lock,
)
from neurohorizon.training import distributed as dist_utils
from neurohorizon.training.checkpoint import load_checkpoint
from neurohorizon.training.trainer import Trainer, check_train_config, schedule_from


def _unit_targets(dataset, max_windows: int):
    """(units (N,), target counts (T, N) float64) of the first `max_windows` windows."""
    for i in range(min(len(dataset), max_windows)):
        item = dataset[i]
        yield torch.as_tensor(item["units"]), torch.as_tensor(item["target_counts"], dtype=torch.float64)


def log_mean_counts(dataset, n_vocab: int, max_windows: int = 2048) -> torch.Tensor:
    """(V,) log of each unit's mean count per bin over training windows (floor 1e-3)."""
    sums, bins = torch.zeros(n_vocab, dtype=torch.float64), torch.zeros(n_vocab, dtype=torch.float64)
    for units, counts in _unit_targets(dataset, max_windows):
        sums.index_add_(0, units, counts.sum(0))
        bins.index_add_(0, units, torch.full(units.shape, float(counts.shape[0]), dtype=torch.float64))
    return torch.log((sums / bins.clamp_min(1)).clamp_min(1e-3)).float()


def log_class_frequencies(dataset, n_vocab: int, n_classes: int, max_windows: int = 2048) -> torch.Tensor:
    """(V, C) log frequency of each count class 0..C-1 (the last one: C-1 or more) per unit over
    training windows, with half a count added to every class so none starts impossible."""
    hist = torch.full((n_vocab, n_classes), 0.5, dtype=torch.float64)
    for units, counts in _unit_targets(dataset, max_windows):
        classes = torch.nn.functional.one_hot(counts.clamp(0, n_classes - 1).long(), n_classes)  # (T, N, C)
        hist.index_add_(0, units, classes.sum(0).double())
    return (hist / hist.sum(1, keepdim=True)).log().float()


def training_truncation(likelihood, dataset, max_windows: int = 2048) -> str:
    """How many training target counts a categorical likelihood's K truncates, as one line."""
    counts = torch.cat([c.flatten() for _, c in _unit_targets(dataset, max_windows)])
    windows = min(len(dataset), max_windows)
    text = likelihood.truncation_text(likelihood.truncation_report(counts), counts="training target")
    return f"{text} (checked on {windows} training windows)"


def pick_device(name: str) -> torch.device:
    """auto | cpu | cuda | cuda:N; asking for CUDA where there is none is a clear error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but this PyTorch sees no CUDA GPU; use cpu or auto")
    if name.split(":")[0] not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N")
    if name == "cuda" and dist_utils.is_distributed():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(name)


def build_model(cfg: RunConfig, vocab_tokens: list[str], likelihood):
    """The model from the config's preset, decoder and overrides (plain kwargs, no config object)."""
    return from_config(
        cfg.model.preset, vocab_tokens, n_params=likelihood.n_params, unit_only_params=likelihood.unit_only_params,
        decoder=cfg.model.decoder, bin_size=cfg.data.bin_size_ms / 1000, event_names=cfg.data.events,
        rate_prior=cfg.data.rate_prior != "none", **cfg.model.overrides,
    )


def train_run(cfg: RunConfig | None, *, runs_dir="runs", resume: Path | None = None,
              recordings=None, stop_after: int | None = None, quiet: bool = False,
              max_minutes: float | None = None) -> Path:
    """Train a model; returns the run folder. `resume` continues a run folder exactly, with what
    is left of its train.max_minutes (`max_minutes` replaces that total budget). While it trains,
    the run folder is locked against a second training process (`training_lock`)."""
    with contextlib.ExitStack() as locks:
        return _train_run(cfg, runs_dir=runs_dir, resume=resume, recordings=recordings, stop_after=stop_after,
                          quiet=quiet, max_minutes=max_minutes, lock=lambda run_dir: locks.enter_context(
                              training_lock(run_dir, hold=dist_utils.rank() == 0)))


def _train_run(cfg: RunConfig | None, *, runs_dir, resume: Path | None, recordings, stop_after: int | None,
               quiet: bool, max_minutes: float | None, lock) -> Path:
    torch.set_flush_denormal(True)  # denormal floats made the seed's elementwise ops 10-20x slower
    splits = vocab = None
    if resume is not None:
        state = load_checkpoint(check_run_folder(resume) / "last.pt")
        cfg = from_dict(state["config"])
        splits = Splits.from_json(Path(resume) / "splits.json")
        vocab = UnitVocab.from_dict({"tokens": state["vocab"]})  # unit i keeps unit i's weights
    spec = window_spec(cfg.data)  # a horizon that is not whole bins fails before anything is written
    check_train_config(cfg.train)
    schedule_from(cfg.sampling)  # a bad sampling schedule, too, fails before the data is prepared
    if resume is None:
        check_runs_root(runs_dir)  # a file there fails now, not after the data is prepared
    if resume is None and recordings is None and Path(cfg.data.source).exists():
        cfg.data.source = str(Path(cfg.data.source).resolve())  # evaluate/forecast work from any folder
    check_model_overrides(cfg.model.overrides, cfg.model.preset, spec.horizon_bins)
    likelihood = build_likelihood(cfg.loss.likelihood, **cfg.loss.options)  # an unknown name is said first
    if check_rate_prior(cfg.data) and not likelihood.log_rate_first:
        raise ValueError(f"data.rate_prior needs a log-rate likelihood (poisson, negbin, zip), "
                         f"not {cfg.loss.likelihood!r}")
    device = pick_device(cfg.train.device)
    dist_utils.init_from_env(device.type)
    device = pick_device(cfg.train.device)
    if cfg.train.batch_size < dist_utils.world_size():  # each process needs at least one window per step
        raise ValueError(f"train.batch_size={cfg.train.batch_size} is the global batch, split over "
                         f"{dist_utils.world_size()} processes: it must be at least that many")
    if resume is not None:
        lock(Path(resume))
    if vocab is not None:
        recordings = recordings if recordings is not None else load_data(cfg.data.source, **cfg.data.options)
        _check_same_units(recordings, vocab, Path(resume) / "last.pt")
    data = prepare_data(cfg.data, recordings=recordings, splits=splits, vocab=vocab)
    cfg.data.events = list(data.events)  # "EVENT@condition" expanded: saved, and what the model gets
    _resolve_factor_choice(cfg, data, quiet)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, data.vocab.tokens, likelihood).to(device)
    if resume is not None:
        trainer = Trainer(model=model, likelihood=likelihood, data=data, cfg=cfg, run_dir=Path(resume), device=device)
        trainer.resume(Path(resume) / "last.pt")
        if max_minutes is not None and max_minutes != cfg.train.max_minutes:
            cfg.train.max_minutes = max_minutes  # the run's total budget; saved with its next checkpoint
            check_train_config(cfg.train)
            if dist_utils.rank() == 0:
                save_config(cfg, Path(resume) / "config.yaml")
    else:
        if data.prior is not None:  # forecast the deviation from the prior, starting at none
            model.start_at_prior()
        elif likelihood.log_rate_first:
            model.init_unit_bias(log_mean_counts(data.train, len(data.vocab)))
        elif cfg.loss.likelihood == "categorical":  # start at each unit's count histogram, not uniform
            freqs = log_class_frequencies(data.train, len(data.vocab), likelihood.n_params)
            for c in range(likelihood.n_params):
                model.init_unit_bias(freqs[:, c], param=c)
        # claimed after the data and the model: bad settings leave no empty run folder
        run_dir = _claim_run_dir(runs_dir, run_name(cfg))
        with removed_on_failure(run_dir, remove=dist_utils.rank() == 0):
            lock(run_dir)
            _write_run_files(cfg, data, model, run_dir, quiet)
            if hasattr(likelihood, "truncation_report") and not quiet and dist_utils.rank() == 0:
                print(training_truncation(likelihood, data.train))
            trainer = Trainer(model=model, likelihood=likelihood, data=data, cfg=cfg, run_dir=run_dir, device=device)
    if resume is not None and trainer.schedules_done():  # every rank returns, rank 0 says so
        if dist_utils.rank() == 0:
            print(f"{resume} already finished its schedules (step {trainer.state.step}, train.max_steps="
                  f"{cfg.train.max_steps}); nothing to do (start a new run to train longer)")
        return trainer.run_dir
    if resume is not None and trainer.time_spent():
        if dist_utils.rank() == 0:
            print(f"{resume} has used its train.max_minutes={cfg.train.max_minutes:g} (stopped at step "
                  f"{trainer.state.step} of train.max_steps={cfg.train.max_steps}); nothing to do (resume with "
                  "train.max_minutes=M to give it a larger total budget)")
        return trainer.run_dir
    trainer.fit(stop_after=stop_after)
    return trainer.run_dir


def _resolve_factor_choice(cfg: RunConfig, data, quiet: bool) -> None:
    """data.rate_prior_factors=auto becomes the chosen number in the saved config (0: the plain
    prior, rate_prior=psth), so the saved config says which prior `prior.npz` holds; a resumed run
    refits that prior without choosing again."""
    if data.factor_scores is None:
        return
    k = n_factors(data.prior)
    if k or cfg.data.rate_prior_dynamics:  # dynamics keep psth_factors, with 0 static factors
        cfg.data.rate_prior_factors = k
    else:
        cfg.data.rate_prior, cfg.data.rate_prior_factors = "psth", RunConfig().data.rate_prior_factors
    if not quiet and dist_utils.rank() == 0:
        scores = ", ".join(f"{n}: {v:.4f}" for n, v in data.factor_scores.items())
        print(f"data.rate_prior_factors=auto: chose {k} factor(s) by validation NLL per window ({scores})")


def _check_same_units(recordings, vocab: UnitVocab, checkpoint: Path) -> None:
    """A resume continues on the run's own data: other units would silently change the model."""
    have = {str(u) for rec in recordings for u in rec.unit_ids}
    saved = set(vocab.tokens[1:])
    if have != saved:
        raise ValueError(f"{checkpoint}: --resume needs the run's own data; its units differ "
                         f"({len(have - saved)} new, e.g. {sorted(have - saved)[:3]}; {len(saved - have)} missing, "
                         f"e.g. {sorted(saved - have)[:3]})")


def run_name(cfg: RunConfig) -> str:
    """The run folder's name: cfg.name, or the data source's when cfg.name is the default."""
    return cfg.name if cfg.name != RunConfig().name else source_name(cfg.data.source)


def _write_run_files(cfg: RunConfig, data, model, run_dir: Path, quiet: bool) -> None:
    """The resolved config, splits, vocabulary and prior of a new run (rank 0 only)."""
    if dist_utils.rank() != 0:
        return
    save_config(cfg, run_dir / "config.yaml")
    data.splits.to_json(run_dir / "splits.json")
    data.vocab.to_json(run_dir / "vocab.json")
    if data.prior is not None:  # forecast() needs it for recordings outside the run's data
        data.prior.save(run_dir / "prior.npz")
    if not quiet:
        print(f"model: {count_parameters(model):,} parameters ({cfg.model.preset}, {cfg.model.decoder}); "
              f"data: {len(data.recordings)} recording(s), {data.mode} mode, "
              f"{len(data.train)} train / {len(data.valid)} valid / {len(data.test)} test windows")


def _claim_run_dir(runs_dir, name: str) -> Path:
    """Rank 0 creates the folder; other ranks learn its name through a broadcast."""
    if not dist_utils.is_distributed():
        return new_run_dir(runs_dir, name)
    holder = [str(new_run_dir(runs_dir, name)) if dist_utils.rank() == 0 else None]
    torch.distributed.broadcast_object_list(holder, src=0)
    return Path(holder[0])
