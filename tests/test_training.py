"""The training loop: exact resume, DDP equivalence, divergence, scheduled sampling."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from neurohorizon.config import load_config, save_config
from neurohorizon.data.synthetic import generate
from neurohorizon.training.checkpoint import load_checkpoint
from neurohorizon.training.run import train_run
from neurohorizon.training.trainer import TrainingDiverged

SMALL_REACH = {"n_neurons": 24, "trials_per_condition": 6, "seed": 3}


@pytest.fixture(scope="module")
def reach():
    return generate("reach", **SMALL_REACH)


def tiny_cfg(*extra):
    return load_config(None, [
        "model.preset=tiny", "train.batch_size=8", "train.max_steps=8", "train.eval_every=4",
        "train.checkpoint_every=2", "train.log_every=1", "train.warmup_steps=2", "train.max_eval_windows=16",
        "data.train_windows_per_epoch=24", "data.align_event=go_cue", "data.source=synthetic:reach",
        *[f"data.options.{k}={v}" for k, v in SMALL_REACH.items()], *extra,
    ])


def losses(run_dir: Path) -> list[float]:
    with open(run_dir / "train_log.csv") as handle:
        return [float(row["loss"]) for row in csv.DictReader(handle)]


@pytest.fixture
def one_thread():
    """Multi-threaded CPU reductions differ in the last float bit from run to run; one thread is exact."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("predictions_from", ["passes", "rollout"])
def test_resume_continues_exactly(tmp_path, reach, one_thread, predictions_from):
    cfg = tiny_cfg("sampling.kind=linear", "sampling.n=6", "train.unit_dropout=0.2",
                   f"sampling.predictions_from={predictions_from}")
    full = train_run(cfg, runs_dir=tmp_path / "a", recordings=[reach], quiet=True)
    half = train_run(cfg, runs_dir=tmp_path / "b", recordings=[reach], quiet=True, stop_after=3)
    assert load_checkpoint(half / "last.pt")["step"] == 3  # off the validation grid (every 4 steps)
    train_run(None, resume=half, recordings=[reach])
    a, b = load_checkpoint(full / "last.pt"), load_checkpoint(half / "last.pt")
    assert a["step"] == b["step"] == 8
    for key, value in a["model"].items():
        if torch.is_tensor(value):
            assert torch.equal(value, b["model"][key]), key
    assert losses(full) == losses(half)  # every step's loss, before and after the resume
    # the same validations, so the same best.pt (a pause adds no validation point)
    assert (full / "valid_log.csv").read_text() == (half / "valid_log.csv").read_text()
    assert load_checkpoint(full / "best.pt")["step"] == load_checkpoint(half / "best.pt")["step"]


@pytest.mark.parametrize("prior", [[], ["data.rate_prior=psth_factors", "data.rate_prior_factors=1",
                                         "data.rate_prior_dynamics=1"]], ids=["no-prior", "factor-prior"])
def test_worker_processes_build_the_same_batches(tmp_path, reach, one_thread, prior):
    """train.num_workers > 0 builds batches ahead in worker processes: the same run, to the bit,
    across the epoch boundary where the training windows are redrawn (a factor prior's latents
    inferred per batch, in the workers)."""
    from neurohorizon.data.dataset import ForecastDataset

    cfg = tiny_cfg("train.max_steps=5", "train.eval_every=5", "sampling.kind=linear", "sampling.n=4", *prior)
    batched = []
    with pytest.MonkeyPatch.context() as patch:  # inline, a batch is fetched in one call too
        whole = ForecastDataset.__getitems__
        patch.setattr(ForecastDataset, "__getitems__", lambda self, idx: batched.append(len(idx)) or whole(self, idx))
        inline = train_run(cfg, runs_dir=tmp_path / "a", recordings=[reach], quiet=True)
    assert batched.count(8) >= 5  # the 5 training batches (validation batches come the same way)
    cfg.train.num_workers = 2
    workers = train_run(cfg, runs_dir=tmp_path / "b", recordings=[reach], quiet=True)
    assert len(losses(inline)) == 5 and losses(inline) == losses(workers)  # 24 windows / 8: 3 steps an epoch


def test_categorical_runs_start_at_each_units_count_histogram(tmp_path, reach):
    from neurohorizon.training.run import log_class_frequencies

    items = [{"units": np.array([1, 2]), "target_counts": np.array([[0, 3], [1, 0], [0, 9]], np.float32)}]
    freqs = log_class_frequencies(items, n_vocab=3, n_classes=3).exp()  # classes 0, 1, >= 2; +0.5 each
    np.testing.assert_allclose(freqs[1].numpy(), np.array([2.5, 1.5, 0.5]) / 4.5, rtol=1e-6)
    np.testing.assert_allclose(freqs[2].numpy(), np.array([1.5, 0.5, 2.5]) / 4.5, rtol=1e-6)
    np.testing.assert_allclose(freqs[0].numpy(), np.full(3, 1 / 3), rtol=1e-6)  # padding: no data, uniform
    # a uniform start over 10 classes scored about -25 bits/spike at the first validation
    run = train_run(tiny_cfg("loss.likelihood=categorical", "train.max_steps=2", "train.eval_every=2"),
                    runs_dir=tmp_path, recordings=[reach], quiet=True)
    with open(run / "valid_log.csv") as handle:
        first = next(csv.DictReader(handle))
    assert float(first["val_rollout_bps"]) > -0.5


