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


def test_the_train_bar_in_a_log_is_drawn_at_start_and_end_not_every_step(tmp_path, capsys):
    from neurohorizon.config import load_config
    from neurohorizon.training.run import train_run

    cfg = load_config(None, ["model.preset=tiny", "train.batch_size=4", "train.max_steps=12", "train.eval_every=12",
                             "train.max_eval_windows=8", "data.train_windows_per_epoch=16", "data.source=synthetic:reach",
                             "data.options.n_neurons=12", "data.options.trials_per_condition=4"])
    train_run(cfg, runs_dir=tmp_path, quiet=True)
    draws = [d for d in capsys.readouterr().err.replace("\r", "\n").splitlines() if d.startswith("train:")]
    assert 2 <= len(draws) <= 4 and "12/12" in draws[-1]  # not one per step: a log keeps every redraw
