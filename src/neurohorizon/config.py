"""Run configuration: nested dataclasses, YAML files and dotted command-line overrides.

    cfg = load_config("src/neurohorizon/configs/demo.yaml", ["train.max_steps=200", "model.preset=tiny"])

Only the CLI and the trainer read a `RunConfig`; the model receives plain keyword arguments.
"""

from __future__ import annotations

import dataclasses
import inspect
import textwrap
import types
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from neurohorizon.runs import write_text_atomic


def _yaml_problem(err) -> str:
    """A YAML parser error in one line: what and where (line, column), not the parser's dump."""
    mark = getattr(err, "problem_mark", None)
    what = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"{what} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else what


class ConfigError(ValueError):
    """A bad config file or override; the message names the key."""


@dataclass
class DataConfig:
    source: str = "synthetic:reach"  # synthetic:NAME | recipe:NAME | path to .h5/.nwb | folder
    options: dict = field(default_factory=dict)  # passed to the source loader
    bin_size_ms: float = 20.0  # forecast bin width
    context_ms: float = 500.0  # spikes before the forecast start the model sees
    horizon_ms: float = 1000.0  # longest trained horizon (a whole number of bins: 50 at 20 ms)
    mode: str = "auto"  # auto | trials | continuous
    align_event: str | None = None  # trial event anchoring evaluation windows (e.g. go_cue)
    align_offset_ms: float = 0.0  # forecast start relative to align_event
    train_windows_per_epoch: int = 2048  # random training windows drawn anew each epoch
    # this fraction of them are training trials at align_event instead, onsets jittered within
    # +-train_anchor_jitter_ms: training weighted towards the alignment that is evaluated
    train_anchor_fraction: float = 0.0
    train_anchor_jitter_ms: float = 0.0  # see train_anchor_fraction
    split_seed: int = 0  # seeds the train/valid/test split (of trials, or of time blocks)
    fractions: list = field(default_factory=lambda: [0.7, 0.15, 0.15])  # train, valid, test
    holdout_sessions: list = field(default_factory=list)  # session ids kept whole for the test split
    # trial events the model is told about when they fall in the context (e.g. [target_on,
    # go_cue]): experimenter-controlled cues a closed-loop system knows as they happen
    events: list = field(default_factory=list)
    # "psth": the training trials' condition average at align_event as a log-rate offset of the
    # forecast (data/prior.py); the model learns the single-trial deviation. "psth_factors": that
    # average moved by single-trial latent factors inferred from the context (data/factors.py;
    # the demo's prior). "none": no prior
    rate_prior: str = "none"
    # training windows get the prior without their own trial, as unseen test trials do: the
    # plain average holds 1/n of each training trial's own spikes (data/prior.py)
    rate_prior_leave_one_out: bool = True
    # > 0: keep only the prior's top k population modes (square-root domain), pooling units
    # against the noise of a few trials per condition (data/prior.py); 0: the plain average
    rate_prior_rank: int = 0
    # data.rate_prior=psth_factors: the number of single-trial latent factors that move the prior,
    # inferred from each window's context (data/factors.py). "auto": the best of 0, 1, 2, 4, 8 on
    # the validation trials' forecasts (0 keeps the plain prior); the run's config saves the choice
    rate_prior_factors: int | str = 4
    # data.rate_prior=psth_factors: > 0 adds that many slow latent paths (Ornstein-Uhlenbeck with
    # time constant rate_prior_dynamics_tau_ms) that move the prior within the trial, inferred from
    # the context's last bins and fitted by Laplace-EM (data/dynamics.py); 0: none
    rate_prior_dynamics: int = 0
    rate_prior_dynamics_tau_ms: float = 200.0  # time constant of those slow paths (ms)


@dataclass
class ModelSection:
    preset: str = "small"  # tiny | compact | small | base
    decoder: str = "autoregressive"  # autoregressive | parallel | causal
    overrides: dict = field(default_factory=dict)  # any ModelConfig field, e.g. {dim: 96}


@dataclass
class LossConfig:
    likelihood: str = "poisson"  # poisson | negbin | zip | categorical
    options: dict = field(default_factory=dict)  # e.g. {max_count: 8} (categorical), {dispersion: per_neuron} (negbin)


