"""Save and load recordings in the torch_brain/brainsets HDF5 layout.

Files are written with `Data.to_hdf5`, so torch_brain reads them with plain
`Data.from_hdf5`, and files made by `brainsets prepare` load here. Writes are atomic:
the file is serialized into a temporary file in the destination folder and renamed
into place, so a crash never leaves a half-written recording behind.

Brainsets files (those with a `brainset` description) name units locally (e.g.
`group_A/elec3/unit_0`); on load such ids are prefixed with the session id to follow the
`session/unit` global-id convention. Our own files keep their ids as written.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import h5py
import numpy as np
from torch_brain.data import ArrayDict, Data

from neurohorizon.data.recording import Recording, RecordingError, _session
from neurohorizon.runs import new_file_mode

REQUIRED_GROUPS = ("spikes", "units")


def save_recording(rec: Recording, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write `rec` to `path` (HDF5) atomically; refuse to replace a file unless `overwrite`."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a directory, expected a file path")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists (pass overwrite=True to replace it)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:  # read-only or special folder: name the target, not the temporary file
        raise OSError(e.errno, f"{path}: cannot write the recording: {e.strerror or e}") from e
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            rec.data.to_hdf5(f)
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    except NotImplementedError as e:  # non-ASCII strings: HDF5 layout stores ASCII only
        raise RecordingError(f"{path}: cannot write {rec.source}: {e}") from e
    except OSError as e:  # disk full, permissions: name the target, not the temporary file
        raise OSError(e.errno, f"{path}: cannot write the recording: {e.strerror or e}") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_recording(path: str | Path) -> Recording:
    """Load a recording written by `save_recording` or by `brainsets prepare` (in memory)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such recording file")
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a directory, expected an HDF5 recording file")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise RecordingError(f"{path}: not a readable HDF5 file ({e})") from e
    with f:
        missing = [k for k in REQUIRED_GROUPS if k not in f]
        if missing:
            raise RecordingError(
                f"{path}: HDF5 file lacks {missing} (not a NeuroHorizon/brainsets recording)"
            )
        try:
            data = Data.from_hdf5(f, lazy=False)
        except Exception as e:  # truncated datasets, foreign layouts, ...
            raise RecordingError(f"{path}: cannot read recording ({type(e).__name__}: {e})") from e
    _normalize(data, path)
    return Recording(data, source=str(path))


def _normalize(data: Data, path: Path) -> None:
    """Adapt foreign files: session fallback, spikes outside the domain, brainsets unit ids.

    Brainsets set `domain` from behaviour (e.g. the cursor), so a few spikes can lie
    outside it; they are dropped with a warning, as the domain is the valid time.
    """
    if "session" not in data:
        data.session = _session(path.stem)
    if data.domain is not None and len(data.domain):
        t = np.asarray(data.spikes.timestamps)
        inside = (t >= np.min(data.domain.start)) & (t <= np.max(data.domain.end))
        if not inside.all():
            warnings.warn(
                f"{path}: dropped {int((~inside).sum())} spike(s) outside the domain",
                stacklevel=3,
            )
            data.spikes = data.spikes.select_by_mask(inside)
    if "brainset" not in data:
        return  # ours: ids are already global (possibly in a shared namespace)
    ids = np.asarray(data.units.id).astype(str)
    prefix = f"{data.session.id}/"
    if not all(u.startswith(prefix) for u in ids):
        fields = {k: getattr(data.units, k) for k in data.units.keys()}  # noqa: SIM118 (no __iter__)
        fields["id"] = np.array([u if u.startswith(prefix) else prefix + u for u in ids])
        data.units = ArrayDict(**fields)
