"""Named recipes: one function per dataset in ../shared/data, each -> list[Recording].

    pmd_reach_yu2009     macaque PMd reaching (DataHigh .mat), trials on one time axis
    aplysia_bruno2017    Aplysia pedal ganglion, one recording per run, units shared per prep
    adn_peyrache2015     mouse ADN head-direction cells (NWB) through `read_nwb`

Usage: `load_recipe("pmd_reach_yu2009", which="ex1")`. The data root defaults to the first
existing of $NEUROHORIZON_DATA (which must exist when set), ./../shared/data (from the CWD) and
<repo>/../shared/data;
the last only exists next to a source checkout, so an installed package needs one of the others.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
import scipy.io
from torch_brain.data import Interval

from neurohorizon.data.nwb import read_nwb
from neurohorizon.data.recording import Recording, RecordingError, Trials

REPO_ROOT = Path(__file__).resolve().parents[3]


DATA_ENV = "NEUROHORIZON_DATA"


def data_root(root: str | Path | None = None) -> Path:
    """The shared data folder: `root` if given, else the first default that exists."""
    if root is not None:
        return Path(root)
    chosen = os.environ.get(DATA_ENV)
    if chosen and not Path(chosen).is_dir():  # a typo must not silently read another folder
        raise FileNotFoundError(f"{DATA_ENV}={chosen}: no such folder")
    candidates = _default_roots()
    for c in candidates:
        if c.is_dir():
            return c
    return candidates[-1]  # the documented location; the recipe reports it as missing


def _default_roots() -> list[Path]:
    """$NEUROHORIZON_DATA, then ../shared/data from the CWD, then next to a source checkout."""
    candidates = [Path.cwd().parent / "shared" / "data", REPO_ROOT.parent / "shared" / "data"]
    if os.environ.get(DATA_ENV):
        candidates.insert(0, Path(os.environ[DATA_ENV]))
    return candidates


def _dataset_dir(root, name: str) -> Path:
    folder = data_root(root) / name
    if folder.is_dir():
        return folder
    if root is not None:
        raise FileNotFoundError(f"dataset {name!r} not found: no folder {folder}")
    looked = ", ".join(str(c) for c in dict.fromkeys(_default_roots()))
    raise FileNotFoundError(
        f"dataset {name!r} not found: no folder {folder} (the data folder is the first that exists of: "
        f"{looked}); set {DATA_ENV}=/path/to/data to use the folder that holds {name}/"
    )


# --------------------------------------------------------------------- pmd_reach_yu2009
PMD_FILES = {"ex2": "ex2_rawspiketrains.mat", "ex1": "ex1_spikecounts.mat"}
MS = 1e-3


def pmd_reach_yu2009(root=None, *, which: str = "ex2", trial_gap: float = 1.0) -> list[Recording]:
    """DataHigh reaching data; one Recording per file (`which` = "ex2", "ex1" or "both").

    Both files hold 0/1 spike indicators per 1 ms sample (ex1's name says "spikecounts",
    but its values are 0/1 at 1 ms too). Trials are laid end to end on one time axis with
    `trial_gap` seconds between them; a spike in sample j of a trial starting at t0 is
    placed at the sample centre t0 + (j + 0.5) ms, so it never sits on a 20 ms bin edge
    aligned to the trial start. The domain is the union of the trials (the gaps are not
    recorded time). Events: `trial_start` and `epoch<i>` from the 1-based `epochStarts`.
    """
    choices = {"ex2": ["ex2"], "ex1": ["ex1"], "both": ["ex2", "ex1"]}
    if which not in choices:
        raise ValueError(f"pmd_reach_yu2009: which must be one of {list(choices)}, got {which!r}")
    if isinstance(trial_gap, bool) or not isinstance(trial_gap, (int, float)) or not trial_gap >= 0:
        raise ValueError(f"pmd_reach_yu2009: trial_gap must be a number of seconds >= 0, got {trial_gap!r}")
    folder = _dataset_dir(root, "pmd_reach_yu2009")
    gap_ms = round(trial_gap / MS)
    return [
        _pmd_file(folder / PMD_FILES[w], f"pmd_reach_yu2009_{w}", gap_ms) for w in choices[which]
    ]


def _pmd_file(path: Path, session_id: str, gap_ms: int) -> Recording:
    if not path.exists():
        raise FileNotFoundError(f"pmd_reach_yu2009: expected file {path}")
    D = np.atleast_1d(scipy.io.loadmat(path, squeeze_me=True)["D"])
    n_neurons = D[0]["data"].shape[0]
    times, units, starts, ends, conds, epochs = [], [], [], [], [], []
    t0 = 0  # integer ms: sums stay exact
    for k, trial in enumerate(D):
        data = np.asarray(trial["data"])
        if data.ndim != 2 or data.shape[0] != n_neurons:
            raise RecordingError(
                f"{path}: trial {k} data shape {data.shape}, expected ({n_neurons}, ms)"
            )
        if data.min() < 0 or data.max() > 1:
            raise RecordingError(f"{path}: trial {k} is not a 0/1 spike train (max {data.max()})")
        neuron, sample = np.nonzero(data)
        times.append((t0 + sample + 0.5) * MS)
        units.append(neuron)
        starts.append(t0)
        ends.append(t0 + data.shape[1])
        conds.append(str(trial["condition"]))
        epochs.append(np.atleast_1d(trial["epochStarts"]).astype(np.int64) - 1)  # 0-based
        t0 += data.shape[1] + gap_ms
    times, units = np.concatenate(times), np.concatenate(units)
    order = np.argsort(times, kind="stable")
    start, end = np.array(starts) * MS, np.array(ends) * MS
    n_epochs = max(len(e) for e in epochs)
    events = {"trial_start": start}
    for i in range(n_epochs):
        offset = np.array([e[i] if i < len(e) else np.nan for e in epochs], dtype=np.float64)
        events[f"epoch{i}"] = start + offset * MS
    return Recording.from_arrays(
        session_id=session_id,
        spike_times=times[order],
        unit_ids=np.arange(n_neurons).astype(str),
        spike_units=units[order],
        domain=Interval(start=start, end=end),
        trials=Trials(start=start, end=end, condition=np.array(conds), events=events),
        source=str(path),
    )


# -------------------------------------------------------------------- aplysia_bruno2017
APLYSIA_FILE = re.compile(r"^(?P<prep>.+)da0(?P<run>\d+)$")


def aplysia_bruno2017(root=None, *, sessions=None, preps=None) -> list[Recording]:
    """One Recording per `<Prep>da0<k>.mat` file (session id = file stem).

    The three runs of a preparation image the same neurons, so unit ids are namespaced by
    the preparation, not the run: unit 12 of Jun0214da01..03 is "Jun0214/12" in all three;
    different preparations never share ids. The domain is [0, last spike]; imaging starts
    at t = 0. Raw checks: NaN/inf or negative times and non-integer neuron ids are errors
    naming the file; exact duplicate (neuron, time) rows are dropped with a warning;
    spikes are sorted by time (the files list them neuron by neuron).
    """
    sessions, preps = _names("sessions", sessions), _names("preps", preps)
    folder = _dataset_dir(root, "aplysia_bruno2017")
    files = sorted(folder.glob("*.mat"))
    if sessions is not None:
        missing = set(sessions) - {f.stem for f in files}
        if missing:
            raise FileNotFoundError(f"aplysia_bruno2017: no file for sessions {sorted(missing)} in {folder} "
                                    f"(sessions: {[f.stem for f in files]})")
        files = [f for f in files if f.stem in set(sessions)]
    if preps is not None:
        missing = set(preps) - {_aplysia_prep(f) for f in files}
        if missing:
            raise FileNotFoundError(f"aplysia_bruno2017: no files of preps {sorted(missing)} in {folder} "
                                    f"(preps: {sorted({_aplysia_prep(f) for f in files})})")
        files = [f for f in files if _aplysia_prep(f) in set(preps)]
    if not files:
        raise FileNotFoundError(f"aplysia_bruno2017: no matching .mat files in {folder}")
    return [read_aplysia_file(f) for f in files]


def _names(option: str, value) -> list[str] | None:
    """A recipe option naming files: None, one name (`-o sessions=Jun0214da01`, not split into
    characters) or a list of names."""
    if value is None:
        return None
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"aplysia_bruno2017: {option} must be a name or a list of names, got {value!r}")
    return list(names)


def _aplysia_prep(path: Path) -> str:
    m = APLYSIA_FILE.match(path.stem)
    if m is None:
        raise RecordingError(f"{path}: name is not <Prep>da0<k>.mat")
    return m["prep"]


def read_aplysia_file(path: str | Path) -> Recording:
    """Read one `spks` file: (n_spikes, 2) rows of (neuron id, time s)."""
    path = Path(path)
    prep = _aplysia_prep(path)
    try:
        spks = np.asarray(scipy.io.loadmat(path)["spks"], dtype=np.float64)
    except Exception as e:
        raise RecordingError(f"{path}: cannot read 'spks' ({type(e).__name__}: {e})") from e
    if spks.ndim != 2 or spks.shape[1] != 2:
        raise RecordingError(f"{path}: 'spks' has shape {spks.shape}, expected (n_spikes, 2)")
    if not np.isfinite(spks).all():
        raise RecordingError(
            f"{path}: {int((~np.isfinite(spks)).any(1).sum())} row(s) with NaN/inf"
        )
    neuron, t = spks[:, 0], spks[:, 1]
    if (neuron != np.round(neuron)).any():
        raise RecordingError(f"{path}: non-integer neuron ids")
    if len(t) and t.min() < 0:
        raise RecordingError(f"{path}: negative spike time {t.min():.6f} s")
    rows = np.unique(spks, axis=0)
    if len(rows) < len(spks):
        warnings.warn(
            f"{path}: dropped {len(spks) - len(rows)} duplicate spike row(s)", stacklevel=2
        )
    order = np.argsort(rows[:, 1], kind="stable")
    neuron, t = rows[order, 0].astype(np.int64), rows[order, 1]
    ids, index = np.unique(neuron, return_inverse=True)  # numeric order: 1, 2, ..., 10
    return Recording.from_arrays(
        session_id=path.stem,
        spike_times=t,
        unit_ids=ids.astype(str),
        spike_units=index,
        domain=(0.0, float(np.nextafter(t.max(), np.inf))) if len(t) else None,
        unit_namespace=prep,
        source=str(path),
    )


# --------------------------------------------------------------------- adn_peyrache2015
def adn_peyrache2015(root=None) -> list[Recording]:
    """Every .nwb file of the folder (A2929-200711.nwb) through `read_nwb`."""
    folder = _dataset_dir(root, "adn_peyrache2015")
    files = sorted(folder.glob("*.nwb"))
    if not files:
        raise FileNotFoundError(f"adn_peyrache2015: no .nwb file in {folder}")
    return [read_nwb(f) for f in files]


RECIPES = {
    "pmd_reach_yu2009": pmd_reach_yu2009,
    "aplysia_bruno2017": aplysia_bruno2017,
    "adn_peyrache2015": adn_peyrache2015,
}


def load_recipe(name: str, root=None, **options) -> list[Recording]:
    """Run recipe `name` on the data under `root` (see `data_root`)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; available: {sorted(RECIPES)}")
    return RECIPES[name](root, **options)