def test_categorical_runs_report_the_counts_their_k_truncates(tmp_path, reach, capsys):
    """K=1 truncates every count of 2 or more: said at training start, and in metrics.json and the
    report of an evaluation, counted independently here from the test windows."""
    import json

    from neurohorizon.evaluation.evaluate import _eval_data, evaluate_run
    from neurohorizon.evaluation.loading import load_run

    run = train_run(tiny_cfg("loss.likelihood=categorical", "loss.options.max_count=1", "train.max_steps=2",
                             "train.eval_every=2"), runs_dir=tmp_path, recordings=[reach])
    assert re.search(r"categorical likelihood: [\d,]+ of [\d,]+ training target counts .* exceed K=1 .* on 24 training windows",
                     capsys.readouterr().out)
    out = evaluate_run(run, baselines=False, n_samples=2, log=lambda *a: None)
    report = json.loads((out / "metrics.json").read_text())["count_truncation"]
    _, test, _ = _eval_data(load_run(run), None, "error", {})
    targets = np.concatenate([test[i]["target_counts"].ravel() for i in range(len(test))])
    assert report == {"max_count": 1, "n_truncated": int((targets > 1).sum()), "n_total": targets.size,
                      "fraction": pytest.approx((targets > 1).mean())}
    assert report["n_truncated"] > 0 and "exceed K=1 and fall in the overflow class" in (out / "report.md").read_text()


def test_a_resume_on_other_units_is_a_clear_error(tmp_path, reach):
    half = train_run(tiny_cfg(), runs_dir=tmp_path, recordings=[reach], quiet=True, stop_after=2)
    other = generate("reach", **{**SMALL_REACH, "n_neurons": SMALL_REACH["n_neurons"] + 2})
    with pytest.raises(ValueError, match=r"last.pt: --resume needs the run's own data; its units differ \(26 new, .*; 24 missing"):
        train_run(None, resume=half, recordings=[other])
    assert load_checkpoint(half / "last.pt")["step"] == 2  # nothing was touched


def test_run_folder_holds_config_splits_and_never_overwrites(tmp_path, reach):
    cfg = tiny_cfg("train.max_steps=2", "train.eval_every=2")
    first = train_run(cfg, runs_dir=tmp_path, recordings=[reach], quiet=True)
    second = train_run(cfg, runs_dir=tmp_path, recordings=[reach], quiet=True)
    assert first != second
    for name in ("config.yaml", "splits.json", "vocab.json", "train_log.csv", "valid_log.csv", "last.pt", "best.pt"):
        assert (first / name).exists(), name
    state = load_checkpoint(first / "best.pt")
    for key in ("optimizer", "scheduler", "rng", "config", "vocab", "train_state"):
        assert key in state
    with open(first / "train_log.csv") as handle:  # each step logs the rate it used (warm-up: 1/2, 2/2)
        assert [float(r["lr"]) for r in csv.DictReader(handle)] == pytest.approx([cfg.train.lr / 2, cfg.train.lr])


def test_eps_is_logged_every_step_by_default(tmp_path, reach):
    """The issue asks for eps every step: the default log_every is 1, and each row holds the eps
    the linear schedule gives that step (progress counted from 0)."""
    from neurohorizon.config import TrainConfig
    from neurohorizon.training.schedules import ScheduleConfig, teacher_forcing_prob

    assert TrainConfig().log_every == 1
    cfg = tiny_cfg("sampling.kind=linear", "sampling.unit=step", "sampling.n=4", "sampling.floor=0.1",
                   f"train.log_every={TrainConfig().log_every}")
    run = train_run(cfg, runs_dir=tmp_path, recordings=[reach], quiet=True)
    with open(run / "train_log.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == list(range(1, 9))
    want = [teacher_forcing_prob(ScheduleConfig(kind="linear", unit="step", n=4, floor=0.1), i, 0) for i in range(8)]
    assert [float(r["eps"]) for r in rows] == pytest.approx(want)
    assert want[:5] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.1])


def test_a_run_being_trained_cannot_be_trained_by_a_second_process(tmp_path, reach):
    """While one process holds the run's lock, `train --resume` of it is refused, naming that pid."""
    import os

    from neurohorizon.runs import training_lock

    run = train_run(tiny_cfg("train.max_steps=4"), runs_dir=tmp_path, recordings=[reach], quiet=True, stop_after=2)
    busy = f"another process \\(pid {os.getpid()}\\) is training this run"
    with training_lock(run), pytest.raises(RuntimeError, match=busy):  # the lock: the first process, still training
        train_run(None, resume=run, recordings=[reach], quiet=True)
    assert load_checkpoint(run / "last.pt")["step"] == 2  # untouched
    train_run(None, resume=run, recordings=[reach], quiet=True)  # the lock is gone with its holder
    assert load_checkpoint(run / "last.pt")["step"] == 4


