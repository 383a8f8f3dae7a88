"""CSV logs always; TensorBoard too when it is installed."""

from __future__ import annotations

import csv
from pathlib import Path


class RunLogger:
    """Appends rows to `<run_dir>/<stream>_log.csv` (one file per stream, e.g. train, valid)."""

    def __init__(self, run_dir: Path, *, enabled: bool = True):
        self.run_dir, self.enabled = Path(run_dir), enabled
        self._files, self._writers = {}, {}
        self.tensorboard = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tensorboard = SummaryWriter(str(self.run_dir / "tensorboard"))
            except ImportError:  # tensorboard is optional
                self.tensorboard = None

    def drop_rows_after(self, step: int) -> None:
        """On resume: drop rows logged after the checkpoint's `step` (an interrupted run logged
        steps that are about to be trained again), so each step appears once."""
        if not self.enabled:
            return
        for path in sorted(self.run_dir.glob("*_log.csv")):
            with path.open(newline="") as handle:
                rows = list(csv.DictReader(handle))
            keep = [r for r in rows if not r.get("step", "").isdigit() or int(r["step"]) <= step]
            if len(keep) == len(rows) or not rows:
                continue
            tmp = path.with_suffix(".csv.tmp")
            with tmp.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(keep)
            tmp.replace(path)

    def log(self, stream: str, row: dict) -> None:
        if not self.enabled:
            return
        if stream not in self._writers:
            path = self.run_dir / f"{stream}_log.csv"
            fresh = not path.exists()
            self._files[stream] = path.open("a", newline="")
            self._writers[stream] = csv.DictWriter(self._files[stream], fieldnames=list(row), extrasaction="ignore")
            if fresh:
                self._writers[stream].writeheader()
        self._writers[stream].writerow(row)
        self._files[stream].flush()
        if self.tensorboard is not None:
            step = int(row.get("step", 0))
            for key, value in row.items():
                if isinstance(value, int | float) and key != "step":
                    self.tensorboard.add_scalar(f"{stream}/{key}", value, step)

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files, self._writers = {}, {}
        if self.tensorboard is not None:
            self.tensorboard.close()
