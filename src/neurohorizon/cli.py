"""The `neurohorizon` command line. Each subcommand writes into a new run folder."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import warnings
from pathlib import Path

from neurohorizon.config import key_reference

MAX_INSPECT_BIN_MS = 1000  # inspect's statistics smooth over 100 ms; its raster shows 10 s

DATA_HELP = (
    "data to use: 'synthetic:reach' or 'synthetic:lorenz' (built-in ground-truth generators), "
    "'recipe:NAME' for a shared dataset (pmd_reach_yu2009, aplysia_bruno2017, adn_peyrache2015) "
    "in ../shared/data (set NEUROHORIZON_DATA=/path/to/data to use another folder), "
    "a NeuroHorizon/brainsets .h5 file, an .nwb file, or a folder of .h5 files"
)
UNKNOWN_UNITS_HELP = (
    "what to do when DATA has units the run was not trained on: 'error' (default) stops and lists them; "
    "'known-only' drops them and uses the units the run knows (an error if it knows none)"
)
BASELINE_SECONDS = 120.0
DEVICE_HELP = "auto (CUDA when available), cpu, cuda or cuda:N; a run trained on a GPU loads on a CPU"

DESCRIPTION = """\
NeuroHorizon forecasts the future spiking of a recorded neural population: from the last
500 ms of spikes it predicts spike counts per neuron in 20 ms bins, 12, 25 and 50 bins
ahead (240, 500 and 1000 ms), with Poisson, negative-binomial, zero-inflated or
categorical count likelihoods.

typical use (RUN: the run folder `train` prints, e.g. runs/reach-20261126-101500):
  neurohorizon demo                                   the whole pipeline on synthetic data
  neurohorizon inspect synthetic:reach                data statistics and likelihood advice
  neurohorizon train data.source=synthetic:reach model.preset=tiny train.max_steps=500
  neurohorizon evaluate RUN --baseline-seconds 30     metrics and figures against the baselines
  neurohorizon forecast RUN --samples 20               forecast the run's own data (or --data DATA)
  neurohorizon study synthetic:reach                  teacher forcing vs scheduled sampling vs parallel