def test_best_checkpoint_is_chosen_by_rollout_bps(tmp_path, reach):
    run = train_run(tiny_cfg(), runs_dir=tmp_path, recordings=[reach], quiet=True)
    with open(run / "valid_log.csv") as handle:
        rows = list(csv.DictReader(handle))
    best = max(rows, key=lambda r: float(r["val_rollout_bps"]))
    assert load_checkpoint(run / "best.pt")["step"] == int(best["step"])


def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path, reach, monkeypatch):
    from neurohorizon.losses import Poisson

    calls = {"n": 0}
    original = Poisson.nll

    def exploding(self, params, counts, **kw):
        calls["n"] += 1
        out = original(self, params, counts, **kw)
        return out * float("nan") if calls["n"] > 3 or calls["n"] < 0 else out

    monkeypatch.setattr(Poisson, "nll", exploding)
    cfg = tiny_cfg("train.checkpoint_every=1", "train.eval_every=100")
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 4; training stopped\. \S+last\.pt holds the "
                                               r"weights that gave this\. A resume replays the same steps exactly"):
        train_run(cfg, runs_dir=tmp_path, recordings=[reach], quiet=True)
    run = next(tmp_path.iterdir())
    assert load_checkpoint(run / "last.pt")["step"] == 3
    # with the checkpoint older than the step before, the message says which step it holds
    calls["n"] = 0
    cfg = tiny_cfg("train.checkpoint_every=2", "train.eval_every=100")
    with pytest.raises(TrainingDiverged, match=r"at step 4; .*last\.pt holds the last checkpoint before it \(step 2\)"
                                               r"\. A resume"):
        train_run(cfg, runs_dir=tmp_path / "older", recordings=[reach], quiet=True)
    # diverging before the first checkpoint says so instead of pointing to a file that is not there
    calls["n"] = -10
    with pytest.raises(TrainingDiverged, match="step 1; training stopped. No checkpoint had been saved yet"):
        train_run(tiny_cfg("train.checkpoint_every=100", "train.eval_every=100"), runs_dir=tmp_path / "early",
                  recordings=[reach], quiet=True)


def test_scheduled_sampling_feeds_back_model_predictions(tmp_path, reach):
    from neurohorizon.data.dataset import collate
    from neurohorizon.data.prepare import prepare_data
    from neurohorizon.losses import build_likelihood
    from neurohorizon.model.feedback import feedback_counts
    from neurohorizon.training.run import build_model
    from neurohorizon.training.trainer import Trainer

    cfg = tiny_cfg("sampling.feedback=mean", "model.overrides.dropout=0.5")
    data = prepare_data(cfg.data, recordings=[reach])
    lik = build_likelihood("poisson")
    model = build_model(cfg, data.vocab.tokens, lik)
    trainer = Trainer(model=model, likelihood=lik, data=data, cfg=cfg, run_dir=tmp_path, device=torch.device("cpu"))
    batch = collate([data.train[i] for i in range(4)])
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(trainer.model_inputs(batch, 1.0, gen), batch["target_counts"])
    model.train()  # as in a training step, dropout 0.5 on
    fed = trainer.model_inputs(batch, 0.0, gen)  # eps = 0: every bin takes the model's own output
    assert model.training  # the pass ran without dropout (as rollout does), and training mode is back
    model.eval()
    expected = feedback_counts(lik, model(batch, batch["target_counts"]), "mean")
    torch.testing.assert_close(fed, expected)
    model.train()
    mixed = trainer.model_inputs(batch, 0.5, torch.Generator().manual_seed(1))
    from_truth = (mixed == batch["target_counts"]).all(-1)
    assert 0 < from_truth.float().mean() < 1  # whole bins come from truth or prediction
    cfg.sampling.feedback = "sample"  # sampled counts: integers, reproducible from the generator
    a = trainer.model_inputs(batch, 0.0, torch.Generator().manual_seed(5))
    b = trainer.model_inputs(batch, 0.0, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and torch.equal(a, a.round()) and not torch.equal(a, batch["target_counts"])
    # predictions from a free-running rollout: at eps = 0 exactly the counts inference feeds back
    cfg.sampling.predictions_from = "rollout"
    fed = trainer.model_inputs(batch, 0.0, torch.Generator().manual_seed(7))
    assert model.training
    model.eval()
    rolled = model.rollout(batch, lik, n_steps=fed.shape[1], feedback="sample", generator=torch.Generator().manual_seed(7))
    assert torch.equal(fed, rolled["counts"][0]) and not torch.equal(fed, a)
    with pytest.raises(ValueError, match="predictions_from must be one of"):
        Trainer(model=model, likelihood=lik, data=data, cfg=tiny_cfg("sampling.predictions_from=future"),
                run_dir=tmp_path / "bad", device=torch.device("cpu"))


def _torchrun_cmd(nproc: int, runs: Path, *args: str) -> list[str]:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    return [torchrun, "--standalone", f"--nproc_per_node={nproc}", "-m", "neurohorizon",
            "--runs-dir", str(runs), *args]


def _one_thread_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _run_torchrun(tmp_path: Path, cfg, nproc: int) -> Path:
    cfg_path = tmp_path / f"cfg{nproc}.yaml"
    save_config(cfg, cfg_path)
    runs = tmp_path / f"runs{nproc}"
    done = subprocess.run(_torchrun_cmd(nproc, runs, "train", str(cfg_path)), capture_output=True, text=True,
                          timeout=600, env=_one_thread_env())
    assert done.returncode == 0, done.stderr[-3000:]
    return next(runs.iterdir())


def test_ctrl_c_under_torchrun_saves_once_and_the_resume_continues_exactly(tmp_path):
    """Ctrl-C reaches torchrun, which forwards it to both ranks: they stop after the same step,
    rank 0 saves last.pt, and a torchrun resume gives exactly the uninterrupted run's losses."""
    import signal
    import time

    cfg = tiny_cfg("train.max_steps=40", "train.eval_every=40", "train.checkpoint_every=1000")
    full = _run_torchrun(tmp_path, cfg, 2)
    save_config(cfg, tmp_path / "cut.yaml")
    runs = tmp_path / "cut"
    launcher = subprocess.Popen(_torchrun_cmd(2, runs, "train", str(tmp_path / "cut.yaml")),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_one_thread_env())
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (runs.exists() and any(runs.glob("*/train_log.csv"))
                                                 and len(losses(next(runs.iterdir()))) >= 3):
        time.sleep(0.2)
    launcher.send_signal(signal.SIGINT)
    _, err = launcher.communicate(timeout=120)
    assert launcher.returncode != 0 and err.count("last.pt saved") == 1, err[-3000:]  # said once, by rank 0
    assert "continue with `torchrun --nproc_per_node=2 -m neurohorizon train --resume" in err
    half = next(runs.iterdir())
    step = load_checkpoint(half / "last.pt")["step"]
    assert 3 <= step < 40 and len(losses(half)) == step, err[-3000:]
    resumed = subprocess.run(_torchrun_cmd(2, tmp_path / "unused", "train", "--resume", str(half)),
                             capture_output=True, text=True, timeout=600, env=_one_thread_env())
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert losses(half) == pytest.approx(losses(full), rel=1e-6)
    a, b = load_checkpoint(full / "last.pt")["model"], load_checkpoint(half / "last.pt")["model"]
    for key in (k for k in a if torch.is_tensor(a[k])):
        torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-7)


