"""End-to-end through the command line and the Python API: train -> evaluate -> forecast."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from neurohorizon.cli import build_parser, main
from neurohorizon.config import load_config
from neurohorizon.data.recording import Recording
from neurohorizon.data.synthetic import generate

SMALL = {"n_neurons": 20, "trials_per_condition": 5, "seed": 1}
OPTS = [f"data.options.{k}={v}" for k, v in SMALL.items()]


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for command in ("inspect", "import", "train", "evaluate", "forecast", "demo", "study"):
        assert command in text
    for command in ("inspect", "train", "evaluate", "forecast", "study"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "--help"])
        assert "usage" in capsys.readouterr().out


def test_runs_dir_goes_before_or_after_the_command():
    parse = build_parser().parse_args
    assert parse(["inspect", "--runs-dir", "/tmp/x", "synthetic:lorenz"]).runs_dir == "/tmp/x"
    assert parse(["--runs-dir", "/tmp/y", "inspect", "synthetic:lorenz"]).runs_dir == "/tmp/y"
    assert parse(["train", "model.preset=tiny", "--runs-dir", "/tmp/z"]).runs_dir == "/tmp/z"
    assert parse(["study", "synthetic:reach"]).runs_dir == "runs"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for a few steps through `neurohorizon train`."""
    runs = tmp_path_factory.mktemp("runs")
    code = main(["--runs-dir", str(runs), "train", "model.preset=tiny", "train.max_steps=6",
                 "train.eval_every=3", "train.batch_size=8", "data.train_windows_per_epoch=48",
                 "data.align_event=go_cue", "name=cli", *OPTS])
    assert code == 0
    return next(runs.iterdir())


def test_train_writes_a_complete_run_folder(trained):
    for name in ("config.yaml", "splits.json", "vocab.json", "best.pt", "last.pt", "train_log.csv"):
        assert (trained / name).exists()
    cfg = load_config(trained / "config.yaml")
    assert cfg.model.preset == "tiny" and cfg.data.options == SMALL


def test_evaluate_writes_metrics_figures_and_report(trained):
    from neurohorizon.evaluation.evaluate import evaluate_run

    out = evaluate_run(trained, baselines=["mean_rate", "psth", "persistence"], n_samples=4, log=lambda *a: None)
    def strict(token):
        raise AssertionError(f"metrics.json holds {token}, which strict JSON parsers reject")

    metrics = json.loads((out / "metrics.json").read_text(), parse_constant=strict)
    results = metrics["results"]
    assert set(results) == {"NeuroHorizon", "mean_rate", "psth", "persistence"}
    for h in ("12", "25", "50"):
        pooled = results["NeuroHorizon"][h]["pooled"]
        assert len(pooled["rollout"]["per_bin_fp_bps"]) == int(h)
        assert np.isfinite(pooled["oracle"]["oracle_fp_bps"]) and pooled["oracle"]["oracle_fp_bps"] > 0
        # go-cue windows of synthetic reach also get the causal ceiling (best forecast from the past)
        causal = pooled["oracle"]["causal_oracle_fp_bps"]
        assert len(pooled["oracle"]["causal_oracle_per_bin_fp_bps"]) == int(h)
        assert np.isfinite(causal) and pooled["oracle"]["fraction_of_causal_oracle"] == pytest.approx(
            pooled["rollout"]["fp_bps"] / causal)
        # the null model scores ~0 with the NLB null (the training-mean null differs slightly)
        assert abs(results["mean_rate"][h]["pooled"]["rollout"]["fp_bps"]) < 0.1
    assert metrics["horizons"]["12"] == "12 bins (240 ms)"
    assert "training_unfinished" not in metrics  # its schedules ran to train.max_steps
    for fig in ("decay.png", "forecast_raster.png", "psth.png", "calibration.png"):
        assert (out / "figures" / fig).stat().st_size > 5000
    html = (out / "report.html").read_text()
    assert "How far ahead" in html and "psth" in html and "Causal oracle" in html
    second = evaluate_run(trained, baselines=["mean_rate"], n_samples=2, log=lambda *a: None)
    assert second != out and (out / "report.html").exists()  # earlier evaluations are kept


