"""Progress bars for the slow parts of preparing data (fitting a factor prior takes minutes)."""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm

LOG_REFRESH_S = 10.0  # a bar written to a log file (not a terminal) refreshes this seldom


def refresh_interval() -> float:
    """tqdm's mininterval: live on a terminal; in a log file (a batch job, CI) every carriage-return
    redraw is kept, so a bar redraws every LOG_REFRESH_S s instead of 10 times a second."""
    return 0.1 if sys.stderr.isatty() else LOG_REFRESH_S


def progress(iterable, desc: str):
    """`iterable` under a tqdm bar, shown by the first process of a torchrun job only (every
    process prepares the data, and one bar is enough)."""
    return tqdm(iterable, desc=desc, disable=os.environ.get("RANK", "0") != "0", mininterval=refresh_interval())
