"""Run folders: every command writes into a new folder and never overwrites an earlier run.

Also the names of run folders and the mode of files written atomically.
"""

from __future__ import annotations

import datetime
import json
import math
import numbers
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path


def check_runs_root(root: str | Path) -> Path:
    """`root` as a Path, or a clear error when it (or a folder above it) is a file."""
    root = Path(root)
    blocking = next((p for p in (root, *root.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise NotADirectoryError(f"{root}: cannot hold run folders, {blocking} is a file (choose another --runs-dir)")
    return root


def new_run_dir(root: str | Path, name: str) -> Path:
    """Create `root/<name>-<YYYYmmdd-HHMMSS>` (suffixed -2, -3, ... if taken) and return it."""
    root = check_runs_root(root)
    root.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}-{stamp}"
    for i in range(1, 1000):
        candidate = root / (base if i == 1 else f"{base}-{i}")
        try:
            candidate.mkdir()  # exist_ok=False: atomic claim of the name
            return candidate
        except FileExistsError:
            continue
    raise RuntimeError(f"{root}: could not create a new run folder for {name!r}")


def source_name(source: str) -> str:
    """A short name for a data source: reach for synthetic:reach, the recipe's name for
    recipe:NAME, the file stem for a .h5/.nwb path, the folder name for a folder."""
    text = str(source)
    if text.startswith(("synthetic:", "recipe:")):
        return text.split(":", 1)[1]
    path = Path(text)
    return path.stem if path.suffix.lower() in (".h5", ".hdf5", ".nwb") else path.name


def new_file_mode() -> int:
    """0666 minus the umask: the mode open() gives a new file. tempfile.mkstemp makes 0600
    files, so atomic writes (temp file, then rename) set this before the rename."""
    umask = os.umask(0)  # the only portable way to read it; restored at once
    os.umask(umask)
    return 0o666 & ~umask


def json_text(obj, *, indent: int | None = None, default=None) -> str:
    """Strict JSON (NaN and infinities, which other languages' parsers reject, become null)."""
    return json.dumps(_finite_or_none(obj), indent=indent, default=default, allow_nan=False)


def _finite_or_none(x):
    if isinstance(x, dict):
        return {k: _finite_or_none(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite_or_none(v) for v in x]
    if isinstance(x, numbers.Real) and not isinstance(x, numbers.Integral) and not math.isfinite(x):
        return None  # numpy floats included
    return x


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to a temporary file beside `path`, then rename it over `path`: a reader (a
    resume, a study continuing) sees the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())  # on disk before the rename makes it the file
        os.replace(tmp, path)
        fsync_folder(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def fsync_folder(folder: Path) -> None:
    """Make a rename inside `folder` durable (a power loss cannot undo it); a no-op where
    folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def removed_on_failure(folder: Path, *, remove: bool = True, keep_if: str | None = None):
    """Remove `folder`, which the caller just created, if the work inside fails (Ctrl-C included):
    a half-written run or evaluation is never left behind looking usable. `keep_if`: a glob
    inside `folder` (e.g. "*/last.pt") that, once something matches it, keeps the folder."""
    try:
        yield
    except BaseException:
        if remove and not (keep_if and any(Path(folder).glob(keep_if))):
            shutil.rmtree(folder, ignore_errors=True)
        raise


@contextmanager
def training_lock(run_dir: Path, *, hold: bool = True):
    """Hold RUN/.train.lock while this process trains the run: a second process training the
    same folder (e.g. `train --resume` while the first still runs) would interleave checkpoints
    and logs, so it is refused. The OS frees the lock when the process ends, even on a crash.
    hold=False (DDP ranks other than 0) takes nothing."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): no lock
        fcntl = None
    if not hold or fcntl is None:
        yield
        return
    with open(Path(run_dir) / ".train.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            raise RuntimeError(f"{run_dir}: another process (pid {handle.read().strip() or '?'}) is training this "
                               "run; wait for it to finish or stop it first") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield


def check_run_folder(run_dir: str | Path) -> Path:
    """`run_dir` as a Path when it is a run folder (it holds last.pt), else a clear error that
    names the run folders inside it, if any (e.g. a demo's folder, or runs/ itself)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: run folder not found")
    if not (run_dir / "last.pt").exists():
        inside = sorted(p.name for p in run_dir.iterdir() if (p / "last.pt").exists())
        started = (run_dir / "config.yaml").exists() and not inside  # stopped before its first checkpoint
        raise FileNotFoundError(
            f"{run_dir}: not a run folder (no last.pt)"
            + (f"; it holds the run folder(s) {inside}" if inside else "")
            + (f"; its training stopped before the first checkpoint, so there is nothing to resume or evaluate: "
               f"`neurohorizon train {run_dir / 'config.yaml'}` starts it again" if started else ""))
    return run_dir
