"""Atomic, versioned checkpoints.

A checkpoint holds everything needed to continue a run exactly: model, optimizer,
scheduler, step/epoch, the resolved config, the unit vocabulary and RNG states.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from pathlib import Path

import numpy as np
import torch

from neurohorizon.runs import fsync_folder, new_file_mode

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "model", "config", "vocab", "step")


def _numpy_globals() -> list:
    """What unpickling numpy arrays and scalars (the RNG state, some logged numbers) needs beyond
    plain data, allowed so that checkpoints load with weights_only=True (no arbitrary code)."""
    core = getattr(np, "_core", None) or np.core
    dtypes = [type(np.dtype(t)) for t in (np.uint32, np.int64, np.int32, np.float64, np.float32, np.bool_)]
    return [core.multiarray._reconstruct, core.multiarray.scalar, np.ndarray, np.dtype, *dtypes]


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
        with torch.serialization.safe_globals(_numpy_globals()):
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        if found is None:
            raise CheckpointError(f"{path}: corrupt or unreadable checkpoint (UnpicklingError)") from None
        raise CheckpointError(f"{path}: refused: it holds Python objects beyond tensors and plain data "
                              f"({found.group(1)}), which could run code when loaded; NeuroHorizon "
                              "checkpoints hold none") from None
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
