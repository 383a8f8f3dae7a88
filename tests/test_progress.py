"""Progress bars: one per torchrun job, and seldom redrawn in a log file."""

from __future__ import annotations

import io

from neurohorizon.data import progress as progress_module
from neurohorizon.data.progress import LOG_REFRESH_S, progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_redraw_live_on_a_terminal_and_seldom_in_a_log(monkeypatch):
    monkeypatch.setattr(progress_module.sys, "stderr", _Terminal())
    assert progress(range(3), "x").mininterval == 0.1
    log = io.StringIO()
    monkeypatch.setattr(progress_module.sys, "stderr", log)
    bar = progress(range(3), "fitting")
    assert bar.mininterval == LOG_REFRESH_S >= 10
    assert list(bar) == [0, 1, 2] and "fitting" in log.getvalue() and "3/3" in log.getvalue()


def test_only_the_first_process_of_a_job_shows_a_bar(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    assert progress(range(2), "x").disable
    monkeypatch.setenv("RANK", "0")
    assert not progress(range(2), "x").disable