errors are one line; NEUROHORIZON_DEBUG=1 shows the full traceback.
"""


def _options(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"error: option {item!r} must look like key=value")
        key, value = item.split("=", 1)
        out[key] = yaml.safe_load(value)
    return out


def cmd_inspect(args) -> None:
    from neurohorizon.data.sources import load_data
    from neurohorizon.evaluation.inspect import inspect_data
    from neurohorizon.runs import new_run_dir, removed_on_failure, source_name

    if not 1 <= args.bin_size_ms <= MAX_INSPECT_BIN_MS:  # before any folder is made
        raise ValueError(f"--bin-size-ms must be in [1, {MAX_INSPECT_BIN_MS}] (milliseconds; the statistics smooth "
                         f"rates over 100 ms and the raster shows 10 s), got {args.bin_size_ms:g}")
    recordings = load_data(args.data, **_options(args.option))
    out = new_run_dir(args.runs_dir, f"inspect-{source_name(args.data)}")
    with removed_on_failure(out):  # Ctrl-C or a failure leaves no half-written inspection
        inspect_data(recordings, out, bin_size=args.bin_size_ms / 1000, name=args.data)
    print(f"inspection written to {out}")


def cmd_import(args) -> None:
    from neurohorizon.data.sources import OutputExistsError, import_to_h5

    try:
        paths = import_to_h5(args.data, args.out, overwrite=args.overwrite, **_options(args.option))
    except OutputExistsError as err:
        names = ", ".join(map(str, err.paths))
        raise FileExistsError(f"{names} already exist{'s' if len(err.paths) == 1 else ''}; "
                              "add --overwrite to replace") from None
    for path in paths:
        print(f"wrote {path}")


def cmd_train(args) -> None:
    from neurohorizon.config import load_config
    from neurohorizon.training.run import train_run

    if args.resume:
        given = [x for x in (args.config, *args.overrides) if x is not None]
        budget = [x for x in given if x.startswith("train.max_minutes=")]
        if len(budget) != len(given) or len(budget) > 1:  # a change would break exact continuation silently
            raise ValueError(f"--resume continues {args.resume} with its saved config.yaml; it takes no config "
                             f"or overrides but train.max_minutes=M, the run's new total time budget (got {given}). "
                             "Start a new run to change settings.")
        try:
            minutes = float(budget[0].split("=", 1)[1]) if budget else None
        except ValueError:
            raise ValueError(f"{budget[0]}: train.max_minutes takes a number of minutes") from None
        run_dir = train_run(None, runs_dir=args.runs_dir, resume=Path(args.resume), max_minutes=minutes)
    else:
        config, overrides = args.config, list(args.overrides)
        if config is not None and "=" in config and not Path(config).exists():
            config, overrides = None, [config, *overrides]  # no YAML file: only overrides
        run_dir = train_run(load_config(config, overrides), runs_dir=args.runs_dir)
    if _rank() == 0:  # torchrun: once, not once per rank
        print(f"run folder: {run_dir}")


def cmd_evaluate(args) -> None:
    from neurohorizon.evaluation.evaluate import evaluate_run

    if args.samples < 1:  # before the evaluation folder is made
        raise ValueError(f"--samples must be >= 1, got {args.samples}")
    if not args.baseline_seconds > 0:
        raise ValueError(f"--baseline-seconds must be > 0, got {args.baseline_seconds:g}")
    if args.option and not args.data:
        raise ValueError("--option sets options of --data; without --data the run's own test split is evaluated")
    out = evaluate_run(Path(args.run), data=args.data, data_options=_options(args.option), unknown_units=args.unknown_units,
                       n_samples=args.samples, baselines=not args.no_baselines, device=args.device,
                       baseline_budget_s=args.baseline_seconds)
    print(results_table(json.loads((out / "metrics.json").read_text())))
    print(f"evaluation written to {out} (report.html)")


def results_table(metrics: dict) -> str:
    """Rollout bits/spike per method and horizon, as plain text for the console; again over the
    held-out sessions alone when the run has some."""
    split = metrics.get("split", "test")
    text = _table(metrics, "pooled", f"rollout forecast bits/spike (NLB null), "
                  f"{'test windows' if split == 'test' else split}:")
    held = metrics.get("held_out_sessions") or []
    if held:
        text += "\n" + _table(metrics, "held_out", f"the {len(held)} held-out session(s) alone, never trained on:")
    return text


def _table(metrics: dict, block: str, title: str) -> str:
    horizons = list(metrics["horizons"])
    width = max(len(m) for m in metrics["results"]) + 2
    lines = [title, " " * width + "".join(f"{metrics['horizons'][h]:>20}" for h in horizons)]
    for method, per_h in metrics["results"].items():
        vals = [per_h.get(h, {}).get(block, {}).get("rollout", {}).get("fp_bps") for h in horizons]
        lines.append(f"{method:<{width}}" + "".join(f"{v:>20.3f}" if v is not None else f"{'—':>20}"
                                                    for v in vals))
    return "\n".join(lines)


def cmd_forecast(args) -> None:
    from neurohorizon.evaluation.forecast import forecast_to_files

    if args.samples < 1:
        raise ValueError(f"--samples must be >= 1, got {args.samples}")
    if args.option and not args.data:
        raise ValueError("--option sets options of --data; without --data the run's own data and options are used")
    out = forecast_to_files(Path(args.run), data=args.data, options=_options(args.option), start=args.start,
                            n_samples=args.samples, session=args.session, unknown_units=args.unknown_units,
                            seed=args.seed, device=args.device)
    print(f"forecast written to {out}")


def cmd_demo(args) -> None:
    from neurohorizon.demo import run_demo

    run_demo(runs_dir=args.runs_dir, minutes=args.minutes, quick=args.quick)  # prints the report paths


def cmd_study(args) -> None:
    from neurohorizon.evaluation.study import run_study

    out = run_study(args.data, runs_dir=args.runs_dir, horizons=args.horizons, resume=args.resume,
                    minutes_per_cell=args.minutes_per_cell, preset=args.preset, max_steps=args.steps_per_cell,
                    likelihoods=args.likelihoods, options=_options(args.option) if args.option else None,
                    overrides=args.overrides or None)
    print(f"study written to {out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neurohorizon", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs-dir", default="runs", help="where run folders are created (default: runs)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # --runs-dir also after the command (`neurohorizon train --runs-dir X ...`); SUPPRESS keeps the
    # value given before it when it is not repeated
    runs = argparse.ArgumentParser(add_help=False)
    runs.add_argument("--runs-dir", default=argparse.SUPPRESS, help="where run folders are created (default: runs)")

    _add_inspect(sub, runs)
    _add_import(sub)
    _add_train(sub, runs)
    _add_evaluate(sub)
    _add_forecast(sub)
    _add_demo(sub, runs)
    _add_study(sub, runs)
    return parser


def _add_inspect(sub, runs) -> None:
    p = sub.add_parser("inspect", parents=[runs], help="statistics, figures and a likelihood recommendation for DATA")
    p.add_argument("data", help=DATA_HELP)
    p.add_argument("--bin-size-ms", type=float, default=20.0,
                   help=f"bin size in ms, 1 to {MAX_INSPECT_BIN_MS} (default 20, as data.bin_size_ms)")
    p.add_argument("--option", "-o", action="append", help="source option key=value, e.g. n_neurons=80")
    p.set_defaults(func=cmd_inspect)


def _add_import(sub) -> None:
    p = sub.add_parser("import", help="convert DATA to NeuroHorizon/brainsets HDF5 files")
    p.add_argument("data", help=DATA_HELP)
    p.add_argument("out", help="output .h5 file (one recording) or folder")
    p.add_argument("--option", "-o", action="append", help="source option key=value")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=cmd_import)


def _add_train(sub, runs) -> None:
    p = sub.add_parser("train", parents=[runs], help="train a model from a YAML config plus key=value overrides",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="config keys (section.key=default), settable in the YAML file or as overrides:\n"
                              + key_reference())
    p.add_argument("config", nargs="?", help="YAML config file, e.g. a copy of the demo's "
                   "(src/neurohorizon/configs/demo.yaml in the source tree); omitted = built-in defaults")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_steps=500 model.preset=tiny")
    p.add_argument("--resume", help="continue the run in this run folder from its last checkpoint, with what is "
                   "left of its train.max_minutes (the one override it takes: train.max_minutes=M, a new total)")
    p.set_defaults(func=cmd_train)


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="metrics, baselines and figures for a trained run")
    p.add_argument("run", help="run folder created by `train`")
    p.add_argument("--data", help="evaluate on other data (default: the run's own test split): the test split "
                   "of the run's own sessions in it, every window of new sessions. " + DATA_HELP)
    p.add_argument("--option", "-o", action="append", help="source option key=value for --data")
    p.add_argument("--unknown-units", choices=["known-only", "error"], default="error", help=UNKNOWN_UNITS_HELP)
    p.add_argument("--samples", type=int, default=20, help="sampled trajectories for calibration (default 20)")
    p.add_argument("--no-baselines", action="store_true", help="skip the baselines")
    p.add_argument("--baseline-seconds", type=float, default=BASELINE_SECONDS,
                   help="time budget in seconds of each fitted baseline (the GLMs, GRU, NDT and psth_factors); "
                        "they fit one after another, so they take about 5x this plus setup "
                        f"(default {BASELINE_SECONDS:g})")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.set_defaults(func=cmd_evaluate)


def _add_forecast(sub) -> None:
    p = sub.add_parser("forecast", help="forecast from a trained run; writes NPZ and a figure")
    p.add_argument("run", help="run folder created by `train`")
    p.add_argument("--data", help="data to forecast (default: the run's own data, with its source options). "
                   + DATA_HELP)
    p.add_argument("--option", "-o", action="append", help="source option key=value for --data")
    p.add_argument("--start", type=float, help="forecast onset in s (default: the latest possible)")
    p.add_argument("--session", help="session id when DATA has several")
    p.add_argument("--samples", type=int, default=10, help="sampled trajectories, >= 1 (default 10)")
    p.add_argument("--seed", type=int, help="seed of the sampled trajectories (default: the run's train.seed, so "
                   "a window that `evaluate` scored gets the same draws)")
    p.add_argument("--unknown-units", choices=["known-only", "error"], default="error", help=UNKNOWN_UNITS_HELP)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.set_defaults(func=cmd_forecast)


def _add_demo(sub, runs) -> None:
    p = sub.add_parser("demo", parents=[runs], help="generate, inspect, train, evaluate and report on synthetic reach data")
    p.add_argument("--minutes", type=float, default=9.0, help="training time cap in minutes (default 9)")
    p.add_argument("--quick", action="store_true", help="a smoke version of about 2 minutes (its own cap; --minutes is ignored)")
    p.set_defaults(func=cmd_demo)


def _add_study(sub, runs) -> None:
    p = sub.add_parser("study", parents=[runs], help="the horizon study: teacher forcing vs scheduled sampling vs parallel")
    p.add_argument("data", help=DATA_HELP)
    p.add_argument("--horizons", type=int, nargs="+",
                   help="horizons in bins (default 12 25 50: 240, 500, 1000 ms at 20 ms bins)")
    p.add_argument("--likelihoods", nargs="*",
                   help="extra loss families to compare, trained with teacher forcing "
                        "(any of poisson, negbin, zip, categorical; the same names as loss.likelihood)")
    # no argparse defaults: a resumed study must know which settings were given (STUDY_DEFAULTS fills the rest)
    p.add_argument("--minutes-per-cell", type=float, help="training time cap per cell (default 3)")
    p.add_argument("--steps-per-cell", type=int, help="training steps per cell (default 600)")
    p.add_argument("--preset", help="model preset (default tiny)")
    p.add_argument("--option", "-o", action="append", help="source option key=value")
    p.add_argument("--resume", help="study folder to resume with its saved settings (finished cells are "
                   "skipped, trained ones only evaluated)")
    p.add_argument("overrides", nargs="*", help="config overrides for every cell, right after DATA, "
                   "e.g. data.events=[target_on,go_cue] model.overrides.dropout=0.2")
    p.set_defaults(func=cmd_study)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with _sigterm_as_interrupt(), _plain_warnings():
        return _run(args)


@contextlib.contextmanager
def _plain_warnings():
    """NeuroHorizon's own warnings (about the data, mostly) print as `warning: ...` lines, not as
    Python warnings with a source file and a line of code; other libraries' keep their form."""
    original = warnings.formatwarning

    def plain(message, category, filename, lineno, line=None):
        if issubclass(category, UserWarning) and f"{os.sep}neurohorizon{os.sep}" in filename:
            return f"warning: {message}\n"
        return original(message, category, filename, lineno, line)

    warnings.formatwarning = plain
    try:
        yield
    finally:
        warnings.formatwarning = original


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (a scheduler's stop, `timeout`) acts as Ctrl-C: a half-written evaluation or run
    folder is removed, and training saves last.pt (its own handler, while it trains)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    def interrupt(signum, frame):
        raise KeyboardInterrupt("terminated (SIGTERM)")
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(args) -> int:
    try:
        args.func(args)
    except KeyboardInterrupt as err:  # under torchrun every rank stopped after the same step
        if _rank() == 0:
            print(f"interrupted: {err}" if str(err) else "interrupted", file=sys.stderr)
        return _leave_torchrun(130)
    except (ValueError, OSError, RuntimeError, KeyError) as err:  # OSError: missing, existing, not a folder...
        if os.environ.get("NEUROHORIZON_DEBUG"):  # the full traceback, e.g. for a bug report
            raise
        print(f"error: {err}" + ("" if isinstance(err, ValueError | OSError) else
                                 f" ({type(err).__name__}; NEUROHORIZON_DEBUG=1 shows the traceback)"),
              file=sys.stderr)
        return 2
    return _leave_torchrun(0)


def _rank() -> int:
    dist = sys.modules.get("torch.distributed")  # not imported: not a torchrun worker
    return dist.get_rank() if dist is not None and dist.is_initialized() else 0


def _leave_torchrun(code: int) -> int:
    """A torchrun worker whose ranks all finished together waits for its peers, then exits at once:
    tearing down gloo's threads at interpreter exit sometimes aborts the process (SIGABRT,
    "terminate called without an active exception") after all the work is saved."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_initialized():
        return code
    dist.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