def test_two_gloo_processes_match_one_process(tmp_path):
    """DDP on CPU (gloo): 2 ranks x half batch == 1 rank x the same global batch."""
    cfg = tiny_cfg("train.max_steps=4", "train.eval_every=4", "train.batch_size=8")
    one = _run_torchrun(tmp_path, cfg, 1)
    two = _run_torchrun(tmp_path, cfg, 2)
    a, b = losses(one), losses(two)
    assert len(a) == len(b) == 4
    assert a == pytest.approx(b, rel=1e-4, abs=1e-5)
    wa, wb = load_checkpoint(one / "last.pt")["model"], load_checkpoint(two / "last.pt")["model"]
    for key in (k for k in wa if torch.is_tensor(wa[k])):
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-4, atol=1e-5)


def test_event_conditioned_run_trains_loads_and_forecasts(tmp_path, reach):
    from neurohorizon.evaluation.forecast import forecast
    from neurohorizon.evaluation.loading import load_run

    cfg = tiny_cfg("train.max_steps=2", "train.eval_every=2", "data.events=[target_on, go_cue]")
    run = train_run(cfg, runs_dir=tmp_path, recordings=[reach], quiet=True)
    loaded = load_run(run)
    assert loaded.model.event_names == ("target_on", "go_cue")
    go = float(reach.trials.events["go_cue"][3])
    fc = forecast(loaded, reach, start=go, n_samples=2)
    assert fc.mean.shape == (50, reach.n_units) and fc.samples.shape[0] == 2
    assert np.isfinite(fc.mean).all()
    # a recording without those events cannot feed this model: a clear error, not a silent forecast
    from neurohorizon.data.recording import Recording

    bare = Recording.from_arrays(session_id=reach.session_id, spike_times=reach.spike_times,
                                 unit_ids=reach.unit_ids, spike_units=reach.spike_units,
                                 domain=reach.domain)
    with pytest.raises(ValueError, match=r"no trial event\(s\) \['target_on', 'go_cue'\]"):
        forecast(loaded, bare, start=go, n_samples=2)


def test_condition_cued_run_saves_the_expanded_event_types(tmp_path, reach):
    from neurohorizon.evaluation.forecast import forecast
    from neurohorizon.evaluation.loading import load_run

    cfg = tiny_cfg("train.max_steps=2", "train.eval_every=2", "data.events=[go_cue@condition]")
    run = train_run(cfg, runs_dir=tmp_path, recordings=[reach], quiet=True)
    labels = sorted(set(reach.trials.condition.astype(str)))
    expanded = tuple(f"go_cue@condition={c}" for c in labels)
    assert load_run(run).model.event_names == expanded
    assert tuple(load_config(run / "config.yaml").data.events) == expanded
    go = float(reach.trials.events["go_cue"][3])
    assert np.isfinite(forecast(load_run(run), reach, start=go, n_samples=2).mean).all()
    train_run(None, resume=run, recordings=[reach])  # the resumed run rebuilds the same model


