"""Atomic, versioned checkpoints and run folders."""

import pytest
import torch

from neurohorizon.runs import new_run_dir
from neurohorizon.training import checkpoint as ckpt
from neurohorizon.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def _state():
    return {"model": {"w": torch.arange(3.0)}, "config": {}, "vocab": ["NA", "s/1"], "step": 7}


def test_round_trip(tmp_path):
    path = save_checkpoint(_state(), tmp_path / "last.pt")
    state = load_checkpoint(path)
    assert state["step"] == 7 and state["format_version"] == ckpt.FORMAT_VERSION
    assert torch.equal(state["model"]["w"], torch.arange(3.0))


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(_state(), tmp_path / "last.pt")
    before = path.read_bytes()

    def broken_save(obj, handle):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({**_state(), "step": 8}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


def test_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="corrupt.pt.*corrupt"):
        load_checkpoint(corrupt)
    truncated = tmp_path / "trunc.pt"
    good = save_checkpoint(_state(), tmp_path / "good.pt").read_bytes()
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="trunc.pt"):
        load_checkpoint(truncated)
    other = tmp_path / "other.pt"
    torch.save({"weights": 1}, other)
    with pytest.raises(CheckpointError, match="no format_version"):
        load_checkpoint(other)
    future = tmp_path / "future.pt"
    torch.save({**_state(), "format_version": 99}, future)
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(future)


class _RunsCode:
    def __reduce__(self):  # what a malicious pickle does: call a function on load
        import os

        return os.system, ("touch ran-code",)


def test_checkpoints_load_safely(tmp_path, monkeypatch):
    """Loading never runs code from the file; the numpy RNG state still round-trips."""
    import numpy as np

    monkeypatch.chdir(tmp_path)
    rng = np.random.RandomState(3).get_state()
    state = load_checkpoint(save_checkpoint({**_state(), "rng": {"numpy": rng}, "best": np.float64(0.5)},
                                            tmp_path / "ok.pt"))
    assert np.array_equal(state["rng"]["numpy"][1], rng[1]) and state["best"] == 0.5
    bad = tmp_path / "bad.pt"
    torch.save({**_state(), "format_version": ckpt.FORMAT_VERSION, "x": _RunsCode()}, bad)
    with pytest.raises(CheckpointError, match=r"bad.pt: refused: it holds Python objects .*\(posix.system\)"):
        load_checkpoint(bad)
    assert not (tmp_path / "ran-code").exists()


def test_run_dirs_never_collide(tmp_path):
    dirs = {new_run_dir(tmp_path, "demo") for _ in range(5)}
    assert len(dirs) == 5 and all(d.is_dir() for d in dirs)
