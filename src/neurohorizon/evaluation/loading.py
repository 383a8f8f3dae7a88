"""Load a trained run, and match new data's units to the run's vocabulary."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from neurohorizon.config import RunConfig, from_dict
from neurohorizon.data.factors import FactorPrior
from neurohorizon.data.prior import ConditionPrior
from neurohorizon.data.recording import Recording, Trials
from neurohorizon.data.splits import Splits
from neurohorizon.data.windows import UnitVocab
from neurohorizon.losses import build_likelihood
from neurohorizon.runs import check_run_folder
from neurohorizon.training.checkpoint import CheckpointError, load_checkpoint
from neurohorizon.training.run import build_model, pick_device


@dataclass
class LoadedRun:
    run_dir: Path
    cfg: RunConfig
    model: torch.nn.Module
    likelihood: torch.nn.Module
    vocab: UnitVocab
    splits: Splits
    device: torch.device
    checkpoint: Path
    step: int
    prior: ConditionPrior | FactorPrior | None = None  # data.rate_prior=psth(_factors): the training trials' average
    unfinished: str | None = None  # why training stopped before its schedules ended, if it did


def training_unfinished(run_dir: Path, cfg: RunConfig) -> str | None:
    """A sentence when the run's last checkpoint is short of its schedules' end (the clock or Ctrl-C
    stopped it with the learning rate still high or ε not yet at its floor), else None."""
    last = run_dir / "last.pt"
    if not last.exists():
        return None
    state = load_checkpoint(last)
    step = int(state["step"])
    done = float(state.get("train_state", {}).get("schedule_step", step))
    if done >= cfg.train.max_steps - 1e-6:
        return None
    return (f"training stopped at step {step}, {100 * done / cfg.train.max_steps:.0f} % of the way through its "
            f"learning-rate and sampling schedules (train.max_steps={cfg.train.max_steps}), so this model is not "
            "the fully trained one; `neurohorizon train --resume RUN` continues it (`train.max_minutes=M` "
            "after it, when the clock stopped it), and train.fit_to_time=true fits the schedules into train.max_minutes")


def load_run(run_dir: str | Path, *, device: str = "auto", which: str = "best") -> LoadedRun:
    """Model, likelihood, vocabulary and splits of a run folder (best checkpoint by default)."""
    run_dir = check_run_folder(run_dir)
    if which not in ("best", "last"):
        raise ValueError(f"checkpoint {which!r}: use 'best' (chosen by validation rollout) or 'last'")
    path = run_dir / f"{which}.pt"
    if not path.exists():  # stopped before its first validation: only last.pt exists
        path = run_dir / "last.pt"
    state = load_checkpoint(path)
    cfg = from_dict(state["config"])
    vocab = UnitVocab(state["vocab"][1:])
    dev = pick_device(device)
    likelihood = build_likelihood(cfg.loss.likelihood, **cfg.loss.options)
    model = build_model(cfg, vocab.tokens, likelihood)
    try:
        model.load_state_dict(state.get("ema_model", state["model"]))  # the averaged weights when trained so
        likelihood.load_state_dict(state.get("likelihood", {}))
    except RuntimeError as err:
        raise CheckpointError(
            f"{path}: weights (format version {state['format_version']}) do not fit the model "
            f"its config describes: {str(err).splitlines()[0]}"
        ) from None
    return LoadedRun(
        run_dir=run_dir, cfg=cfg, model=model.to(dev).eval(), likelihood=likelihood.to(dev),
        vocab=vocab, splits=Splits.from_json(run_dir / "splits.json"), device=dev,
        checkpoint=path, step=int(state["step"]),
        prior=FactorPrior.load(run_dir / "prior.npz") if cfg.data.rate_prior != "none" else None,
        unfinished=training_unfinished(run_dir, cfg),
    )


def match_units(recordings: list[Recording], vocab: UnitVocab, policy: str) -> list[Recording]:
    """Handle units the model never saw: policy "error" lists them; "known-only" drops them."""
    if policy not in ("error", "known-only"):
        raise ValueError(f"unknown-units policy must be 'error' or 'known-only', got {policy!r}")
    unknown = {r.session_id: [str(u) for u in r.unit_ids if u not in vocab] for r in recordings}
    unknown = {s: u for s, u in unknown.items() if u}
    if not unknown:
        return recordings
    n_known = sum(r.n_units for r in recordings) - sum(map(len, unknown.values()))
    listing = "; ".join(f"{s}: {len(u)} unknown ({_first_few(u)})" for s, u in unknown.items())
    if n_known == 0:
        raise ValueError(f"none of the data's units were in training: the model was not trained on any of "
                         f"them ({listing}), so this run cannot forecast this data (--unknown-units known-only "
                         "would leave no unit); train a run on this data")
    if policy == "error":
        raise ValueError(
            f"the data has units the model was not trained on ({listing}). Use --unknown-units known-only "
            f"(unknown_units='known-only' in Python) to use its {n_known} known unit(s) only."
        )
    kept = [keep_units(r, vocab.known(r.unit_ids)) for r in recordings]
    gone = [r.session_id for r in kept if r.n_units == 0]
    warnings.warn(f"--unknown-units known-only: left out {sum(map(len, unknown.values()))} unit(s) the model "
                  f"never saw ({listing})" + (f"; {len(gone)} session(s) had no known unit and are not evaluated: "
                                              f"{_first_few(gone)}" if gone else ""), stacklevel=2)
    return [r for r in kept if r.n_units > 0]


def _first_few(names: list[str], n: int = 3) -> str:
    """'a, b, c and 57 more': plain names, never a numpy repr."""
    if len(names) <= n:
        return ", ".join(names)
    return f"{', '.join(names[:n])} and {len(names) - n} more"


def keep_units(rec: Recording, keep: np.ndarray, *, drop_truth: bool = False) -> Recording:
    """A copy of `rec` with only the units where `keep` is True (spikes re-indexed).

    drop_truth: leave out the synthetic true rates (e.g. to forecast past their end).
    """
    keep = np.asarray(keep, dtype=bool)
    new_index = np.cumsum(keep) - 1
    spike_keep = keep[rec.spike_units]
    rate = None
    if rec.has_true_rate and not drop_truth:
        tr = rec.data.true_rate
        rate = (np.asarray(tr.rates)[:, keep], float(tr.sampling_rate), float(tr.domain.start[0]))
    trials = rec.trials
    return Recording.from_arrays(
        session_id=rec.session_id,
        spike_times=rec.spike_times[spike_keep],
        spike_units=new_index[rec.spike_units[spike_keep]],
        unit_ids=rec.unit_ids[keep],
        unit_namespace="",  # they are global ids already (a preparation's namespace, not always the session's)
        domain=rec.domain,
        trials=None if trials is None else Trials(trials.start, trials.end, trials.condition, trials.events),
        true_rate=rate,
        source=rec.source,
    )