def test_a_binding_time_cap_shortens_the_schedules_so_they_finish(tmp_path, reach, monkeypatch, capsys):
    """max_steps sets the LR cosine and the SS schedule; when max_minutes binds they are shortened
    to the steps the clock allows (or, with fit_to_time=false, a warning says they will not finish)."""
    import types

    import neurohorizon.training.trainer as trainer

    clock = iter(range(10**6))  # every reading advances 1 s: independent of machine speed
    monkeypatch.setattr(trainer, "time", types.SimpleNamespace(monotonic=lambda: float(next(clock))))
    monkeypatch.setattr(trainer, "PACE_STEPS", 3)
    capped = ("train.max_steps=100000", "train.max_minutes=1", "train.eval_every=1000", "sampling.kind=linear",
              "sampling.warmup=1000", "sampling.n=50000", "sampling.floor=0.1")
    run = train_run(tiny_cfg(*capped), runs_dir=tmp_path / "fit", recordings=[reach], quiet=True)
    assert "the LR cosine and the scheduled-sampling schedule now advance" in capsys.readouterr().out
    with open(run / "train_log.csv") as handle:
        rows = list(csv.DictReader(handle))
    state = load_checkpoint(run / "last.pt")
    assert 10 < state["step"] < 60 and state["train_state"]["schedule_rate"] > 1000
    assert state["train_state"]["schedule_step"] >= 100000 - 1e-6
    assert float(rows[-1]["eps"]) == 0.1  # the sampling schedule reached its floor
    assert float(rows[-1]["lr"]) == pytest.approx(1e-4, rel=0.02)  # the last step ran at ~10 % of train.lr
    train_run(tiny_cfg(*capped, "train.fit_to_time=false"), runs_dir=tmp_path / "warn", recordings=[reach], quiet=True)
    assert "will not finish (lower train.max_steps)" in capsys.readouterr().out
    train_run(tiny_cfg(), runs_dir=tmp_path / "fits", recordings=[reach], quiet=True)
    out = capsys.readouterr().out
    assert "will not finish" not in out and "now advance" not in out


def test_a_cap_shorter_than_the_pace_check_still_fits_the_schedules_or_says_so(tmp_path, reach, monkeypatch, capsys):
    """A cap of a minute or less allows fewer steps than PACE_STEPS: an early check (10 steps) fits
    the schedules into it, and a cap too short even for that says the run is not annealed."""
    import types

    import neurohorizon.training.trainer as trainer

    clock = iter(range(10**6))  # every reading advances 1 s
    monkeypatch.setattr(trainer, "time", types.SimpleNamespace(monotonic=lambda: float(next(clock))))
    capped = ("train.max_steps=1000", "train.eval_every=1000", "sampling.kind=linear", "sampling.n=800")
    run = train_run(tiny_cfg(*capped, "train.max_minutes=1"), runs_dir=tmp_path / "fit", recordings=[reach], quiet=True)
    state = load_checkpoint(run / "last.pt")
    assert 15 < state["step"] < 60 and state["train_state"]["schedule_step"] >= 1000 - 1e-6  # annealed
    assert "warning: train.max_minutes" not in capsys.readouterr().out
    train_run(tiny_cfg(*capped, "train.max_minutes=0.1"), runs_dir=tmp_path / "short", recordings=[reach], quiet=True)
    said = capsys.readouterr().out
    assert "warning: train.max_minutes=0.1 stopped the run at step" in said and "the model is not annealed" in said


def test_a_resume_keeps_what_is_left_of_the_time_budget(tmp_path, reach, monkeypatch, capsys):
    """train.max_minutes is the run's total: a run paused and resumed trains as long as one that was
    not, a resume of a run whose budget is spent does nothing, and train.max_minutes=M extends it."""
    import types

    import neurohorizon.training.trainer as trainer

    clock = iter(range(10**6))  # every reading advances 1 s
    monkeypatch.setattr(trainer, "time", types.SimpleNamespace(monotonic=lambda: float(next(clock))))
    capped = ("train.max_steps=1000", "train.max_minutes=0.5", "train.eval_every=1000", "train.fit_to_time=false")
    whole = train_run(tiny_cfg(*capped), runs_dir=tmp_path / "whole", recordings=[reach], quiet=True)
    n_whole = load_checkpoint(whole / "last.pt")["step"]
    paused = train_run(tiny_cfg(*capped), runs_dir=tmp_path / "paused", recordings=[reach], quiet=True, stop_after=5)
    assert load_checkpoint(paused / "last.pt")["step"] == 5
    train_run(None, resume=paused, recordings=[reach], quiet=True)
    state = load_checkpoint(paused / "last.pt")
    assert 5 < n_whole < 30 and abs(state["step"] - n_whole) <= 2  # not 5 more than the whole run
    assert 30 <= state["train_state"]["train_seconds"] < 36
    capsys.readouterr()
    train_run(None, resume=paused, recordings=[reach], quiet=True)
    assert "has used its train.max_minutes=0.5" in capsys.readouterr().out
    assert load_checkpoint(paused / "last.pt")["step"] == state["step"]
    train_run(None, resume=paused, recordings=[reach], quiet=True, max_minutes=1.0)
    longer = load_checkpoint(paused / "last.pt")
    assert longer["step"] > state["step"] + 5 and longer["config"]["train"]["max_minutes"] == 1.0
    assert "max_minutes: 1.0" in (paused / "config.yaml").read_text()