@dataclass
class SamplingConfig:
    """Scheduled sampling; epsilon is the probability of feeding the ground truth."""

    kind: str = "constant"  # constant | linear | exponential | inverse_sigmoid
    unit: str = "step"  # step | epoch
    warmup: int = 0  # pure teacher forcing before decay starts
    floor: float = 0.0  # epsilon never falls below this
    value: float = 1.0  # constant schedule (1.0 = teacher forcing only)
    n: int = 1000  # linear decay length
    k: float = 0.999  # exponential base (<1) or inverse-sigmoid k (>=1)
    feedback: str = "sample"  # sample | mean: what is fed back, in training AND rollout
    passes: int = 2  # parallel scheduled-sampling passes (>= 2)
    # where the model's own counts come from: "passes" (no-grad teacher-forced passes, the
    # two-pass scheme) or "rollout" (a KV-cached free-running rollout: the inputs of inference,
    # since no bin of it has seen the ground truth; both run in eval mode, without dropout,
    # as inference makes its counts)
    predictions_from: str = "passes"


@dataclass
class TrainConfig:
    seed: int = 0  # model initialisation, window draws, dropout and sampling
    batch_size: int = 16  # windows per step (the global batch under DDP)
    lr: float = 1e-3  # AdamW peak learning rate (warm-up, then cosine decay)
    weight_decay: float = 1e-2  # AdamW
    # > 0: validate, select and ship an exponential moving average of the weights (decay per step);
    # the optimizer keeps training the raw weights, and checkpoints hold both (exact resume); the
    # likelihood's own parameters (e.g. a learned dispersion) are not averaged
    ema_decay: float = 0.0
    warmup_steps: int = 100  # linear learning-rate warm-up
    max_steps: int = 2000  # training steps; the LR cosine spans them
    max_minutes: float = 0.0  # 0 = no wall-clock limit
    # when max_minutes will stop the run before max_steps, shorten the LR cosine and the
    # scheduled-sampling schedule to the steps the clock allows, so both still finish
    fit_to_time: bool = True
    grad_clip: float = 1.0  # gradient-norm clipping
    unit_dropout: float = 0.0  # fraction of units removed from a training window
    eval_every: int = 200  # steps between validations (teacher-forced and rollout; best.pt by rollout)
    checkpoint_every: int = 200  # steps between last.pt saves
    log_every: int = 1  # steps between train_log.csv rows: 1 logs the loss and scheduled-sampling eps every step
    rollout_samples: int = 8  # sampled trajectories per window in validation (feedback=sample)
    max_eval_windows: int = 512  # validation windows scored at most
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # bf16 autocast on GPU
    compile: bool = False  # torch.compile the model: ~3.8x SLOWER on an H200 (new shapes recompile; docs/performance.md)
    num_workers: int = 0  # processes building batches ahead of the step; 0: in the loop (GPU, batch 128: 8 gave 1.5x)


