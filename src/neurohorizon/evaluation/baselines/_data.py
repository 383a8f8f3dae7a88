"""Batch iteration and per-session column bookkeeping shared by the baselines.

A "dataset" here is any of: one collated batch (dict of tensors), a list of such batches,
or a map-style dataset of window items (e.g. `ForecastDataset`) batched with
`neurohorizon.data.dataset.collate`.
"""

from __future__ import annotations

import numpy as np
import torch


def _is_batch(x) -> bool:
    return (
        isinstance(x, dict)
        and torch.is_tensor(x.get("context_counts"))
        and (x["context_counts"].dim() == 3)
    )


def iter_batches(data, batch_size: int = 64, *, shuffle: bool = False, rng=None):
    """Yield collated batches from `data` (see module docstring)."""
    if _is_batch(data):
        yield data
        return
    if isinstance(data, (list, tuple)) and data and all(_is_batch(b) for b in data):
        order = rng.permutation(len(data)) if shuffle else range(len(data))
        for i in order:
            yield data[int(i)]
        return
    if not hasattr(data, "__len__") or not hasattr(data, "__getitem__"):
        raise TypeError(
            f"baselines: expected a batch dict, a list of batches or a map-style dataset, "
            f"got {type(data).__name__}"
        )
    if len(data) == 0:
        raise ValueError(f"baselines: empty dataset {type(data).__name__}")
    from neurohorizon.data.dataset import collate, fetch

    order = rng.permutation(len(data)) if shuffle else np.arange(len(data))
    for lo in range(0, len(order), batch_size):
        yield collate(fetch(data, order[lo : lo + batch_size]))


def forever(data, batch_size: int, seed: int):
    """Endless shuffled batches (for training loops)."""
    rng = np.random.default_rng(seed)
    while True:
        yield from iter_batches(data, batch_size, shuffle=True, rng=rng)


def group_rows(batch: dict) -> dict[tuple, tuple[torch.Tensor, torch.Tensor]]:
    """Rows grouped by unit set: key -> (rows (G,), cols (G, N_key)), where cols[g, j] is
    the column of unit key[j] in row rows[g]."""
    mask = batch["unit_mask"]
    padded = batch["units"].masked_fill(~mask, torch.iinfo(batch["units"].dtype).max)
    ordered, cols = padded.sort(dim=1, stable=True)  # real units first, in vocab order
    n_real = mask.sum(1).tolist()
    out: dict[tuple, tuple[list, list]] = {}
    for b, (units, n) in enumerate(zip(ordered.tolist(), n_real)):
        rows, row_cols = out.setdefault(tuple(units[:n]), ([], []))
        rows.append(b)
        row_cols.append(cols[b, :n])
    return {k: (torch.tensor(r), torch.stack(c)) for k, (r, c) in out.items()}


def take_cols(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """x (B, T, N) -> (G, T, N_key): the group's rows with columns in key order."""
    sub = x[rows]
    return torch.gather(sub, 2, cols[:, None, :].expand(-1, sub.shape[1], -1))


def put_cols(out: torch.Tensor, value: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor):
    """Inverse of `take_cols`: write value (..., G, T, N_key) into out (..., B, T, N)."""
    for g in range(len(rows)):
        out[..., int(rows[g]), :, :][..., cols[g]] = value[..., g, :, :].to(out.dtype)


def collect_by_units(data, max_windows: int | None = None) -> dict[tuple, dict]:
    """All windows of `data` grouped by unit set: key -> dict(context (n, Tc, N_key),
    target (n, T, N_key), condition (n,)), columns in key order (float64)."""
    parts: dict[tuple, dict[str, list]] = {}
    for batch in iter_batches(data, 256):
        for key, (rows, cols) in group_rows(batch).items():
            p = parts.setdefault(key, {"context": [], "target": [], "condition": []})
            p["context"].append(take_cols(batch["context_counts"], rows, cols).double())
            p["target"].append(take_cols(batch["target_counts"], rows, cols).double())
            p["condition"].append(batch["condition"][rows])
    out = {}
    for key, p in parts.items():
        g = {k: torch.cat(v) for k, v in p.items()}
        if max_windows and len(g["condition"]) > max_windows:
            keep = torch.from_numpy(
                np.linspace(0, len(g["condition"]) - 1, max_windows).round().astype(np.int64)
            )
            g = {k: v[keep] for k, v in g.items()}
        out[key] = g
    return out