def test_evaluate_on_the_runs_own_data_scores_its_test_split_only(trained, tmp_path):
    """`--data` naming the data the run was trained on must not score its training trials."""
    from neurohorizon.data.io import save_recording
    from neurohorizon.data.splits import Splits

    rec = generate("reach", **SMALL)
    n_windows, split = _evaluated(trained, save_recording(rec, tmp_path / "same.h5"))
    assert split == "test split of the run's sessions"
    assert n_windows == len(Splits.from_json(trained / "splits.json").trials("test", 0)) < len(rec.trials.start)
    # a new session of the same units (e.g. the next day's recording) is scored on all its windows
    local = [u.split("/", 1)[1] for u in rec.unit_ids]
    replay = Recording.from_arrays(session_id="next_day", unit_namespace=rec.session_id, spike_times=rec.spike_times,
                                   unit_ids=local, spike_units=rec.spike_units, domain=rec.domain, trials=rec.trials)
    assert list(replay.unit_ids) == list(rec.unit_ids)
    assert _evaluated(trained, save_recording(replay, tmp_path / "next.h5")) == (len(rec.trials.start), "all windows")


def test_a_run_whose_data_moved_is_evaluated_with_data_new_path(tmp_path, capsys):
    from neurohorizon.data.io import save_recording

    folder = tmp_path / "data"
    folder.mkdir()
    save_recording(generate("reach", **SMALL), folder / "s.h5")
    assert main(["--runs-dir", str(tmp_path / "runs"), "train", "model.preset=tiny", "train.max_steps=2",
                 "train.eval_every=2", "train.batch_size=8", "data.train_windows_per_epoch=16",
                 "data.align_event=go_cue", f"data.source={folder}"]) == 0
    run = next((tmp_path / "runs").iterdir())
    n_before = _evaluated(run, folder)[0]
    folder.rename(tmp_path / "moved")
    capsys.readouterr()
    assert main(["evaluate", str(run), "--no-baselines"]) == 2
    assert f"the data it was trained on, {folder} (data.source in its config.yaml), is missing; evaluate it with " \
           "--data NEW_PATH" in capsys.readouterr().err
    assert _evaluated(run, tmp_path / "moved") == (n_before, "test split of the run's sessions")


def test_an_evaluation_on_few_windows_says_its_scores_are_fragile(trained):
    from neurohorizon.evaluation.evaluate import FEW_WINDOWS, evaluate_run

    lines = []
    with pytest.warns(UserWarning, match=r"only \d+ test window\(s\): every score below rests on them"):
        evaluate_run(trained, baselines=False, n_samples=2, log=lines.append)
    assert int(lines[0].split(" on ")[1].split()[0]) < FEW_WINDOWS


def test_an_evaluation_of_a_run_stopped_by_the_clock_says_so(tmp_path):
    from neurohorizon.evaluation.evaluate import evaluate_run

    assert main(["--runs-dir", str(tmp_path), "train", "model.preset=tiny", "train.max_steps=500",
                 "train.max_minutes=0.0001", "train.batch_size=8", "data.train_windows_per_epoch=16",
                 "data.align_event=go_cue", *OPTS]) == 0
    run = next(tmp_path.iterdir())
    with pytest.warns(UserWarning, match=r"training stopped at step \d+, 0 % of the way through its learning-rate"):
        out = evaluate_run(run, baselines=False, n_samples=2, log=lambda *a: None)
    assert "--resume" in json.loads((out / "metrics.json").read_text())["training_unfinished"]
    assert "Warning: training stopped at step" in (out / "report.md").read_text()


def _evaluated(run, data) -> tuple[int, str]:
    """(number of windows scored, the split metrics.json names) of `evaluate RUN --data DATA`."""
    from neurohorizon.evaluation.evaluate import evaluate_run

    lines = []
    out = evaluate_run(run, data=str(data), baselines=False, n_samples=2, log=lines.append)
    n = int(next(line for line in lines if line.startswith("evaluating")).split(" on ")[1].split()[0])
    return n, json.loads((out / "metrics.json").read_text())["split"]