@pytest.mark.parametrize("prior", ["psth", "psth_factors"])
def test_rate_prior_run_saves_its_prior_and_forecasts_with_it(tmp_path, reach, prior, monkeypatch):
    from neurohorizon.data import prepare
    from neurohorizon.data.factors import FactorPrior
    from neurohorizon.evaluation.evaluate import _eval_data, evaluate_run
    from neurohorizon.evaluation.forecast import forecast
    from neurohorizon.evaluation.loading import load_run
    from neurohorizon.evaluation.metrics import bits_per_spike

    factors = ["data.rate_prior_factors=2"] if prior == "psth_factors" else []
    run = train_run(tiny_cfg("train.max_steps=2", "train.eval_every=2", f"data.rate_prior={prior}", *factors),
                    runs_dir=tmp_path, recordings=[reach], quiet=True)
    loaded = load_run(run)
    assert loaded.model.rate_prior and isinstance(loaded.prior, FactorPrior) == (prior == "psth_factors")
    table = getattr(loaded.prior, "table_prior", loaded.prior)
    assert table.event == "go_cue" and sorted(table.labels) == sorted(set(reach.trials.condition.astype(str)))
    go = float(reach.trials.events["go_cue"][3])
    assert np.isfinite(forecast(loaded, reach, start=go, n_samples=2).mean).all()
    with monkeypatch.context() as patch:  # evaluation scores with the saved prior, never a refit
        patch.setattr(prepare, "fit_prior", lambda *a, **k: pytest.fail("evaluation refitted the prior"))
        prepared, test, _ = _eval_data(loaded, None, "error", {})
    assert prepared.prior is loaded.prior and test.prior is loaded.prior
    assert prepared.train.prior is None and "prior_counts" not in prepared.valid[0]  # baselines use none
    metrics = json.loads((evaluate_run(run, baselines=False, n_samples=2, horizons=(4,), log=lambda *a: None)
                          / "metrics.json").read_text())
    items = [test[i] for i in range(len(test))]  # the prior alone, scored independently of evaluate
    expected = bits_per_spike(np.concatenate([it["prior_counts"][:4] for it in items]).astype(float),
                              np.concatenate([it["target_counts"][:4] for it in items]).astype(float))
    assert metrics["results"]["model_prior"]["4"]["pooled"]["rollout"]["fp_bps"] == pytest.approx(expected, abs=1e-6)
    for bad, message in (("loss.likelihood=categorical", "needs a log-rate likelihood"),
                         ("data.align_event=null", "needs data.align_event"),
                         ("data.rate_prior=glm", "must be 'none', 'psth' or 'psth_factors'"),
                         *[("data.rate_prior_factors=0", "rate_prior_factors must be an integer >= 1")] * (prior != "psth"),
                         *[("data.rate_prior_factors=auto", "sets the factors of data.rate_prior=psth_factors, not of "
                            "data.rate_prior=psth")] * (prior == "psth")):
        with pytest.raises(ValueError, match=message):
            train_run(tiny_cfg(f"data.rate_prior={prior}", bad), runs_dir=tmp_path / "bad", recordings=[reach], quiet=True)
    assert not (tmp_path / "bad").exists()  # refused before a run folder was made


def test_auto_number_of_factors_is_chosen_on_validation_and_saved_in_the_run(tmp_path, reach, capsys):
    from neurohorizon.data.factors import n_factors
    from neurohorizon.evaluation.loading import load_run

    run = train_run(tiny_cfg("train.max_steps=2", "train.eval_every=2", "data.rate_prior=psth_factors",
                             "data.rate_prior_factors=auto"), runs_dir=tmp_path, recordings=[reach])
    assert "data.rate_prior_factors=auto: chose" in capsys.readouterr().out
    saved = load_config(run / "config.yaml").data  # the choice, so evaluation refits the same prior
    loaded = load_run(run)
    k = n_factors(loaded.prior)
    assert isinstance(saved.rate_prior_factors, int)
    assert saved.rate_prior == ("psth_factors" if k else "psth") and (k == 0 or saved.rate_prior_factors == k)
    with pytest.raises(ValueError, match="data.rate_prior_factors must be an integer >= 1"):
        train_run(tiny_cfg("data.rate_prior=psth_factors", "data.rate_prior_factors=many"), runs_dir=tmp_path / "bad",
                  recordings=[reach], quiet=True)


def test_slow_dynamics_around_the_prior_train_save_and_reload(tmp_path, reach):
    from neurohorizon.evaluation.loading import load_run

    run = train_run(tiny_cfg("train.max_steps=2", "train.eval_every=2", "data.rate_prior=psth_factors",
                             "data.rate_prior_factors=0", "data.rate_prior_dynamics=1"), runs_dir=tmp_path,
                    recordings=[reach], quiet=True)
    loaded = load_run(run)
    assert loaded.prior.dynamics.loadings.shape[1] == 1 and loaded.prior.loadings.shape[1] == 0
    assert np.abs(loaded.prior.dynamics.loadings).max() > 0
    for bad, match in (("data.rate_prior=psth", "set data.rate_prior=psth_factors"),
                       ("data.rate_prior_dynamics=-1", "must be an integer >= 0"),
                       ("data.rate_prior_dynamics_tau_ms=0", "must be a number > 0")):
        overrides = ["data.rate_prior=psth_factors", "data.rate_prior_dynamics=1", bad]
        with pytest.raises(ValueError, match=match):
            train_run(tiny_cfg(*overrides), runs_dir=tmp_path / "bad", recordings=[reach], quiet=True)
    with pytest.raises(ValueError, match=r"data.rate_prior_factors must be an integer >= 1 \(>= 0 with"):
        train_run(tiny_cfg("data.rate_prior=psth_factors", "data.rate_prior_factors=0"), runs_dir=tmp_path / "bad",
                  recordings=[reach], quiet=True)
    assert not (tmp_path / "bad").exists()


