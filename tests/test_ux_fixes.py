"""User-facing behaviour: clear CLI errors, file modes, run folder names and cleanup, warnings,
inspect's trial listing and the likelihood reasons."""

from __future__ import annotations

import argparse
import os
import shlex
import stat

import numpy as np
import pytest

from neurohorizon.cli import DATA_HELP, DESCRIPTION, build_parser, main
from neurohorizon.config import DataConfig, load_config
from neurohorizon.data import recipes
from neurohorizon.data.io import save_recording
from neurohorizon.data.prepare import prepare_data
from neurohorizon.data.prior import ConditionPrior
from neurohorizon.data.stats import describe_trials, recommend_likelihood, recording_stats
from neurohorizon.data.synthetic import generate
from neurohorizon.data.windows import UnitVocab
from neurohorizon.evaluation.loading import keep_units, match_units
from neurohorizon.training.checkpoint import load_checkpoint, save_checkpoint
from neurohorizon.training.run import run_name, train_run

SMALL = {"n_neurons": 12, "trials_per_condition": 4, "seed": 2}
SOURCE_OPTIONS = [x for k, v in SMALL.items() for x in ("-o", f"{k}={v}")]
TINY_TRAIN = ["model.preset=tiny", "train.max_steps=2", "train.eval_every=2", "train.batch_size=4",
              "train.max_eval_windows=8", "data.train_windows_per_epoch=16",
              *[f"data.options.{k}={v}" for k, v in SMALL.items()]]


@pytest.fixture(scope="module")
def reach():
    return generate("reach", **SMALL)


@pytest.fixture
def umask_027():
    before = os.umask(0o027)
    yield
    os.umask(before)


# ------------------------------------------------------------------------- 1. import twice
def test_import_twice_is_a_clean_error_naming_the_file_and_the_flag(tmp_path, capsys):
    out = tmp_path / "reach.h5"
    args = ["import", "synthetic:reach", str(out), *SOURCE_OPTIONS]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(out) in err and "--overwrite" in err
    assert "Traceback" not in err and "overwrite=True" not in err
    assert main([*args, "--overwrite"]) == 0


# ----------------------------------------------------------------------- 2. file modes
def test_atomic_writes_get_the_mode_of_new_files(tmp_path, reach, umask_027):
    h5 = save_recording(reach, tmp_path / "r.h5")
    ckpt = save_checkpoint({"model": {}, "config": {}, "vocab": [], "step": 0}, tmp_path / "last.pt")
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what open() gives under this umask
    for path in (h5, ckpt):
        assert stat.S_IMODE(path.stat().st_mode) == 0o640 == stat.S_IMODE(plain.stat().st_mode), path


