"""One entry point for every data source: `load_data(spec, **options) -> list[Recording]`.

Valid specs:
    synthetic:reach | synthetic:lorenz   ground-truth generators (options go to `generate`)
    recipe:NAME or NAME                  a named recipe for ../shared/data (options go to it)
    path/to/file.h5                      a file written here or by `brainsets prepare`
    path/to/file.nwb                     an NWB file (options go to `read_nwb`)
    path/to/folder                       every .h5/.hdf5 file in the folder, sorted by name
"""

from __future__ import annotations

import warnings
from pathlib import Path

from neurohorizon.data.io import load_recording, save_recording
from neurohorizon.data.nwb import read_nwb
from neurohorizon.data.recipes import RECIPES, load_recipe
from neurohorizon.data.recording import Recording

H5_SUFFIXES = (".h5", ".hdf5")
VALID_FORMS = (
    "synthetic:reach, synthetic:lorenz, recipe:NAME or NAME "
    f"(recipes: {', '.join(sorted(RECIPES))}), a .h5/.hdf5 file, a .nwb file, "
    "or a folder of .h5 files"
)


class OutputExistsError(FileExistsError):
    """`import_to_h5` would replace existing files (listed in `paths`) without overwrite=True."""

    def __init__(self, paths: list[Path]):
        self.paths = paths
        super().__init__(f"refusing to overwrite {', '.join(map(str, paths))} (pass overwrite=True to replace)")


def load_data(spec: str | Path, **options) -> list[Recording]:
    """Load the recordings named by `spec` (see the module docstring for the forms)."""
    text = str(spec)
    if text.startswith("synthetic:"):
        from neurohorizon.data.synthetic import GENERATORS, generate

        name = text.split(":", 1)[1]
        if name in GENERATORS:
            _check_options(GENERATORS[name], text, options)
        out = generate(name, **options)
        return list(out) if isinstance(out, (list, tuple)) else [out]
    if text.startswith("recipe:") or text in RECIPES:
        name = text.split(":", 1)[-1]
        if name in RECIPES:
            _check_options(RECIPES[name], text, options)
        return load_recipe(name, **options)
    path = Path(text)
    if path.suffix.lower() in H5_SUFFIXES:
        _no_options(options, text)
        return [load_recording(path)]
    if path.suffix.lower() == ".nwb":
        _check_options(read_nwb, text, options)
        return [read_nwb(path, **options)]
    if path.is_dir():
        _no_options(options, text)
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in H5_SUFFIXES)
        nwb = sorted(p.name for p in path.iterdir() if p.suffix.lower() == ".nwb")
        hint = f"; a data folder is read for .h5 recordings: convert NWB with `neurohorizon import FILE.nwb {path}`"
        if not files:
            raise FileNotFoundError(f"{path}: folder holds no .h5/.hdf5 recordings" + (hint if nwb else ""))
        if nwb:
            warnings.warn(f"{path}: ignoring {len(nwb)} .nwb file(s) ({', '.join(nwb[:3])}{', ...' if len(nwb) > 3 else ''})"
                          + hint, stacklevel=2)
        recordings = [load_recording(p) for p in files]
        _check_distinct_sessions(recordings, files, path)
        return recordings
    missing = "" if path.exists() or ":" in text else " (no such file or folder)"
    raise ValueError(f"unknown data source {text!r}{missing}; valid forms: {VALID_FORMS}")


def _check_distinct_sessions(recordings, files, folder) -> None:
    """Two files of one session would be split apart: its test trials trained on in the other copy."""
    first = {}
    for rec, f in zip(recordings, files):
        if rec.session_id in first:
            raise ValueError(f"{folder}: {first[rec.session_id].name} and {f.name} hold the same session "
                             f"{rec.session_id!r}; keep one (a session split twice would train on its own test trials)")
        first[rec.session_id] = f


def _check_options(loader, spec: str, options: dict) -> None:
    """An option `loader` does not take is the user's error: name it and the valid ones."""
    import inspect

    params = inspect.signature(loader).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(options) - set(params))
    if unknown:
        valid = [n for n, p in params.items() if p.kind is p.KEYWORD_ONLY or p.default is not p.empty]
        raise ValueError(f"{spec}: unknown option(s) {unknown}; valid options: {valid}")
    for name, value in options.items():  # a number where the loader's default is one
        default = params[name].default
        numeric = isinstance(default, int | float) and not isinstance(default, bool)
        if numeric and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError(f"{spec}: option {name} takes a number (default {default!r}), got {value!r}")


def _no_options(options: dict, spec: str) -> None:
    if options:
        raise ValueError(f"{spec}: options {sorted(options)} do not apply to HDF5 files")


def import_to_h5(
    spec: str | Path, out: str | Path, *, overwrite: bool = False, **options
) -> list[Path]:
    """Load `spec` and write each recording as HDF5 (atomically). Returns the written paths.

    `out` ending in .h5/.hdf5 is a single file (the source must hold one recording);
    otherwise it is a folder receiving `<session_id>.h5` files. Existing files are never
    replaced unless `overwrite`; all destinations are checked before anything is written.
    """
    out = Path(out)
    if out.suffix.lower() == ".nwb":  # not a folder name anyone means
        raise ValueError(f"{out}: import writes brainsets/temporaldata HDF5; end the file name in .h5, or give a folder")
    blocking = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None and blocking != out:
        raise ValueError(f"{out}: cannot write there, {blocking} is a file, not a folder")
    recordings = load_data(spec, **options)
    if out.suffix.lower() in H5_SUFFIXES:
        if len(recordings) != 1:
            raise ValueError(
                f"{out}: {spec} holds {len(recordings)} recordings; give a folder instead"
            )
        paths = [out]
    else:
        if out.exists() and not out.is_dir():
            raise ValueError(f"{out}: is a file, not a folder; to write one recording to a file, end its name in .h5")
        paths = [out / f"{_file_stem(r.session_id)}.h5" for r in recordings]
        if len(set(paths)) != len(paths):
            raise ValueError(f"{spec}: recordings share session ids; cannot name files in {out}")
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        raise OutputExistsError(existing)
    return [save_recording(r, p, overwrite=overwrite) for r, p in zip(recordings, paths)]


def _file_stem(session_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in session_id)