def test_unit_dropout_removes_exactly_the_dropped_units_spikes_and_counts():
    from neurohorizon.training.trainer import drop_units

    g = torch.Generator().manual_seed(0)
    B, N, S, V = 3, 6, 40, 20
    units = torch.stack([torch.randperm(V - 1, generator=g)[:N] + 1 for _ in range(B)])
    units[2, 4:] = 0  # padding units in the last window
    unit_mask = units != 0
    pick = torch.randint(0, N, (B, S), generator=g)
    spike_units = units.gather(1, pick)
    spike_mask = spike_units != 0
    spike_mask[0, -5:] = False  # padding spikes
    spike_units[0, -5:] = 0
    batch = {"units": units, "unit_mask": unit_mask, "spike_units": spike_units, "spike_mask": spike_mask,
             "context_counts": torch.ones(B, 4, N), "target_counts": torch.ones(B, 5, N)}
    out = drop_units(batch, 0.5, torch.Generator().manual_seed(3))
    keep = out["unit_mask"]
    assert (keep <= unit_mask).all() and (keep.sum(1) > 0).all() and (~keep & unit_mask).any()
    for b in range(B):
        dropped = {int(u) for u, m, k in zip(units[b], unit_mask[b], keep[b]) if m and not k}
        expect = torch.tensor([bool(m) and int(u) not in dropped for u, m in zip(spike_units[b], spike_mask[b])])
        assert torch.equal(out["spike_mask"][b], expect)
    for key in ("context_counts", "target_counts"):
        assert torch.equal(out[key], keep[:, None, :].float().expand_as(batch[key]))


def test_anchored_training_windows_train_and_need_an_align_event(tmp_path, reach):
    run = train_run(tiny_cfg("train.max_steps=2", "train.eval_every=2", "data.train_anchor_fraction=0.5",
                             "data.train_anchor_jitter_ms=40"), runs_dir=tmp_path, recordings=[reach], quiet=True)
    assert load_checkpoint(run / "last.pt")["step"] == 2
    with pytest.raises(ValueError, match="train_anchor_fraction > 0 needs data.align_event"):
        train_run(tiny_cfg("data.train_anchor_fraction=0.5", "data.align_event=null"), runs_dir=tmp_path / "bad",
                  recordings=[reach], quiet=True)
    # settings that would be silently ignored without the one they modify
    for extra, match in ((["data.train_anchor_jitter_ms=40"], "train_anchor_jitter_ms .* needs data.train_anchor_fraction"),
                         (["data.align_offset_ms=-500", "data.align_event=null"], "align_offset_ms .* set that too")):
        with pytest.raises(ValueError, match=match):
            train_run(tiny_cfg(*extra), runs_dir=tmp_path / "bad", recordings=[reach], quiet=True)
    assert not (tmp_path / "bad").exists()