# ------------------------------------------------------------------ 3. recipe data folder
def test_missing_recipe_data_says_where_it_looked_and_how_to_choose(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUROHORIZON_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        recipes.load_recipe("pmd_reach_yu2009")
    message = str(info.value)
    assert str(tmp_path / "pmd_reach_yu2009") in message
    assert "NEUROHORIZON_DATA=/path/to/data" in message
    assert "NEUROHORIZON_DATA" in DATA_HELP
    # a mistyped folder is an error, not a silent fall-back to ../shared/data
    monkeypatch.setenv("NEUROHORIZON_DATA", str(tmp_path / "typo"))
    with pytest.raises(FileNotFoundError, match=r"NEUROHORIZON_DATA=.*typo: no such folder"):
        recipes.load_recipe("pmd_reach_yu2009")


# -------------------------------------------------------------- 4. help examples, names
def test_every_help_example_parses_and_names_no_missing_file():
    examples = [line.split("   ")[0].strip() for line in DESCRIPTION.splitlines()
                if line.strip().startswith("neurohorizon ")]
    assert len(examples) >= 5
    for example in examples:
        argv = [a if a != "RUN" else "runs/reach-1" for a in shlex.split(example)[1:]]
        args = build_parser().parse_args(argv)
        if args.command == "train":  # overrides only: no config file to be missing
            assert all("=" in a for a in [args.config, *args.overrides]), example
    assert "configs/reach.yaml" not in DESCRIPTION


@pytest.mark.parametrize("overrides,expected", [
    ([], "reach"),
    (["data.source=synthetic:lorenz"], "lorenz"),
    (["data.source=recipe:pmd_reach_yu2009"], "pmd_reach_yu2009"),
    (["data.source=/data/session_7.h5"], "session_7"),
    (["data.source=/data/sessions"], "sessions"),
    (["data.source=synthetic:reach", "name=mine"], "mine"),
])
def test_run_is_named_after_the_data_unless_named(overrides, expected):
    assert run_name(load_config(None, overrides)) == expected


# ------------------------------------------------------- 5. events, conditions, horizon
def test_prior_with_a_wrong_event_lists_events_and_conditions(reach):
    intervals = [(0, float(reach.domain[0]), float(reach.domain[1]))]
    index = UnitVocab.from_recordings([reach]).index
    with pytest.raises(ValueError) as info:
        ConditionPrior.fit([reach], intervals, lambda r: index(r.unit_ids), bin_size=0.02, event="nope")
    message = str(info.value)
    for name in ("go_cue", "target_on", "move"):
        assert name in message
    assert "8 condition label(s)" in message and "data.align_event" in message
    # trials without condition labels: the event is fine, the conditions are missing, and it says so
    from neurohorizon.data.recording import Recording, Trials

    tr = reach.trials
    unlabelled = Recording.from_arrays(session_id="nolabels", spike_times=reach.spike_times, unit_ids=reach.unit_ids,
                                       spike_units=reach.spike_units, domain=reach.domain,
                                       trials=Trials(start=tr.start, end=tr.end, events=tr.events))
    with pytest.raises(ValueError, match="0 condition label.*needs condition labels.*condition_column"):
        ConditionPrior.fit([unlabelled], intervals, lambda r: index(r.unit_ids), bin_size=0.02, event="go_cue")


def test_too_long_horizon_error_suggests_one_that_fits(reach):
    cfg = DataConfig(horizon_ms=2400.0, train_windows_per_epoch=8)
    with pytest.raises(ValueError, match=r"data\.horizon_ms=\d+ is the longest") as info:
        prepare_data(cfg, recordings=[reach])
    suggested = float(str(info.value).split("data.horizon_ms=")[1].split()[0])
    assert 0 < suggested < 2400
    fits = prepare_data(DataConfig(horizon_ms=suggested, train_windows_per_epoch=8), recordings=[reach])
    assert len(fits.valid) and len(fits.test)


# ------------------------------------------------------------------- 6. unknown units
def test_no_known_unit_says_so_in_plain_names(reach):
    vocab = UnitVocab(["someone/else"])
    for policy in ("error", "known-only"):
        with pytest.raises(ValueError) as info:
            match_units([reach], vocab, policy)
        message = str(info.value)
        assert "none of the data's units were in training" in message and "cannot forecast" in message
        assert "would leave no unit" in message and "Use --unknown-units" not in message
        assert "np.str_" not in message
        assert f"{reach.unit_ids[0]}, {reach.unit_ids[1]}, {reach.unit_ids[2]} and 9 more" in message


def test_some_known_units_suggest_known_only(reach):
    vocab = UnitVocab(list(reach.unit_ids[:5]))
    with pytest.raises(ValueError, match="7 unknown .* and 4 more.*known-only.*5 known unit"):
        match_units([reach], vocab, "error")
    kept = match_units([reach], vocab, "known-only")
    assert kept[0].n_units == 5
    assert match_units([keep_units(reach, np.arange(12) < 5)], vocab, "error")[0].n_units == 5


def test_a_subset_of_units_shared_across_sessions_keeps_their_ids():
    """Runs of one Aplysia preparation share units (`unit_namespace`): a subset of them (as
    forecast past the recording's end, or known-only, makes) must not prefix the session again."""
    from neurohorizon.data.recording import Recording

    rec = Recording.from_arrays(session_id="Jun0214da02", spike_times=[0.1, 0.2, 0.3], unit_ids=["1", "2", "1"],
                                domain=(0.0, 1.0), unit_namespace="Jun0214")
    assert list(rec.unit_ids) == ["Jun0214/1", "Jun0214/2"]
    part = keep_units(rec, np.array([True, False]))
    assert list(part.unit_ids) == ["Jun0214/1"] and part.session_id == "Jun0214da02"
    vocab = UnitVocab(["Jun0214/1", "Jun0214/2"])
    assert match_units([rec], UnitVocab(["Jun0214/1"]), "known-only")[0].n_units == 1
    assert match_units([part], vocab, "error")[0].n_units == 1


# -------------------------------------------------------------------- 7. baseline budget
def test_evaluate_passes_the_baseline_budget_and_says_so(monkeypatch, capsys, tmp_path):
    import json

    from neurohorizon.evaluation import evaluate

    metrics = {"horizons": {"12": "12 bins (240 ms)"}, "results": {
        "NeuroHorizon": {"12": {"pooled": {"rollout": {"fp_bps": 0.1234}}}},
        "psth": {"12": {"pooled": {"rollout": {"fp_bps": None}}}}}}  # NaN is null in JSON
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    seen = {}
    monkeypatch.setattr(evaluate, "evaluate_run", lambda run, **kw: seen.update(kw) or tmp_path)
    assert main(["evaluate", "some-run", "--baseline-seconds", "7.5"]) == 0
    assert seen["baseline_budget_s"] == 7.5
    printed = capsys.readouterr().out.splitlines()
    assert printed[1].split() == ["12", "bins", "(240", "ms)"]
    assert printed[2].split() == ["NeuroHorizon", "0.123"] and printed[3].split() == ["psth", "—"]
    assert main(["evaluate", "some-run"]) == 0
    assert seen["baseline_budget_s"] == 120.0  # the budget evaluations always had
    evaluate.log_baseline_plan(["psth", "glm_ar", "gru_seq2seq"], 7.5)
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.startswith("fitting 3 baseline(s)") and "glm_ar, gru_seq2seq each train within a 7.5 s" in line


# ------------------------------------------------------------- 8. no empty run folders
@pytest.mark.parametrize("bad", ["model.preset=huge", "train.ema_decay=2", "train.batch_size=-1", "train.batch_size=0",
                                 "train.lr=0", "data.train_windows_per_epoch=3", "data.bin_size_ms=-20",
                                 "data.horizon_ms=1010", "data.fractions=[0.7,0.15,abc]",
                                 "data.train_windows_per_epoch=0", "data.events=[go_cue,go_cue]",
                                 "data.rate_prior_factors=auto"])
def test_failed_train_leaves_no_run_folder(tmp_path, capsys, bad):
    keep = tmp_path / "earlier-run"
    keep.mkdir()
    (keep / "best.pt").write_text("x")
    assert main(["--runs-dir", str(tmp_path), "train", *TINY_TRAIN, bad]) == 2
    err = capsys.readouterr().err
    assert bad.split("=")[1].strip("[]").split(",")[-1] in err  # the bad value is named
    assert [p.name for p in tmp_path.iterdir()] == ["earlier-run"]  # only what was there before
    assert (keep / "best.pt").read_text() == "x"


@pytest.mark.parametrize("bad", ["train.batch_size=-1", "train.lr=-1", "sampling.kind=foo", "data.horizon_ms=1010",
                                 "sampling.passes=1", "sampling.feedback=argmax", "sampling.predictions_from=future"])
def test_bad_training_settings_fail_before_the_data_is_prepared(tmp_path, monkeypatch, capsys, bad):
    monkeypatch.setattr("neurohorizon.training.run.prepare_data", lambda *a, **k: pytest.fail("prepared the data"))
    assert main(["--runs-dir", str(tmp_path), "train", *TINY_TRAIN, bad]) == 2
    assert bad.split("=")[1] in capsys.readouterr().err and not any(tmp_path.iterdir())


def _parser_of(func):
    parser = argparse.ArgumentParser()
    parser.set_defaults(func=func)
    return parser


def test_sigterm_interrupts_the_command_and_the_handler_is_restored(tmp_path, monkeypatch, capsys):
    import signal

    from neurohorizon.runs import removed_on_failure

    folder = tmp_path / "eval-1"
    before = signal.getsignal(signal.SIGTERM)

    def half_written(args):  # an evaluation that a scheduler stops midway
        folder.mkdir()
        with removed_on_failure(folder):
            (folder / "metrics.json").write_text("{")
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr("neurohorizon.cli.build_parser", lambda: _parser_of(half_written))
    assert main([]) == 130
    assert "terminated (SIGTERM)" in capsys.readouterr().err
    assert not folder.exists() and signal.getsignal(signal.SIGTERM) is before


# ----------------------------------------------------------- 9. schedules that never run
def test_schedules_longer_than_the_run_warn_once_at_the_start(tmp_path, reach, capsys):
    cfg = load_config(None, [*TINY_TRAIN, "sampling.kind=linear", "sampling.warmup=300", "train.warmup_steps=100"])
    run = train_run(cfg, runs_dir=tmp_path, recordings=[reach], quiet=True)
    out = capsys.readouterr().out
    assert "warning: sampling.warmup=300 steps >= train.max_steps=2" in out
    assert "warning: train.warmup_steps=100 >= train.max_steps=2" in out
    assert run.name.startswith("reach-")
    cfg = load_config(None, [*TINY_TRAIN, "train.warmup_steps=1"])  # constant schedule: nothing to warn
    train_run(cfg, runs_dir=tmp_path, recordings=[reach], quiet=True)
    out = capsys.readouterr().out
    assert "warning:" not in out
    assert "step 2: validation rollout " in out and "bits/spike, teacher-forced " in out  # said as it trains


# ----------------------------------------------------- 10. the reason names its statistic
def test_poisson_reason_names_the_dispersion_index_and_the_fano_window():
    rng = np.random.default_rng(0)
    from neurohorizon.data.recording import Recording

    t = np.sort(rng.uniform(0, 600, 6 * 3000))
    rec = Recording.from_arrays(session_id="p", spike_times=t, unit_ids=np.arange(6),
                                spike_units=rng.integers(0, 6, len(t)), domain=(0.0, 600.0))
    stats = recording_stats([rec], 0.02)
    choice, reasons = recommend_likelihood(stats)
    disp = stats["overall"]["summary"]["median_dispersion_index"]
    assert choice == "poisson"
    assert reasons[-1] == f"dispersion index {disp:.2f} close to 1: Poisson (the default)"
    assert not any("Fano close to 1" in r for r in reasons)
    assert any("Fano factor" in r and "100 ms windows" in r for r in reasons)
    assert stats["sessions"][0]["fano_window_s"] == 0.1


# --------------------------------------------------------- 11. inspect lists the trials
def test_inspect_lists_events_conditions_and_trial_lengths(tmp_path, reach, capsys):
    trials = recording_stats([reach], 0.02)["sessions"][0]["trials"]
    assert set(trials["events_median_s_from_start"]) == {"target_on", "go_cue", "move"}
    assert len(trials["conditions"]) == 8 and trials["n_trials"] == 32
    lo, hi = trials["length_s"]
    assert 0 < lo <= hi == pytest.approx(float(np.max(reach.trials.end - reach.trials.start)))
    assert main(["--runs-dir", str(tmp_path), "inspect", "synthetic:reach", *SOURCE_OPTIONS]) == 0
    printed = capsys.readouterr().out
    assert "8 condition(s)" in printed and "go_cue (+" in printed and "data.align_event" in printed
    summary = next(tmp_path.iterdir()) / "summary.txt"
    assert "go_cue (+" in summary.read_text()
    assert describe_trials({"sessions": [{"session": "c", "trials": None}]}) == []


@pytest.mark.parametrize("args, match", [
    (["inspect", "synthetic:reach", "--bin-size-ms", "0"], r"--bin-size-ms must be in \[1, 1000\]"),
    (["evaluate", "nowhere", "--samples", "0"], "--samples must be >= 1"),
    (["evaluate", "nowhere", "--baseline-seconds", "-1"], "--baseline-seconds must be > 0, got -1"),
    (["study", "synthetic:reach", "--resume", "nowhere"], "nowhere is not a study folder"),
    (["study", "synthetic:reach", "--horizons", "12", "12"], r"--horizons lists a horizon twice: \[12, 12\]"),
    (["study", "synthetic:reach", "train.max_steps=5"], "train.max_steps is set by --steps-per-cell"),
    (["study", "synthetic:reach", "--horizons", "200"], r"data.horizon_ms is 200 bins, more than the model's max_bins"),
    (["train", "data.source=synthetic:lorenz", "data.align_event=go_cue", "model.preset=tiny"],
     r"synthetic:lorenz\(.*\) has no trials at all \(set data.align_event=null"),
    (["train", "--resume", "nowhere", "train.max_steps=30"], "takes no config or overrides but train.max_minutes"),
    (["train", "--resume", "nowhere", "train.max_minutes=ten"], "train.max_minutes=ten: train.max_minutes takes a "
                                                                "number of minutes"),
    (["train", "--resume", "nowhere", "train.max_minutes=10"], "nowhere"),  # the one override it takes
    (["inspect", "missing_dir"], r"'missing_dir' \(no such file or folder\)"),
    (["inspect", "synthetic:lorenz", "-o", "foo=1"], r"unknown option\(s\) \['foo'\]; valid options"),
    (["inspect", "synthetic:lorenz", "-o", "duration=abc"], r"option duration takes a number .*got 'abc'"),
    (["inspect", "synthetic:reach", "-o", "noise=gamma_poisson", "-o", "dispersion=abc"],
     r"dispersion \(alpha of noise='gamma_poisson'\) takes a number, got 'abc'"),
    (["train", "data.events=[1,2]"], r"data.events lists trial event names .*got \[1, 2\]"),
    (["train", "data.context_ms=.inf"], r"context must be a positive number"),
    (["train", "data.split_seed=-1"], r"data.split_seed must be an integer >= 0, got -1"),
    (["train", "data.train_anchor_jitter_ms=-5"], r"data.train_anchor_jitter_ms must be a finite number >= 0"),
    (["train", "data.align_offset_ms=.nan"], r"data.align_offset_ms must be a finite number, got nan"),
    (["train", "data.fractions=[0.7,0.15,.nan]"], r"fractions must be 3 non-negative numbers"),
    (["train", "train.seed=-1"], r"train.seed must be an integer >= 0, got -1"),
])
def test_bad_arguments_are_clear_errors_that_leave_no_folder(tmp_path, capsys, args, match):
    import re

    assert main(["--runs-dir", str(tmp_path / "runs"), *args]) == 2
    assert re.search(match, capsys.readouterr().err)
    assert not (tmp_path / "runs").exists()


def test_a_file_where_a_folder_is_needed_is_a_clean_error(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert main(["--runs-dir", str(tmp_path / "afile"), "inspect", "synthetic:reach"] + SOURCE_OPTIONS) == 2
    assert "afile is a file (choose another --runs-dir)" in capsys.readouterr().err
    assert main(["--runs-dir", str(tmp_path / "afile"), "train", "model.preset=tiny"]) == 2
    assert "cannot hold run folders" in capsys.readouterr().err
    # import: a .nwb target, or a target under a file, are named as such before any data is read
    assert main(["import", "synthetic:lorenz", str(tmp_path / "out.nwb")]) == 2
    assert "end the file name in .h5, or give a folder" in capsys.readouterr().err
    assert main(["import", "synthetic:lorenz", str(tmp_path / "afile" / "x.h5")]) == 2
    assert f"{tmp_path / 'afile'} is a file, not a folder" in capsys.readouterr().err
    assert not (tmp_path / "out.nwb").exists()


def test_no_steps_or_no_spikes_fail_before_a_run(tmp_path, reach, capsys):
    assert main(["--runs-dir", str(tmp_path), "train", "data.source=synthetic:reach", "train.max_steps=0",
                 *TINY_TRAIN[:1]]) == 2
    assert "train.max_steps must be >= 1" in capsys.readouterr().err
    from neurohorizon.data.recording import Recording

    with pytest.warns(UserWarning, match="have no spikes"):
        silent = Recording.from_arrays(session_id="silent", spike_times=np.zeros(0), unit_ids=reach.unit_ids,
                                       spike_units=np.zeros(0, int), domain=reach.domain, trials=reach.trials)
    with pytest.raises(ValueError, match="no unit has a single spike"):
        prepare_data(DataConfig(source="synthetic:reach"), recordings=[silent])


@pytest.mark.parametrize("override, match", [
    ("model.overrides.dimm=96", r"model.overrides.dimm: not a model setting; valid: \[.*'dim'"),
    ("model.overrides.decoder=parallel", "model.overrides.decoder: set model.decoder instead"),
    ("model.overrides.bin_size=0.01", "model.overrides.bin_size: set data.bin_size_ms instead"),
    ("model.overrides.dim=abc", r"model.overrides.dim must be a whole number >= 1, got 'abc'"),
    ("model.overrides.dim=0", r"model.overrides.dim must be a whole number >= 1, got 0"),
    ("model.overrides.dropout=1.5", r"model.overrides.dropout must be a number in \[0, 1\), got 1.5"),
    ("model.overrides.max_bins=10", "data.horizon_ms is 50 bins, more than the model's max_bins=10: raise "
                                    "model.overrides.max_bins or shorten data.horizon_ms"),
])
def test_bad_model_overrides_are_clear_errors_before_any_run_folder(tmp_path, capsys, override, match):
    import re

    assert main(["--runs-dir", str(tmp_path / "runs"), "train", "model.preset=tiny", override]) == 2
    assert re.search(match, capsys.readouterr().err)
    assert not (tmp_path / "runs").exists()


def test_messages_name_the_real_problem(tmp_path, capsys):
    from neurohorizon.evaluation.loading import load_run
    from neurohorizon.training.run import train_run

    # an unknown likelihood is named as such, before the rate prior's need for a log-rate one
    code = main(["--runs-dir", str(tmp_path / "r"), "train", "loss.likelihood=gauss", "data.rate_prior=psth",
                 "data.align_event=go_cue"])
    assert code == 2 and "gauss" in capsys.readouterr().err.lower()
    # a folder that holds run folders (the demo's) is not itself a run
    cfg = load_config(None, ["model.preset=tiny", "train.max_steps=2", "train.eval_every=2", "train.batch_size=4",
                             "data.train_windows_per_epoch=8", "data.options.n_neurons=8",
                             "data.options.trials_per_condition=3"])
    run = train_run(cfg, runs_dir=tmp_path / "outer", quiet=True)
    with pytest.raises(FileNotFoundError, match=rf"outer: not a run folder \(no last.pt\); it holds .*{run.name}"):
        load_run(tmp_path / "outer")
    with pytest.raises(ValueError, match="checkpoint 'bset'"):
        load_run(run, which="bset")
    # resuming a finished run says so instead of silently doing nothing
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 0
    assert "already finished its schedules (step 2, train.max_steps=2)" in capsys.readouterr().out
    # so does one whose schedules ended early to fit train.max_minutes, without validating again
    state = load_checkpoint(run / "last.pt")
    state["config"]["train"].update(max_steps=3, eval_every=3)  # 2 steps did the schedules' 3
    state["train_state"]["schedule_step"] = 3.0
    save_checkpoint(state, run / "last.pt")
    rows = (run / "valid_log.csv").read_text()
    assert main(["train", "--resume", str(run)]) == 0
    assert "already finished its schedules (step 2, train.max_steps=3)" in capsys.readouterr().out
    assert (run / "valid_log.csv").read_text() == rows


def test_atomic_text_writes_keep_the_old_file_when_a_write_fails(tmp_path):
    from neurohorizon.runs import write_text_atomic

    path = write_text_atomic(tmp_path / "splits.json", '{"old": 1}')
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(path, '{"new": "\ud800"}')  # fails while writing
    assert path.read_text() == '{"old": 1}' and sorted(p.name for p in tmp_path.iterdir()) == ["splits.json"]


def test_a_run_stores_its_data_file_as_an_absolute_path(tmp_path, monkeypatch):
    from neurohorizon.training.run import train_run

    save_recording(generate("reach", n_neurons=8, trials_per_condition=3, seed=1), tmp_path / "rec.h5")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, ["model.preset=tiny", "train.max_steps=1", "train.eval_every=1", "train.batch_size=4",
                             "data.train_windows_per_epoch=8", "data.source=rec.h5"])
    run = train_run(cfg, runs_dir=tmp_path / "runs", quiet=True)
    assert load_config(run / "config.yaml").data.source == str(tmp_path / "rec.h5")  # forecast works from anywhere


def test_bad_recipe_options_get_one_line_errors():
    from neurohorizon.data.sources import load_data

    with pytest.raises(ValueError, match=r"recipe:adn_peyrache2015: unknown option\(s\) \['x'\]; valid options"):
        load_data("recipe:adn_peyrache2015", x=1)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['file'\]; valid options: \['root', 'which', 'trial_gap'\]"):
        load_data("pmd_reach_yu2009", file="ex1_spikecounts.mat")
    with pytest.raises(ValueError, match=r"recipe:pmd_reach_yu2009: option trial_gap takes a number \(default 1.0\), got 'abc'"):
        load_data("recipe:pmd_reach_yu2009", trial_gap="abc")


def test_evaluate_option_needs_data(capsys):
    assert main(["evaluate", "no-such-run", "-o", "n_neurons=12"]) == 2
    assert "--option sets options of --data" in capsys.readouterr().err


def test_inspect_refuses_a_bin_longer_than_its_statistics_describe(capsys):
    assert main(["inspect", "synthetic:reach", "--bin-size-ms", "200000"]) == 2
    assert "--bin-size-ms must be in [1, 1000]" in capsys.readouterr().err
    assert main(["inspect", "synthetic:reach", "--bin-size-ms", "0.02"]) == 2  # seconds given as ms


def test_a_bin_longer_than_every_trial_is_named_before_any_statistic():
    from neurohorizon.data.stats import recording_stats

    rec = generate("reach", n_neurons=8, trials_per_condition=2, seed=1)
    longest = float(np.max(rec.trials.end - rec.trials.start))
    with pytest.raises(ValueError, match=f"bin is longer than its longest trial \\({longest * 1000:.0f} ms\\)"):
        recording_stats([rec], bin_size=longest + 1.0)


def test_inspect_says_when_bins_leave_much_of_the_recording_uncounted():
    from torch_brain.data import Interval

    from neurohorizon.data.recording import Recording
    from neurohorizon.data.stats import recommend_likelihood
    from neurohorizon.evaluation.inspect import summary_text

    # two recorded 1.0 s pieces (trials) with a gap: 0.6 s bins count only 0.6 s of each
    rng = np.random.default_rng(0)
    times = np.sort(np.r_[rng.uniform(0, 1, 40), rng.uniform(5, 6, 40)])
    rec = Recording.from_arrays(session_id="s", spike_times=times, unit_ids=rng.integers(0, 3, 80).astype(str),
                                domain=Interval(np.array([0.0, 5.0]), np.array([1.0, 6.0])))
    for bin_size, said in ((0.6, True), (0.02, False)):
        stats = recording_stats([rec], bin_size=bin_size)
        assert stats["sessions"][0]["recorded_s"] == pytest.approx(2.0)
        text = summary_text(stats, "s", recommend_likelihood(stats))
        assert ("of the 2.0 s recorded fall in whole" in text) == said


def test_resume_of_a_folder_that_is_not_a_run_names_the_runs_inside(tmp_path, capsys):
    (tmp_path / "outer" / "a-run").mkdir(parents=True)
    (tmp_path / "outer" / "a-run" / "last.pt").write_bytes(b"")
    assert main(["train", "--resume", str(tmp_path / "outer")]) == 2
    assert "outer: not a run folder (no last.pt); it holds the run folder(s) ['a-run']" in capsys.readouterr().err
    # a run killed before its first checkpoint: say so, and how to start it again
    (tmp_path / "killed").mkdir()
    (tmp_path / "killed" / "config.yaml").write_text("name: x\n")
    assert main(["evaluate", str(tmp_path / "killed")]) == 2
    assert "its training stopped before the first checkpoint" in capsys.readouterr().err


def test_a_stopped_demo_leaves_a_folder_only_when_training_can_resume(tmp_path, monkeypatch):
    from neurohorizon import demo

    monkeypatch.setattr("neurohorizon.data.sources.load_data", lambda *a, **k: [])

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt("stopped")

    monkeypatch.setattr("neurohorizon.evaluation.inspect.inspect_data", stopped)
    with pytest.raises(KeyboardInterrupt):
        demo.run_demo(runs_dir=tmp_path / "a", quick=True, log=lambda *a: None)
    assert not any((tmp_path / "a").iterdir())  # stopped while inspecting: nothing left

    def trained_then_stopped(cfg, *, runs_dir, recordings):
        (runs_dir / "demo-run").mkdir()
        (runs_dir / "demo-run" / "last.pt").write_bytes(b"")
        raise KeyboardInterrupt("stopped")

    monkeypatch.setattr("neurohorizon.evaluation.inspect.inspect_data", lambda *a, **k: None)
    monkeypatch.setattr("neurohorizon.training.run.train_run", trained_then_stopped)
    with pytest.raises(KeyboardInterrupt):
        demo.run_demo(runs_dir=tmp_path / "b", quick=True, log=lambda *a: None)
    (root,) = (tmp_path / "b").iterdir()
    assert (root / "demo-run" / "last.pt").exists()  # its checkpoint is kept for --resume


def test_the_training_null_is_each_units_mean_over_the_training_target_bins(reach, monkeypatch):
    from neurohorizon.evaluation.evaluate import train_null_rates

    cfg = load_config(None, ["data.source=synthetic:reach", "data.align_event=go_cue", "data.train_windows_per_epoch=40"])
    data = prepare_data(cfg.data, recordings=[reach])
    null = train_null_rates(data.train, data.test)
    items = [data.train[i] for i in range(len(data.train))]
    want = np.mean([it["target_counts"] for it in items], axis=(0, 1))  # one session: every window has every unit
    np.testing.assert_allclose(null[0], want)
    assert list(data.test.session_units(0)) == list(items[0]["units"])
    # a unit silent in every training window gets half a spike over its bins, not a rate of 0
    silent = data.train.session_units(0)[0]
    for item in items:
        item["target_counts"][:, 0] = 0
    monkeypatch.setattr(type(data.train), "__getitem__", lambda self, i: items[i])
    null = train_null_rates(data.train, data.test)
    assert null[0][0] == pytest.approx(0.5 / (len(items) * items[0]["target_counts"].shape[0]))
    assert silent == items[0]["units"][0]