def test_forecast_api_and_command(trained, tmp_path):
    from neurohorizon.evaluation.forecast import forecast

    rec = generate("reach", **SMALL)
    start = float(rec.trials.events["go_cue"][3])
    fc = forecast(trained, rec, start=start, n_samples=3)
    assert fc.mean.shape == (50, rec.n_units) and fc.samples.shape == (3, 50, rec.n_units)
    assert (fc.mean >= 0).all() and np.isfinite(fc.actual).all()
    assert fc.bin_edges[0] == pytest.approx(start) and np.allclose(np.diff(fc.bin_edges), 0.02)
    again = forecast(trained, rec, start=start, n_samples=3)
    np.testing.assert_array_equal(fc.samples, again.samples)  # seeded
    off_grid = forecast(trained, rec, start=start + 0.013, n_samples=2)  # off the 5 ms grid of the true rates
    assert off_grid.bin_edges[0] == pytest.approx(start + 0.013) and np.isfinite(off_grid.actual).all()
    beyond = forecast(trained, rec, n_samples=2)  # default onset: the end of the recording
    assert np.isnan(beyond.actual).all()
    from neurohorizon.evaluation.forecast import forecast_summary

    said = forecast_summary(beyond, default_start=True)
    assert f"{rec.n_units} units, 50 bins of 20 ms from {round(beyond.onset, 6)} s (the end of the recording" in said
    assert "2 sampled trajectories" in said and "recorded over" not in said
    rate = fc.actual.sum() / (50 * 0.02)
    assert f"recorded over 50 of the 50 bins: {rate:.1f} spikes/s" in forecast_summary(fc)
    for bad, why in ((float("nan"), "not a number"), (0.1, "the earliest onset is"),
                     (rec.domain[1] + 1, "past the recording's end")):
        with pytest.raises(ValueError, match=f"needs 500 ms of context inside the recording .*{why}"):
            forecast(trained, rec, start=bad)
    h5 = tmp_path / "rec.h5"
    rec.save(h5)
    assert main(["forecast", str(trained), "--data", str(h5), "--start", str(start), "--samples", "2"]) == 0
    out = next((trained / "forecasts").iterdir())
    saved = np.load(out / "forecast.npz")
    assert saved["samples"].shape == (2, 50, rec.n_units)
    assert (out / "forecast.png").exists()
    assert main(["forecast", str(trained), "--data", str(h5), "--start", "nan"]) == 2
    assert len(list((trained / "forecasts").iterdir())) == 1  # nothing half-written
    # without --data: the run's own data, regenerated with the run's source options (n_neurons=20, ...)
    assert main(["forecast", str(trained), "--start", str(start), "--samples", "2"]) == 0
    newest = max((trained / "forecasts").iterdir(), key=lambda p: p.stat().st_mtime_ns)
    np.testing.assert_array_equal(np.load(newest / "forecast.npz")["actual"], saved["actual"])
    assert main(["forecast", str(trained), "--samples", "0"]) == 2


def test_a_windows_sampled_trajectories_do_not_depend_on_its_batch(trained):
    """Each window draws from its own seeded stream: evaluation's trajectories for a window are the
    same in any batch size, and `forecast()` on that window alone reproduces them."""
    from neurohorizon.evaluation.evaluate import _eval_data
    from neurohorizon.evaluation.forecast import forecast
    from neurohorizon.evaluation.loading import load_run
    from neurohorizon.evaluation.predict import predict_dataset

    run = load_run(trained)
    assert run.cfg.sampling.feedback == "sample"  # trajectories that feed back their own draws
    _, test, _ = _eval_data(run, None, "error", {})

    def samples(batch_size):
        out = predict_dataset(run.model, run.likelihood, test, device=run.device, feedback="sample", n_samples=3,
                              keep_samples=True, seed=run.cfg.train.seed, batch_size=batch_size)
        return out["groups"][0]

    whole, ones = samples(64), samples(1)
    np.testing.assert_array_equal(whole["samples"], ones["samples"])
    assert len(test) >= 2 and whole["samples"].std() > 0
    k = 1
    fc = forecast(run, test.recordings[0], start=float(whole["start"][k]), n_samples=3)
    np.testing.assert_array_equal(fc.samples, whole["samples"][:, k])
    np.testing.assert_allclose(fc.mean, whole["rollout"][k], rtol=1e-5, atol=1e-6)
    other_seed = forecast(run, test.recordings[0], start=float(whole["start"][k]), n_samples=3, seed=99)
    assert not np.array_equal(other_seed.samples, fc.samples)


