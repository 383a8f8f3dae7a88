"""Progress bars for the slow parts of preparing data (fitting a factor prior takes minutes)."""

from __future__ import annotations

import os

from tqdm.auto import tqdm


def progress(iterable, desc: str):
    """`iterable` under a tqdm bar, shown by the first process of a torchrun job only (every
    process prepares the data, and one bar is enough)."""
    return tqdm(iterable, desc=desc, disable=os.environ.get("RANK", "0") != "0")
