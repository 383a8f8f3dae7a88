"""Run a forecaster over a dataset and gather predictions per session.

Sessions have different neurons, so predictions are grouped by session: each group holds
arrays (n_windows, T, N_session) whose columns are that session's units. Pooled metrics
weight each session by its spike count (exact for bits/spike).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from neurohorizon.data.dataset import collate, fetch
from neurohorizon.evaluation.metrics import bits_per_spike
from neurohorizon.losses import masked_nll_sum
from neurohorizon.model.feedback import WindowGenerators


def eval_indices(n: int, max_windows: int | None) -> np.ndarray:
    """A deterministic, evenly spread subset of window indices."""
    if not max_windows or n <= max_windows:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_windows).round().astype(int))


def _batches(dataset, indices, batch_size):
    for lo in range(0, len(indices), batch_size):
        yield collate(fetch(dataset, indices[lo:lo + batch_size]))


def _split_by_item(batch: dict, arrays: dict, groups: dict) -> None:
    """Append each window's real-unit slice to its session group."""
    mask = batch["unit_mask"].numpy()
    for b in range(mask.shape[0]):
        g = groups[int(batch["session"][b])]
        cols = mask[b]
        g.setdefault("units", batch["units"][b][cols].numpy())
        g["condition"].append(int(batch["condition"][b]))
        g["start"].append(float(batch["start"][b]))
        for key, value in arrays.items():
            if value is None:
                continue
            g[key].append(value[..., b, :, :][..., cols] if key == "samples" else value[b][:, cols])


@torch.no_grad()
def predict_dataset(
    model,
    likelihood,
    dataset,
    *,
    device,
    feedback: str = "mean",
    n_samples: int = 1,
    max_windows: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    teacher_forced: bool = True,
    keep_samples: bool = False,
) -> dict:
    """Teacher-forced and rollout predictions of a NeuroHorizon model, grouped by session.

    With feedback="sample" the forecast mean is the average over `n_samples` sampled
    trajectories, and those trajectories are the calibration samples. With feedback="mean"
    the rollout is deterministic and samples are drawn from its per-bin distributions.
    Each window draws from its own stream (`WindowGenerators`, from `seed`, its session and
    onset), so its draws do not depend on `batch_size` or on the other windows.

    Returns:
        dict(groups={session: {target, context, rollout, teacher_forced, samples,
        true_expected, condition, start, units}}, rollout_nll=float: the mean NLL per (bin, unit)
        of each rollout bin's predicted distribution, over every trajectory)
    """
    model.eval()
    session_ids = [rec.session_id for rec in dataset.recordings]
    groups = defaultdict(lambda: defaultdict(list))
    nll_sum, nll_count = 0.0, 0.0
    sampled = feedback == "sample"
    for batch in _batches(dataset, eval_indices(len(dataset), max_windows), batch_size):
        dev = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        n_steps = batch["target_counts"].shape[1]
        generator = WindowGenerators.for_batch(batch, session_ids, seed=seed, device=device)
        out = model.rollout(dev, likelihood, n_steps=n_steps, feedback=feedback,
                            n_samples=n_samples if sampled else 1, generator=generator)
        for params in out["params"]:  # every trajectory's per-bin distributions, not only the first
            total, count = masked_nll_sum(likelihood.nll(params.float(), dev["target_counts"], full=True),
                                          dev["unit_mask"])
            nll_sum, nll_count = nll_sum + float(total), nll_count + float(count)
        tf = None
        if teacher_forced and getattr(model, "decoder_kind", "autoregressive") == "autoregressive":
            tf = likelihood.mean(model(dev, dev["target_counts"]).float()).cpu().numpy()
        samples = None
        if keep_samples:
            samples = trajectory_samples(out, likelihood, sampled=sampled, n_samples=n_samples,
                                         generator=generator).cpu().numpy()
        _split_by_item(batch, {
            "target": batch["target_counts"].numpy(),
            "context": batch["context_counts"].numpy(),
            "rollout": out["mean"].float().mean(0).cpu().numpy(),
            "teacher_forced": tf,
            "samples": samples,
            "true_expected": batch["true_expected"].numpy(),
        }, groups)
    return {"groups": _stack(groups), "rollout_nll": nll_sum / max(nll_count, 1.0)}


def trajectory_samples(out: dict, likelihood, *, sampled: bool, n_samples: int,
                       generator: WindowGenerators) -> torch.Tensor:
    """(S, B, T, N) sampled trajectories of a rollout `out`: its own fed-back samples, or, after a
    mean-feedback rollout, draws from each bin's predicted distribution."""
    if sampled:
        return out["counts"]
    params = out["params"][0].float()  # (B, T, N, P): the one deterministic trajectory
    repeated = params.repeat(n_samples, *([1] * (params.dim() - 1)))  # (S*B, T, N, P), sample-major
    return generator.sample(likelihood, repeated).reshape(n_samples, *params.shape[:-1])


@torch.no_grad()
def predict_forecaster(forecaster, dataset, *, max_windows: int | None = None, batch_size: int = 64) -> dict:
    """Rollout predictions (no ground-truth future) of a baseline, grouped by session."""
    groups = defaultdict(lambda: defaultdict(list))
    for batch in _batches(dataset, eval_indices(len(dataset), max_windows), batch_size):
        query = {k: v for k, v in batch.items() if k not in ("target_counts", "true_expected")}
        query["n_steps"] = batch["target_counts"].shape[1]
        pred = forecaster.predict(query)
        _split_by_item(batch, {
            "target": batch["target_counts"].numpy(),
            "context": batch["context_counts"].numpy(),
            "rollout": pred.float().cpu().numpy(),
            "true_expected": batch["true_expected"].numpy(),
        }, groups)
    return {"groups": _stack(groups)}


def _stack(groups) -> dict:
    return {s: {k: (np.stack(v, axis=-3) if k == "samples" else np.asarray(v)) for k, v in g.items()}
            for s, g in groups.items()}


def pooled_bps(groups: dict, key: str, *, null_rates: dict | None = None) -> float:
    """Bits/spike over all sessions: spike-weighted mean of per-session bits/spike (exact)."""
    total, spikes = 0.0, 0.0
    for session, g in groups.items():
        if g.get(key) is None or len(g[key]) == 0:
            return float("nan")
        n_spikes = float(np.nansum(g["target"]))
        if n_spikes == 0:
            continue
        null = None if null_rates is None else null_rates[session]
        total += bits_per_spike(g[key], g["target"], null_rates=null) * n_spikes
        spikes += n_spikes
    return total / spikes if spikes else float("nan")