def test_forecast_never_counts_unrecorded_time_as_silence(trained):
    from torch_brain.data import Interval

    from neurohorizon.data.recording import Recording
    from neurohorizon.evaluation.forecast import forecast

    rec = generate("reach", **SMALL)
    d0, d1 = rec.domain
    mid = round((d0 + d1) / 2, 2)
    gappy = Recording.from_arrays(session_id=rec.session_id, spike_times=rec.spike_times, unit_ids=rec.unit_ids,
                                  spike_units=rec.spike_units,
                                  domain=Interval(start=np.array([d0, mid + 1.0]), end=np.array([mid, d1])))
    fc = forecast(trained, gappy, start=mid - 0.2, n_samples=2)  # 10 recorded bins, then the gap
    assert np.isfinite(fc.actual[:10]).all() and np.isnan(fc.actual[10:]).all()
    with pytest.raises(ValueError, match="crosses unrecorded time.*2 separate intervals"):
        forecast(trained, gappy, start=mid + 1.2)


def test_unknown_units_error_or_known_only(trained, capsys):
    from neurohorizon.evaluation.forecast import forecast

    other = generate("reach", n_neurons=20, trials_per_condition=5, seed=9)  # another session id
    with pytest.raises(ValueError, match="not trained on.*known-only"):
        forecast(trained, other)
    rec = generate("reach", **SMALL)
    from neurohorizon.evaluation.loading import keep_units

    mixed = keep_units(rec, np.arange(rec.n_units) < 15)
    fc = forecast(trained, mixed, start=float(rec.trials.events["go_cue"][2]), n_samples=1,
                  unknown_units="known-only")
    assert fc.mean.shape[1] == 15
    # known-only says what it leaves out, whole sessions included
    from neurohorizon.evaluation.loading import load_run, match_units

    with pytest.warns(UserWarning, match=r"known-only: left out 20 unit\(s\) the model never saw .*; 1 session\(s\) "
                                         r"had no known unit and are not evaluated: " + other.session_id):
        kept = match_units([mixed, other], load_run(trained).vocab, "known-only")
    assert [r.session_id for r in kept] == [mixed.session_id]