def test_weight_average_is_an_exact_ema_resumes_exactly_and_is_what_loads(tmp_path, reach, one_thread, monkeypatch):
    from neurohorizon.evaluation.loading import load_run
    from neurohorizon.training.trainer import Trainer

    raw_after_each_step = []
    step = Trainer.train_step

    def recording(self, batch):
        out = step(self, batch)
        tensors = [*self.raw_model.named_parameters(), *self.raw_model.named_buffers()]
        raw_after_each_step.append({k: v.detach().clone() for k, v in tensors})
        return out

    monkeypatch.setattr(Trainer, "train_step", recording)
    cfg = tiny_cfg("train.ema_decay=0.75", "train.max_steps=6", "train.eval_every=3")
    full = train_run(cfg, runs_dir=tmp_path / "a", recordings=[reach], quiet=True)
    expected = dict(raw_after_each_step[0])  # the average starts at the first step's weights
    for weights in raw_after_each_step[1:]:
        expected = {k: 0.75 * expected[k] + 0.25 * w if w.is_floating_point() else w for k, w in weights.items()}
    state = load_checkpoint(full / "last.pt")
    assert state["ema_n_averaged"] == 6
    saved = [k for k in expected if k in state["ema_model"]]  # non-persistent buffers are not saved
    assert len(saved) > 20
    for key in saved:
        torch.testing.assert_close(state["ema_model"][key], expected[key], rtol=1e-6, atol=1e-7)
    assert not torch.equal(state["ema_model"]["ro_bin.weight"], state["model"]["ro_bin.weight"])
    best = load_checkpoint(full / "best.pt")
    loaded = load_run(full)
    assert torch.equal(loaded.model.state_dict()["ro_bin.weight"], best["ema_model"]["ro_bin.weight"])

    half = train_run(cfg, runs_dir=tmp_path / "b", recordings=[reach], quiet=True, stop_after=4)
    train_run(None, resume=half, recordings=[reach])
    resumed = load_checkpoint(half / "last.pt")
    for key in saved:
        assert torch.equal(state["ema_model"][key], resumed["ema_model"][key]), key
    with pytest.raises(ValueError, match="ema_decay must be in"):
        train_run(tiny_cfg("train.ema_decay=1.0"), runs_dir=tmp_path / "c", recordings=[reach], quiet=True)


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])  # Ctrl-C, or a scheduler's preemption
def test_ctrl_c_saves_the_step_and_a_resume_continues_exactly(tmp_path, reach, one_thread, monkeypatch, signame):
    import os
    import signal

    from neurohorizon.training.trainer import Trainer

    before = signal.getsignal(getattr(signal, signame))

    cfg = tiny_cfg("sampling.kind=linear", "sampling.n=6", "train.checkpoint_every=100")
    full = train_run(cfg, runs_dir=tmp_path / "a", recordings=[reach], quiet=True)
    step = Trainer.train_step

    def interrupted_at_5(self, batch):
        out = step(self, batch)
        if self.state.step == 4:  # the 5th step: Ctrl-C arrives while it runs
            os.kill(os.getpid(), getattr(signal, signame))
        return out

    monkeypatch.setattr(Trainer, "train_step", interrupted_at_5)
    with pytest.raises(KeyboardInterrupt, match="stopped at step 5; last.pt saved"):
        train_run(cfg, runs_dir=tmp_path / "b", recordings=[reach], quiet=True)
    monkeypatch.setattr(Trainer, "train_step", step)
    assert signal.getsignal(getattr(signal, signame)) is before  # restored
    half = next((tmp_path / "b").iterdir())
    assert load_checkpoint(half / "last.pt")["step"] == 5
    train_run(None, resume=half, recordings=[reach])
    a, b = load_checkpoint(full / "last.pt"), load_checkpoint(half / "last.pt")
    for key, value in a["model"].items():
        if torch.is_tensor(value):
            assert torch.equal(value, b["model"][key]), key
    assert losses(full) == losses(half)


def test_a_resume_drops_log_rows_after_its_checkpoint(tmp_path, reach, one_thread):
    import shutil

    cfg = tiny_cfg()
    full = train_run(cfg, runs_dir=tmp_path / "a", recordings=[reach], quiet=True)
    half = train_run(cfg, runs_dir=tmp_path / "b", recordings=[reach], quiet=True, stop_after=4)
    shutil.copy(half / "last.pt", tmp_path / "step4.pt")
    train_run(None, resume=half, recordings=[reach])
    # a hard kill (no Ctrl-C handler) after step 8 was logged but before its checkpoint: the
    # newest checkpoint is step 4's, and the rows of steps 5-8 are redone on resume
    shutil.copy(tmp_path / "step4.pt", half / "last.pt")
    train_run(None, resume=half, recordings=[reach])
    with open(half / "train_log.csv") as handle:
        steps = [int(row["step"]) for row in csv.DictReader(handle)]
    with open(half / "valid_log.csv") as handle:
        valid_steps = [int(row["step"]) for row in csv.DictReader(handle)]
    assert steps == list(range(1, 9)) and valid_steps == [4, 8] and losses(full) == losses(half)


@pytest.mark.parametrize("settings, said", [
    (["sampling.kind=linear", "sampling.warmup=5", "sampling.n=900"], "ε is still 0.98 at the last step"),
    (["sampling.kind=linear", "sampling.warmup=20"], "never starts, the whole run is teacher forcing"),
    (["sampling.kind=linear", "sampling.warmup=2", "sampling.n=10", "sampling.floor=0.1"], None),
])
def test_schedules_that_cannot_finish_are_warned_about(tmp_path, reach, settings, said):
    from neurohorizon.data.prepare import prepare_data
    from neurohorizon.losses import build_likelihood
    from neurohorizon.training.run import build_model
    from neurohorizon.training.trainer import Trainer

    cfg = tiny_cfg("train.max_steps=20", "train.warmup_steps=2", *settings)
    data = prepare_data(cfg.data, recordings=[reach])
    lik = build_likelihood("poisson")
    trainer = Trainer(model=build_model(cfg, data.vocab.tokens, lik), likelihood=lik, data=data, cfg=cfg,
                      run_dir=tmp_path, device=torch.device("cpu"))
    warnings = " ".join(trainer.schedule_warnings())
    assert (said in warnings) if said else not warnings


def test_a_global_batch_smaller_than_the_processes_is_refused_before_any_folder(tmp_path, reach, monkeypatch):
    """Under torchrun each rank takes batch_size / world windows a step: at least one each."""
    monkeypatch.setattr("neurohorizon.training.distributed.world_size", lambda: 2)
    with pytest.raises(ValueError, match="train.batch_size=1 is the global batch, split over 2 processes"):
        train_run(tiny_cfg("train.batch_size=1"), runs_dir=tmp_path / "runs", recordings=[reach], quiet=True)
    assert not (tmp_path / "runs").exists()