@dataclass
class RunConfig:
    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelSection = field(default_factory=ModelSection)
    loss: LossConfig = field(default_factory=LossConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def key_reference(width: int = 100) -> str:
    """Every config key with its default (as YAML) and the note written beside or above it in
    this file: the reference `neurohorizon train --help` prints, read from the source so it
    cannot drift from the code."""
    lines = []
    for section in dataclasses.fields(RunConfig):
        defaults = getattr(RunConfig(), section.name)
        if not dataclasses.is_dataclass(defaults):
            continue
        notes = _field_notes(type(defaults))
        for f in dataclasses.fields(defaults):
            key = f"{section.name}.{f.name}={_yaml_value(getattr(defaults, f.name))}"
            wrapped = textwrap.wrap(notes.get(f.name, ""), width - 48) or [""]
            lines.append(f"  {key:<45} {wrapped[0]}".rstrip())
            lines += [" " * 48 + more for more in wrapped[1:]]
    return "\n".join(lines)


def _yaml_value(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def _field_notes(cls) -> dict:
    """field name -> its inline `# comment`, else the comment block just above it."""
    notes, above = {}, []
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):  # an install without .py sources: keys and defaults only
        return notes
    for line in source.splitlines()[1:]:
        text = line.strip()
        if text.startswith("#"):
            above.append(text.lstrip("# "))
            continue
        name = text.split(":", 1)[0]
        if ":" in text and name.isidentifier():
            notes[name] = text.split("  # ", 1)[1] if "  # " in text else " ".join(above)
        above = []
    return notes


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> RunConfig:
    """Defaults, then the YAML file, then `key.sub=value` overrides (values parsed as YAML)."""
    cfg = RunConfig()
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"{path}: config file not found")
        if not path.is_file():
            raise ConfigError(f"{path}: is not a file (give a YAML config file)")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(err)})") from None
        except UnicodeDecodeError as err:
            raise ConfigError(f"{path}: not a text (UTF-8) file ({err.reason} at byte {err.start})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        cfg = from_dict(raw, source=str(path))
    for item in overrides:
        apply_override(cfg, item)
    return cfg


def from_dict(raw: dict, *, source: str = "<dict>") -> RunConfig:
    cfg = RunConfig()
    for key, value in _flatten(raw):
        _set(cfg, key, value, source)
    return cfg


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: RunConfig, path: str | Path) -> None:
    write_text_atomic(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def apply_override(cfg: RunConfig, item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key.sub=value")
    key, text = item.split("=", 1)
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    if isinstance(value, dict) and any(":" in str(k) and v is None for k, v in value.items()):
        raise ConfigError(f"override {item!r}: YAML reads {{a:1}} as the key 'a:1'; write a space after each "
                          f"colon ({{a: 1}}) or set one key at a time ({key.strip()}.a=1)")
    _set(cfg, key.strip(), value, "command line")


def _flatten(raw: dict, prefix: str = ""):
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        # dict-typed fields (options, overrides) are leaves, not sections
        if isinstance(value, dict) and not dotted.endswith(("options", "overrides")):
            yield from _flatten(value, dotted + ".")
        else:
            yield dotted, value


def _set(cfg, dotted: str, value, source: str) -> None:
    parts = dotted.split(".")
    node = cfg
    for i, part in enumerate(parts):
        if isinstance(node, dict):  # free-form options: data.options.n_neurons=50
            if i == len(parts) - 1:
                node[part] = value
            else:
                node = node.setdefault(part, {})
            continue
        fields = {f.name: f for f in dataclasses.fields(node)}
        if part not in fields:
            where = ".".join(parts[:i]) or "top level"
            raise ConfigError(
                f"{source}: unknown key {dotted!r} ({part!r} not in {where}; valid: {sorted(fields)})"
            )
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(getattr(node, part)):  # a section given a scalar: data: 5
                raise ConfigError(f"{source}: {dotted!r} is a section; give its keys ({dotted}.KEY=...), "
                                  f"not {value!r}")
            setattr(node, part, _coerce(value, fields[part], dotted, source))
        else:
            node = getattr(node, part)


def _coerce(value, f: dataclasses.Field, dotted: str, source: str):
    kinds = _allowed_types(f.type)
    if value is None and type(None) in kinds:
        return None
    if float in kinds and isinstance(value, int | str) and not isinstance(value, bool):
        try:  # YAML 1.1 reads "3e-4" as a string
            return float(value)
        except ValueError:
            pass
    # bool is a subclass of int: accept it only where bool is allowed
    if isinstance(value, bool) and bool not in kinds:
        kinds = set()
    if any(isinstance(value, k) for k in kinds if k is not type(None)):
        return value
    raise ConfigError(f"{source}: {dotted}={value!r} has the wrong type (expected {f.type})")


_NAMES = {"str": str, "int": int, "float": float, "bool": bool, "dict": dict, "list": list, "None": type(None)}


def _allowed_types(hint) -> set:
    if isinstance(hint, str):  # `from __future__ import annotations` keeps hints as strings
        return {_NAMES[name.strip()] for name in hint.split("|")}
    if isinstance(hint, types.UnionType):
        return set(hint.__args__)
    return {hint}
