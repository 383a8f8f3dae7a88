"""The horizon study: cells, resume, decision signals and verdicts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from neurohorizon.cli import main
from neurohorizon.evaluation.study import decision_signals, verdict


def _cell(h, tf, ro, corr=None, decoder="autoregressive"):
    pooled = {"teacher_forced": {"fp_bps": tf}, "rollout": {"fp_bps": ro}}
    if corr is not None:
        pooled["psth"] = {"corr_per_step": corr}
    return {"horizon": h, "decoder": decoder, "likelihood": "poisson", "metrics": {str(h): {"pooled": pooled}}}


def test_signals_and_verdicts_from_known_numbers():
    cells = {
        "h12-teacher_forcing": _cell(12, 0.20, 0.19),
        "h12-scheduled_sampling": _cell(12, 0.20, 0.195),
        "h12-parallel": _cell(12, np.nan, 0.18, decoder="parallel"),
        "h50-teacher_forcing": _cell(50, 0.20, 0.10, corr=[0.9] * 30 + [0.3] * 20),
        "h50-scheduled_sampling": _cell(50, 0.18, 0.16),
        "h50-parallel": _cell(50, np.nan, 0.15, decoder="parallel"),
    }
    s = decision_signals(cells, [12, 50])
    assert abs(s["12"]["relative_gap"] - (0.20 - 0.19) / 0.19) < 1e-12
    assert "not needed" in s["12"]["verdict"]
    assert abs(s["50"]["relative_gap"] - 1.0) < 1e-12
    assert abs(s["50"]["gap_closed"] - (1 - 0.02 / 0.10)) < 1e-12  # SS closes 80% of the gap
    assert s["50"]["psth_corr_falls_at_30"] is True
    assert "is needed" in s["50"]["verdict"]
    # AR quality halves from 12 to 50 bins while the parallel decoder keeps 83%: out of proportion
    assert s["50"]["drops_out_of_proportion"] is True
    # scores below the null give no ratio: -0.06 / -0.19 would read as a drop to a third
    below = {**cells, "h12-teacher_forcing": _cell(12, 0.0, -0.19), "h50-teacher_forcing": _cell(50, 0.0, -0.06)}
    b = decision_signals(below, [12, 50])
    assert np.isnan(b["50"]["quality_ratio_vs_previous"]) and b["50"]["drops_out_of_proportion"] is False
    assert "not enough information" in verdict(12, {"relative_gap": np.nan, "tf_only_rollout_bps": np.nan})
    # a study of 10 ms bins says 12 bins are 120 ms, in its verdicts and tables
    from neurohorizon.evaluation.study_report import comparison_table, signal_table

    tens = decision_signals(cells, [12, 50], bin_size=0.01)
    assert tens["12"]["verdict"].startswith("12 bins (120 ms)")
    assert signal_table(tens, 0.01).rows[0][0] == comparison_table(cells, 0.01).rows[0][0] == "12 bins (120 ms)"
    # no gap left by teacher forcing alone (or a negative one): nothing to close, no ratio of noise
    for ro in (0.2002, 0.1999):
        s = decision_signals({"h12-teacher_forcing": _cell(12, 0.20, ro),
                              "h12-scheduled_sampling": _cell(12, 0.20, 0.19)}, [12])
        assert np.isnan(s["12"]["gap_closed"])


def test_no_verdict_when_every_model_is_below_the_null():
    cells = {"h12-teacher_forcing": _cell(12, -0.010, -0.016),
             "h12-scheduled_sampling": _cell(12, -0.012, -0.0165),
             "h12-parallel": _cell(12, np.nan, -0.0155, decoder="parallel")}
    text = decision_signals(cells, [12])["12"]["verdict"]
    assert "inconclusive" in text and "-0.016" not in text and "-0.015" in text
    assert "parallel decoder beats" not in text and "not needed" not in text


def test_study_command_runs_and_resumes(tmp_path, capsys):
    args = ["--runs-dir", str(tmp_path), "study", "synthetic:reach", "data.events=[go_cue]",
            "train.batch_size=4", "--horizons", "10",  # not one of the standard 12 / 25 / 50 bins
            "--steps-per-cell", "3", "--minutes-per-cell", "1", "-o", "n_neurons=16",
            "-o", "trials_per_condition=5", "-o", "seed=2"]
    assert main(args) == 0
    study = next(tmp_path.iterdir())
    # the overrides reach every cell's run config; the variant still sets decoder and schedule
    import yaml

    for run in (study / "runs").iterdir():
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        assert cfg["data"]["events"] == ["go_cue"] and cfg["train"]["batch_size"] == 4
        ss = run.name.startswith("h10-scheduled_sampling")
        assert cfg["sampling"]["kind"] == ("linear" if ss else "constant")
        if ss:  # the schedule ends on the model's own counts, with three passes
            assert cfg["sampling"]["floor"] == 0.0 and cfg["sampling"]["passes"] == 3
    cells = sorted(p.name for p in (study / "cells").glob("*.json"))
    assert cells == ["h10-parallel.json", "h10-scheduled_sampling.json", "h10-teacher_forcing.json"]
    results = json.loads((study / "study_results.json").read_text())
    signals = results["signals"]["10"]
    assert "verdict" in signals  # the cell's own horizon is scored, so the signals are numbers
    assert all(np.isfinite(signals[k]) for k in ("tf_only_rollout_bps", "ss_rollout_bps", "parallel_rollout_bps"))
    html = (study / "report.html").read_text()
    assert "Verdict" in html and "10 bins (200 ms)" in html
    before = {p.name: p.stat().st_mtime_ns for p in (study / "cells").iterdir()}
    capsys.readouterr()
    assert main(["--runs-dir", str(tmp_path), "study", "synthetic:reach", "--resume", str(study)]) == 0
    assert "skipped" in capsys.readouterr().out
    after = {p.name: p.stat().st_mtime_ns for p in (study / "cells").iterdir()}
    assert before == after  # finished cells are not recomputed
    # stopped after a cell's training but before its evaluation: resuming evaluates, never retrains
    (study / "cells" / "h10-parallel.json").unlink()
    runs_before = sorted(p.name for p in (study / "runs").iterdir())
    assert main(["--runs-dir", str(tmp_path), "study", "synthetic:reach", "--resume", str(study)]) == 0
    assert "h10-parallel: trained earlier, evaluating" in capsys.readouterr().out
    assert sorted(p.name for p in (study / "runs").iterdir()) == runs_before
    assert (study / "cells" / "h10-parallel.json").exists()
    # stopped during a cell's training (its run folder has last.pt, no marker): its training continues
    (study / "cells" / "h10-teacher_forcing.json").unlink()
    (study / "cells" / "h10-teacher_forcing.trained").unlink()
    assert main(["--runs-dir", str(tmp_path), "study", "synthetic:reach", "--resume", str(study)]) == 0
    said = capsys.readouterr().out
    assert "h10-teacher_forcing: resuming its training (h10-teacher_forcing-" in said and "nothing to do" in said
    assert sorted(p.name for p in (study / "runs").iterdir()) == runs_before
    # a resumed study keeps its settings: other data or a changed setting is refused, not ignored
    for extra, said in ((["synthetic:lorenz"], "is a study of synthetic:reach, not synthetic:lorenz"),
                        (["synthetic:reach", "--horizons", "25"], "horizons (saved [10], given [25])"),
                        (["synthetic:reach", "--steps-per-cell", "600"], "max_steps (saved 3, given 600)")):
        assert main(["--runs-dir", str(tmp_path), "study", *extra, "--resume", str(study)]) == 2
        assert said in capsys.readouterr().err


@pytest.mark.parametrize("kwargs, match", [
    ({"horizons": (12, 0)}, "horizons must be positive whole numbers"),
    ({"horizons": (12,), "likelihoods": ("gauss",)}, "unknown likelihood"),
    ({"horizons": (12,), "max_steps": 0}, "--steps-per-cell must be >= 1"),
    ({"horizons": (12,), "overrides": ["data.bin_size_ms=7"]}, "not a whole number"),
    ({"horizons": (12,), "overrides": ["data.horizon_ms=250"]}, "from --horizons"),
    ({"horizons": (12,), "overrides": ["data.bin_size_ms=0"]}, "data.bin_size_ms must be > 0, got 0"),
    ({"horizons": (12,), "overrides": ["data.options.n_neurons=10"]}, "data.options.n_neurons cannot be overridden"),
    ({"horizons": (12,), "overrides": ["data.source=synthetic:lorenz"]}, "data.source cannot be overridden"),
    ({"horizons": (12,), "preset": "huge"}, "unknown model preset 'huge'"),
    ({"horizons": (12,), "overrides": ["loss.likelihood=gauss"]}, "unknown loss.likelihood 'gauss'"),
    ({"horizons": (12,), "overrides": ["data.events=[bogus]"]}, "data.events: 'bogus' is not a trial event"),
    ({"horizons": (12,), "overrides": ["data.align_event=bogus"]}, "data.align_event: 'bogus' is not a trial event"),
    ({"horizons": (12,), "overrides": ["sampling.kind=weird"]}, "sampling.kind is what the cells compare"),
    ({"horizons": (12,), "overrides": ["model.decoder=foo"]}, "model.decoder is what the cells compare"),
    ({"horizons": (12,), "overrides": ["model.overrides.dim=7"]}, "dim"),
    ({"horizons": (12,), "overrides": ["loss.options.max_count=4"]}, r"loss.options \['max_count'\] are taken by no"),
])
def test_bad_study_settings_fail_before_anything_is_trained_or_written(tmp_path, kwargs, match):
    from neurohorizon.evaluation.study import run_study

    with pytest.raises(ValueError, match=match):
        run_study("synthetic:reach", runs_dir=tmp_path, options={"n_neurons": 8, "trials_per_condition": 3},
                  log=lambda *a: None, **kwargs)
    assert not any(tmp_path.iterdir())


def test_a_study_that_fails_before_any_cell_finishes_leaves_no_folder(tmp_path, monkeypatch):
    from neurohorizon.evaluation.study import run_study

    def broken(*args, **kwargs):
        raise RuntimeError("training broke")

    monkeypatch.setattr("neurohorizon.training.run.train_run", broken)
    with pytest.raises(RuntimeError, match="training broke"):
        run_study("synthetic:reach", runs_dir=tmp_path, horizons=(12,), max_steps=2,
                  options={"n_neurons": 8, "trials_per_condition": 3}, log=lambda *a: None)
    assert not any(tmp_path.iterdir())


def test_the_study_help_names_every_likelihood():
    from neurohorizon.cli import build_parser
    from neurohorizon.losses import LIKELIHOODS

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["study"]
    text = sub.format_help()
    assert all(name in text for name in LIKELIHOODS) and "default 12 25 50" in text


def test_likelihood_options_reach_only_the_cells_whose_likelihood_takes_them():
    from neurohorizon.config import load_config
    from neurohorizon.evaluation.study import cell_configs

    base = load_config(None, ["loss.options.max_count=4"])
    cells = cell_configs(base, [12], ["categorical", "negbin"])
    assert cells["h12-categorical"].loss.options == {"max_count": 4}
    assert all(cells[f"h12-{v}"].loss.options == {} for v in ("teacher_forcing", "scheduled_sampling", "negbin"))


def test_a_study_of_a_file_saves_its_absolute_path_and_resumes_from_anywhere(tmp_path, monkeypatch):
    """Cells' configs and study.json hold the absolute path, so their runs evaluate from any folder;
    a resume may name the file relatively, and an older study.json's relative path still matches."""
    from neurohorizon.evaluation.study import absolute_source, resumed_settings

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "reach.h5").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    full = str(tmp_path / "d" / "reach.h5")
    assert absolute_source("d/reach.h5") == full and absolute_source("synthetic:reach") == "synthetic:reach"
    for saved in (full, "d/reach.h5"):
        (tmp_path / "study.json").write_text(json.dumps({"data": saved}))
        assert resumed_settings(tmp_path, "d/reach.h5", {})["data"] == full
    with pytest.raises(ValueError, match="is a study of"):
        resumed_settings(tmp_path, "synthetic:reach", {})


def test_a_study_keeps_its_folder_once_a_cell_has_trained(tmp_path, monkeypatch):
    """A failure after a cell trained (e.g. in its evaluation) must not delete that training."""
    from neurohorizon.evaluation.study import run_study

    def broken(*args, **kwargs):
        raise RuntimeError("evaluation broke")

    monkeypatch.setattr("neurohorizon.evaluation.evaluate.evaluate_run", broken)
    with pytest.raises(RuntimeError, match="evaluation broke"):
        run_study("synthetic:reach", runs_dir=tmp_path, horizons=(12,), max_steps=2,
                  options={"n_neurons": 8, "trials_per_condition": 3}, log=lambda *a: None)
    (study,) = tmp_path.iterdir()
    assert list((study / "cells").glob("*.trained")) and list((study / "runs").glob("*/last.pt"))
