"""Atomic, versioned checkpoints.

A checkpoint holds everything needed to continue a run exactly: model, optimizer,
scheduler, step/epoch, the resolved config, the unit vocabulary and RNG states.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from neurohorizon.runs import fsync_folder, new_file_mode

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "model", "config", "vocab", "step")


class CheckpointError(RuntimeError):
    """A missing, corrupt or incompatible checkpoint; the message names the file."""


def save_checkpoint(state: dict, path: str | Path) -> Path:
    """Write `state` to `path` atomically: a temp file in the same folder, then rename.

    A crash mid-write leaves the previous checkpoint untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"format_version": FORMAT_VERSION, **state}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
        fsync_folder(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load and check a checkpoint; raise CheckpointError naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # torch raises many types for truncated/corrupt files
        raise CheckpointError(f"{path}: corrupt or unreadable checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict) or "format_version" not in state:
        raise CheckpointError(f"{path}: not a NeuroHorizon checkpoint (no format_version)")
    version = state["format_version"]
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version} is incompatible with this "
            f"NeuroHorizon (expects format version {FORMAT_VERSION})"
        )
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path}: checkpoint (format version {version}) lacks {missing}")
    return state
