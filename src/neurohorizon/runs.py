"""Run folders: every command writes into a new folder and never overwrites an earlier run."""

from __future__ import annotations

import datetime
import re
from pathlib import Path


def new_run_dir(root: str | Path, name: str) -> Path:
    """Create `root/<name>-<YYYYmmdd-HHMMSS>` (suffixed -2, -3, ... if taken) and return it."""
    root = Path(root)
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
