"""Deterministic train/valid/test splits, saved as JSON with each run.

- trial data: trials split per recording, stratified by condition;
- continuous data: contiguous blocks on the bin grid, separated by a guard gap of at
  least one window (context + horizon) between blocks of different splits;
- held-out sessions go entirely to one split (test by default).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from neurohorizon.data.windows import (
    Window,
    WindowSpec,
    random_windows,
    sequential_windows,
    trial_windows,
)
from neurohorizon.runs import write_text_atomic

SPLITS = ("train", "valid", "test")


@dataclass
class Splits:
    """Per-recording intervals (s) and trial indices of each split.

    `intervals_[split][rec]` is a list of (start, end); `trials_[split][rec]` a list of
    trial indices (trials that lie inside the split in continuous mode).
    """

    mode: str
    seed: int
    fractions: tuple[float, float, float]
    guard_s: float
    sessions: list[str]
    holdout_sessions: list[str] = field(default_factory=list)
    intervals_: dict = field(default_factory=dict)
    trials_: dict = field(default_factory=dict)

    def intervals(self, split: str, rec_index: int) -> list[tuple[float, float]]:
        _check_split(split)
        return [tuple(iv) for iv in self.intervals_[split][rec_index]]

    def trials(self, split: str, rec_index: int) -> np.ndarray:
        _check_split(split)
        return np.asarray(self.trials_[split][rec_index], dtype=np.int64)

    def all_intervals(self, split: str) -> list[tuple[int, float, float]]:
        """(rec, start, end) for every interval of `split` (the input of window samplers)."""
        return [(r, s, e) for r in range(len(self.sessions)) for s, e in self.intervals(split, r)]

    def to_dict(self) -> dict:
        return {
            "mode": self.mode,
            "seed": self.seed,
            "fractions": list(self.fractions),
            "guard_s": self.guard_s,
            "sessions": self.sessions,
            "holdout_sessions": self.holdout_sessions,
            "intervals": self.intervals_,
            "trials": self.trials_,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Splits:
        return cls(
            mode=d["mode"],
            seed=int(d["seed"]),
            fractions=tuple(d["fractions"]),
            guard_s=float(d["guard_s"]),
            sessions=list(d["sessions"]),
            holdout_sessions=list(d["holdout_sessions"]),
            intervals_={k: [[tuple(iv) for iv in r] for r in v] for k, v in d["intervals"].items()},
            trials_={k: [list(r) for r in v] for k, v in d["trials"].items()},
        )

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        write_text_atomic(path, json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> Splits:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f"{path}: not a splits file ({e})") from e


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")


def _round(x: float) -> int:
    return int(np.floor(x + 0.5))


# --------------------------------------------------------------------- trials
def _split_trials(rec, fractions, rng) -> dict[str, list[int]]:
    """Stratified by condition: each split gets >= 1 trial of a condition with >= 3 trials."""
    tr = rec.trials
    groups = tr.condition if tr.condition is not None else np.zeros(len(tr.start), str)
    out = {s: [] for s in SPLITS}
    for label in sorted(set(groups.tolist())):
        idx = rng.permutation(np.flatnonzero(groups == label))
        n = len(idx)
        k = [_round(f * n) for f in fractions[1:]]
        if n >= 3:
            k = [max(1, ki) if f > 0 else 0 for ki, f in zip(k, fractions[1:])]
        while n - sum(k) < min(1, n):  # keep at least one training trial
            k[int(np.argmax(k))] -= 1
        n_valid, n_test = k
        out["valid"] += idx[:n_valid].tolist()
        out["test"] += idx[n_valid : n_valid + n_test].tolist()
        out["train"] += idx[n_valid + n_test :].tolist()
    return {s: sorted(int(i) for i in v) for s, v in out.items()}


# ----------------------------------------------------------------- continuous
def _block_plan(n: int, win: int, fractions, rng, n_rounds: int):
    """Split n bins into per-split blocks: returns {split: [(lo, hi) bins]} or None if too short."""
    active = [s for s, f in zip(SPLITS, fractions) if f > 0]
    share = {s: f / sum(fractions) for s, f in zip(SPLITS, fractions)}
    seq = [s for _ in range(n_rounds) for s in rng.permutation(active)]
    n_gaps = sum(a != b for a, b in zip(seq, seq[1:]))
    avail = n - n_gaps * win
    ideal = np.cumsum([share[s] * avail / n_rounds for s in seq])
    lengths = np.diff(np.concatenate([[0], np.round(ideal).astype(np.int64)]))
    if avail <= 0 or lengths.min() < win:
        return None
    out = {s: [] for s in SPLITS}
    pos = 0
    for i, (s, length) in enumerate(zip(seq, lengths)):
        if i and seq[i - 1] != s:
            pos += win  # guard gap between different splits
        if out[s] and out[s][-1][1] == pos:  # same split continues: merge
            out[s][-1] = (out[s][-1][0], pos + int(length))
        else:
            out[s].append((pos, pos + int(length)))
        pos += int(length)
    return out


def _intersect(blocks, domain_starts, domain_ends):
    out = []
    for lo, hi in blocks:
        for a, b in zip(domain_starts, domain_ends):
            s, e = max(lo, a), min(hi, b)
            if e > s:
                out.append((float(s), float(e)))
    return out


def _split_continuous(rec, spec: WindowSpec, fractions, rng, n_rounds):
    start, end = rec.domain
    win = spec.context_bins + spec.horizon_bins
    n = int(np.floor((end - start) / spec.bin_size + 1e-9))
    rounds = n_rounds or max(1, min(5, n // (40 * win)))
    for r in range(rounds, 0, -1):
        plan = _block_plan(n, win, fractions, rng, r)
        if plan is not None:
            break
    else:
        n_active = sum(f > 0 for f in fractions)
        raise ValueError(
            f"{rec.source}: recording of {end - start:.3f} s is too short to split into "
            f"{n_active} contiguous blocks of at least one {spec.total_s * 1000:g} ms window "
            f"(context + horizon) with {spec.total_s * 1000:g} ms guard gaps at fractions "
            f"{tuple(fractions)}; hold the session out whole or use shorter windows"
        )
    d = rec.data.domain
    starts, ends = np.asarray(d.start, float), np.asarray(d.end, float)
    return {
        s: _intersect(
            [(start + lo * spec.bin_size, start + hi * spec.bin_size) for lo, hi in blocks],
            starts,
            ends,
        )
        for s, blocks in plan.items()
    }


def _trials_inside(rec, intervals) -> list[int]:
    tr = rec.trials
    if tr is None:
        return []
    inside = np.zeros(len(tr.start), bool)
    for s, e in intervals:
        inside |= (tr.start >= s) & (tr.end <= e)
    return np.flatnonzero(inside).tolist()


def _checked_fractions(fractions) -> tuple:
    try:
        fractions = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        raise ValueError(f"data.fractions must be 3 numbers (train, valid, test), got {fractions!r}") from None
    if len(fractions) != 3 or not all(0 <= f < float("inf") for f in fractions) or fractions[0] <= 0:
        raise ValueError(f"fractions must be 3 non-negative numbers with train > 0: {fractions}")
    if abs(sum(fractions) - 1.0) > 1e-6:  # trial splits take valid and test first: the sum must be whole
        raise ValueError(f"fractions (train, valid, test) must sum to 1, got {fractions} (sum {sum(fractions):g})")
    return fractions


def _resolve_mode(mode: str, recordings, held: list) -> str:
    """"auto" is trials when every recording that is not held out has trials."""
    if mode == "auto":
        has = [r.trials is not None and len(r.trials.start) > 0 for r in recordings]
        mode = "trials" if all(h for h, x in zip(has, held) if not x) else "continuous"
    if mode not in ("trials", "continuous"):
        raise ValueError(f"unknown split mode {mode!r}; use 'auto', 'trials' or 'continuous'")
    if mode == "trials":
        for rec, x in zip(recordings, held):
            if not x and (rec.trials is None or len(rec.trials.start) == 0):
                raise ValueError(f"{rec.source}: split mode 'trials' but the recording has none")
    return mode


def _held_out(rec, split: str) -> tuple[dict, dict]:
    """A held-out session: all of its recorded time (and trials) in `split`."""
    d = rec.data.domain
    ivs = {s: [] for s in SPLITS}
    ivs[split] = [(float(a), float(b)) for a, b in zip(d.start, d.end)]
    return ivs, {s: _trials_inside(rec, ivs[s]) for s in SPLITS}


# ----------------------------------------------------------------------- API
def make_splits(
    recordings,
    spec: WindowSpec,
    *,
    seed: int = 0,
    fractions=(0.7, 0.15, 0.15),
    holdout_sessions=(),
    holdout_split: str = "test",
    mode: str = "auto",
    n_rounds: int | None = None,
) -> Splits:
    """Deterministic splits of `recordings` (see module docstring).

    Args:
        fractions: (train, valid, test) shares of trials (trial mode) or time (continuous).
        holdout_sessions: session ids that go entirely to `holdout_split`.
        mode: "trials", "continuous", or "auto" (trials when every split recording has trials).
        n_rounds: continuous mode, rounds of (train, valid, test) blocks per recording
            (default: up to 5, fewer for short recordings).
    """
    fractions = _checked_fractions(fractions)
    _check_split(holdout_split)
    sessions = [r.session_id for r in recordings]
    repeated = sorted({s for s in sessions if sessions.count(s) > 1})
    if repeated:
        raise ValueError(f"session id(s) {repeated} appear more than once; a session split twice would train "
                         "on its own test trials")
    unknown = sorted(set(holdout_sessions) - set(sessions))
    if unknown:
        raise ValueError(f"held-out session(s) {unknown} not among the sessions {sessions}")
    held = [s in set(holdout_sessions) for s in sessions]
    _check_held_out_units(recordings, held)
    mode = _resolve_mode(mode, recordings, held)
    rng = np.random.default_rng(seed)
    intervals = {s: [] for s in SPLITS}
    trials = {s: [] for s in SPLITS}
    for rec, is_held in zip(recordings, held):
        if is_held:
            ivs, trs = _held_out(rec, holdout_split)
        elif mode == "trials":
            trs = _split_trials(rec, fractions, rng)
            tr = rec.trials
            ivs = {s: [(float(tr.start[i]), float(tr.end[i])) for i in trs[s]] for s in SPLITS}
        else:
            ivs = _split_continuous(rec, spec, fractions, rng, n_rounds)
            trs = {s: _trials_inside(rec, ivs[s]) for s in SPLITS}
        for s in SPLITS:
            intervals[s].append(ivs[s])
            trials[s].append(trs[s])
    for s, f in zip(SPLITS, fractions):
        if (f > 0 or s == holdout_split and any(held)) and not any(intervals[s]):
            raise ValueError(
                f"split {s!r} is empty: {len(recordings)} recording(s) gave it no "
                f"{'trials (too few trials per condition?)' if mode == 'trials' else 'time'}"
            )
    return Splits(
        mode=mode,
        seed=seed,
        fractions=fractions,
        guard_s=spec.total_s if mode == "continuous" else 0.0,
        sessions=sessions,
        holdout_sessions=[s for s, h in zip(sessions, held) if h],
        intervals_=intervals,
        trials_=trials,
    )


def _check_held_out_units(recordings, held: list[bool]) -> None:
    """Units are keyed by global id, so a held-out session is forecast with the embeddings of the
    same ids in training sessions; ids no training session has would be random embeddings."""
    if all(held) and held:
        raise ValueError("data.holdout_sessions holds every session: nothing is left to train on")
    trained = {str(u) for rec, h in zip(recordings, held) if not h for u in rec.unit_ids}
    for rec, h in zip(recordings, held):
        new = [str(u) for u in rec.unit_ids if str(u) not in trained] if h else []
        if new and len(new) == rec.n_units:
            raise ValueError(f"held-out session {rec.session_id!r} shares none of its {rec.n_units} unit ids (e.g. "
                             f"{new[0]!r}) with the training sessions, so it would be forecast from untrained unit "
                             "embeddings; hold out only sessions whose units (the same ids) are also recorded in "
                             "training sessions")
        if new:
            warnings.warn(f"held-out session {rec.session_id!r}: {len(new)} of its {rec.n_units} units (e.g. "
                          f"{new[0]!r}) are in no training session; they are forecast from untrained embeddings",
                          stacklevel=2)


def outside_other_splits(windows: list[Window], splits: Splits, split: str, spec: WindowSpec,
                         names: list[str], *, margin_s: float = 0.0, what: str = "trial windows") -> list[Window]:
    """Drop (with a warning) trial windows that reach into another split's time, e.g. a window at
    a trial's end running into the next trial: its spikes would be both trained on and scored.
    `margin_s` widens each window on both sides (training anchors jittered by up to that much)."""
    keep, dropped = [], []
    for rec in sorted({w.rec for w in windows}):
        others = np.array([iv for o in SPLITS if o != split for iv in splits.intervals_[o][rec]]).reshape(-1, 2)
        for w in (w for w in windows if w.rec == rec):
            lo, hi = w.onset - spec.context_s - margin_s, w.onset + spec.horizon_s + margin_s
            hits = (lo < others[:, 1]) & (hi > others[:, 0])
            (dropped if hits.any() else keep).append(w)
    if dropped:
        sources = ", ".join(sorted({names[w.rec] for w in dropped}))
        warnings.warn(f"{sources}: dropped {len(dropped)} of {len(windows)} {split!r} {what} that reach "
                      "into trials of another split (shorten data.horizon_ms or data.context_ms, move data.align_event"
                      + (", or lower data.train_anchor_jitter_ms)" if margin_s else ")"), stacklevel=3)
    return keep  # windows come grouped by recording, so the order is kept


def windows_for_split(
    recordings,
    splits: Splits,
    split: str,
    spec: WindowSpec,
    *,
    mode: str = "auto",
    seed: int = 0,
    n_random: int | None = None,
    event: str | None = None,
    offset_s: float = 0.0,
) -> list[Window]:
    """Windows of one split.

    Args:
        mode: "trial" (one window per trial at `event` + `offset_s`), "random" (n_random
            onsets inside the split's intervals), "sequential" (non-overlapping tiling), or
            "auto": trial when `event` is given, else random for train, sequential otherwise.
        n_random: random windows to draw (default: split time / horizon, i.e. each future
            bin seen about once).
    """
    _check_split(split)
    if mode == "auto":
        mode = "trial" if event is not None else ("random" if split == "train" else "sequential")
    names = [r.source for r in recordings]
    if mode == "trial":
        if event is None:
            raise ValueError("trial windows need an `event` (e.g. 'go_cue' or 'start')")
        out, untrialed = [], []
        for i, rec in enumerate(recordings):
            idx = splits.trials(split, i)
            if len(idx):
                out += trial_windows(rec, spec, event, offset_s, idx, rec_index=i)
            elif split != "train" and (rec.trials is None or not len(rec.trials.start)) and splits.intervals(split, i):
                untrialed.append(i)  # e.g. a held-out session without trials: scored on tiled windows
        out = outside_other_splits(out, splits, split, spec, names)
        if untrialed:
            warnings.warn(f"{', '.join(names[i] for i in untrialed)}: no trials to align {split!r} windows to "
                          f"{event!r}; tiled windows over its {split!r} time are used instead", stacklevel=2)
            out += sequential_windows([(i, a, b) for i in untrialed for a, b in splits.intervals(split, i)],
                                      spec, names=names)
        if not out:
            bare = [names[i] for i, r in enumerate(recordings) if r.trials is None or not len(r.trials.start)]
            why = (f"; {', '.join(bare)} {'has' if len(bare) == 1 else 'have'} no trials at all (set data.align_event=null "
                   f"to forecast from any time)" if bare else "")
            raise ValueError(f"split {split!r} has no trials to anchor windows on at {event!r}{why}")
        return out
    ivs = splits.all_intervals(split)
    if not ivs:
        raise ValueError(f"split {split!r} has no time in any recording")
    try:
        if mode == "sequential":
            return sequential_windows(ivs, spec, names=names)
        if mode == "random":
            fs = [float(r.data.true_rate.sampling_rate) for r in recordings if r.has_true_rate]
            n = n_random or max(1, int(sum(e - s for _, s, e in ivs) / spec.horizon_s))
            grid = 1 / max(fs) if fs else None
            return random_windows(ivs, spec, n, np.random.default_rng(seed), grid=grid, names=names)
    except ValueError as e:
        raise ValueError(f"split {split!r} is empty: {e}") from e
    raise ValueError(f"unknown window mode {mode!r}; use auto, trial, random or sequential")