def test_corrupt_checkpoint_error_names_file_and_version(trained, tmp_path):
    import shutil

    from neurohorizon.evaluation.loading import load_run
    from neurohorizon.training.checkpoint import CheckpointError

    broken = tmp_path / "broken"
    shutil.copytree(trained, broken)
    (broken / "best.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="best.pt"):
        load_run(broken)
    state = torch.load(trained / "best.pt", weights_only=False)
    state["format_version"] = 0
    torch.save(state, broken / "best.pt")
    with pytest.raises(CheckpointError, match="format version 0"):
        load_run(broken)
    state["format_version"] = 1
    state["model"] = {k: v[..., :1] if torch.is_tensor(v) and v.ndim else v for k, v in state["model"].items()}
    torch.save(state, broken / "best.pt")
    with pytest.raises(CheckpointError, match="format version 1.*do not fit"):
        load_run(broken)


def test_bad_horizon_and_missing_data_give_clear_errors(tmp_path, capsys):
    code = main(["--runs-dir", str(tmp_path), "train", "data.horizon_ms=250", *OPTS])
    assert code == 2
    assert "250 ms is not a whole number of 20 ms bins" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing half-written
    assert main(["inspect", str(tmp_path / "missing.nwb")]) == 2
    assert "missing.nwb" in capsys.readouterr().err


def test_inspect_command(tmp_path, capsys):
    assert main(["--runs-dir", str(tmp_path), "inspect", "synthetic:reach", "-o", "n_neurons=20",
                 "-o", "trials_per_condition=3"]) == 0
    out = next(tmp_path.iterdir())
    assert (out / "stats.json").exists() and (out / "raster.png").exists()
    assert "recommended likelihood" in capsys.readouterr().out


@pytest.mark.slow
def test_demo_quick(tmp_path):
    from neurohorizon.demo import run_demo

    report = run_demo(runs_dir=tmp_path, quick=True, log=lambda *a: None)
    assert report.exists() and report.with_suffix(".md").exists()
    metrics = json.loads((report.parent / "metrics.json").read_text())
    assert {"NeuroHorizon", "glm_ar", "gru_seq2seq", "ndt_forward", "psth"} <= set(metrics["results"])


def test_a_failed_evaluation_leaves_no_folder_and_psths_use_condition_labels(trained, monkeypatch):
    from neurohorizon.evaluation import evaluate, figures

    before = set((trained / "evaluations").iterdir()) if (trained / "evaluations").exists() else set()
    seen = {}
    plot_psths = figures.plot_psths

    def spy(**kw):
        seen["conditions"] = list(kw["actual"])
        return plot_psths(**kw)

    monkeypatch.setattr(figures, "plot_psths", spy)

    def broken(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(evaluate, "write_evaluation_report", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        evaluate.evaluate_run(trained, baselines=False, n_samples=2, log=lambda *a: None)
    assert set((trained / "evaluations").iterdir()) == before
    monkeypatch.undo()
    monkeypatch.setattr(figures, "plot_psths", spy)
    evaluate.evaluate_run(trained, baselines=False, n_samples=2, log=lambda *a: None)
    assert seen["conditions"] and all(str(c).startswith("reach_") for c in seen["conditions"])


def test_held_out_sessions_are_reported_alone_and_by_name(tmp_path, capsys):
    from neurohorizon.data.io import save_recording
    from neurohorizon.evaluation.evaluate import evaluate_run

    folder = tmp_path / "sessions"
    folder.mkdir()
    day1, other = (generate("reach", **{**SMALL, "seed": seed}) for seed in (1, 2))
    local = [u.split("/", 1)[1] for u in other.unit_ids]  # day 2 records day 1's neurons again
    day2 = Recording.from_arrays(session_id="day2", unit_namespace=day1.session_id, spike_times=other.spike_times,
                                 unit_ids=local, spike_units=other.spike_units, domain=other.domain,
                                 trials=other.trials)
    recs = [day1, day2]
    for rec in recs:
        save_recording(rec, folder / f"{rec.session_id}.h5")
    held = recs[1].session_id
    assert main(["--runs-dir", str(tmp_path / "runs"), "train", "model.preset=tiny", "train.max_steps=2",
                 "train.eval_every=2", "train.batch_size=8", "data.train_windows_per_epoch=16",
                 f"data.source={folder}", "data.align_event=go_cue", f"data.holdout_sessions=[{held}]"]) == 0
    run = next((tmp_path / "runs").iterdir())
    out = evaluate_run(run, baselines=["mean_rate"], n_samples=2, log=lambda *a: None)
    metrics = json.loads((out / "metrics.json").read_text())
    assert sorted(metrics["sessions"].values()) == sorted(r.session_id for r in recs)
    assert metrics["held_out_sessions"] == [held]
    key = next(k for k, name in metrics["sessions"].items() if name == held)
    block = metrics["results"]["NeuroHorizon"]["12"]
    assert block["held_out"]["rollout"]["fp_bps"] == pytest.approx(block["sessions"][key]["rollout"]["fp_bps"])
    # the training null is kept per unit id, so the held-out session of trained units has it, and so the pool
    assert np.isfinite(block["sessions"][key]["rollout"]["fp_bps_train_null"])
    assert np.isfinite(block["pooled"]["rollout"]["fp_bps_train_null"])
    assert "Held-out sessions" in (out / "report.html").read_text()
    from neurohorizon.cli import results_table

    assert "the 1 held-out session(s) alone, never trained on:" in results_table(metrics)


def test_evaluate_edge_cases_from_the_second_review(tmp_path):
    """--data drops the same cross-split windows as the default evaluation; a baseline that cannot
    forecast a held-out session is left out, not fatal; a held-out session without trials is
    scored on tiled windows; a run shorter than 12 bins is scored at its own horizon."""
    from neurohorizon.data.io import save_recording
    from neurohorizon.evaluation.evaluate import evaluate_run

    folder = tmp_path / "sessions"
    folder.mkdir()
    reach = generate("reach", **SMALL)
    dynamics = generate("lorenz", n_neurons=12, duration=40.0, seed=3)
    local = [u.split("/", 1)[1] for u in reach.unit_ids[:11]] + ["new"]  # 11 of reach's neurons and one new
    lorenz = Recording.from_arrays(session_id=dynamics.session_id, unit_namespace=reach.session_id,
                                   spike_times=dynamics.spike_times, unit_ids=local, spike_units=dynamics.spike_units,
                                   domain=dynamics.domain, trials=dynamics.trials)
    for rec in (reach, lorenz):
        save_recording(rec, folder / f"{rec.session_id}.h5")
    common = ["model.preset=tiny", "train.max_steps=2", "train.eval_every=2", "train.batch_size=8",
              "data.train_windows_per_epoch=16", "data.horizon_ms=200", "data.context_ms=200"]
    assert main(["--runs-dir", str(tmp_path / "a"), "train", *common, f"data.source={folder / reach.session_id}.h5",
                 "data.align_event=end", "data.horizon_ms=300"]) == 0  # 0.2-0.4 s gaps: some reach the next trial
    run = next((tmp_path / "a").iterdir())
    lines = []
    with pytest.warns(UserWarning, match="dropped"):
        out = evaluate_run(run, baselines=False, n_samples=2, log=lines.append)
    n_default = int(lines[0].split(" on ")[1].split()[0])
    with pytest.warns(UserWarning, match="dropped"):
        assert _evaluated(run, folder / f"{reach.session_id}.h5")[0] == n_default
    assert main(["--runs-dir", str(tmp_path / "b"), "train", *common, f"data.source={folder}", "data.align_event=go_cue",
                 f"data.holdout_sessions=[{lorenz.session_id}]"]) == 0
    run = next((tmp_path / "b").iterdir())
    lines = []
    with pytest.warns(UserWarning, match="no trials to align 'test' windows"):
        out = evaluate_run(run, baselines=["mean_rate", "persistence"], n_samples=2, log=lines.append)
    metrics = json.loads((out / "metrics.json").read_text())
    assert any("baseline mean_rate left out" in str(line) for line in lines)
    assert set(metrics["results"]) == {"NeuroHorizon", "persistence"}
    assert list(metrics["horizons"]) == ["10"]  # 200 ms: 10 bins, scored at its own horizon
    assert np.isfinite(metrics["results"]["NeuroHorizon"]["10"]["held_out"]["rollout"]["fp_bps"])


def test_own_warnings_print_as_plain_lines():
    import os
    import warnings

    from neurohorizon.cli import _plain_warnings

    ours = os.path.join(os.sep, "x", "neurohorizon", "data", "prepare.py")
    with _plain_warnings():
        assert warnings.formatwarning("dropped 5 windows", UserWarning, ours, 93) == "warning: dropped 5 windows\n"
        assert "torch/x.py:3: UserWarning" in warnings.formatwarning("m", UserWarning, "/y/torch/x.py", 3, "")
    assert "prepare.py:93" in warnings.formatwarning("m", UserWarning, ours, 93, "")  # restored after
