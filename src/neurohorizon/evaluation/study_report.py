"""Report of the horizon study: comparison table, overlaid decay curves, signals, verdicts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neurohorizon.data.binning import DEFAULT_BIN_SIZE, horizon_label
from neurohorizon.evaluation import figures
from neurohorizon.evaluation.report import Section, Table, write_report


def _pooled(cell, *path):
    node = cell["metrics"].get(str(cell["horizon"]), {}).get("pooled", {})
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return np.nan if node is None else node


def comparison_table(cells: dict, bin_size: float = DEFAULT_BIN_SIZE) -> Table:
    rows = []
    for name, c in sorted(cells.items(), key=lambda kv: (kv[1]["horizon"], kv[0])):
        tf, ro = _pooled(c, "teacher_forced", "fp_bps"), _pooled(c, "rollout", "fp_bps")
        rows.append([horizon_label(c["horizon"], bin_size), name.split("-", 1)[1], c["decoder"], c["likelihood"],
                     tf, ro, (tf - ro) / abs(ro) if np.isfinite(tf) and ro else np.nan,
                     _pooled(c, "oracle", "fraction_of_oracle"), _pooled(c, "oracle", "fraction_of_causal_oracle")])
    return Table(columns=["horizon", "variant", "decoder", "likelihood", "teacher-forced bps",
                          "rollout bps", "relative gap", "fraction of oracle", "fraction of causal oracle"], rows=rows,
                 caption="Every cell of the study (bits/spike on held-out test windows, NLB null)")


def signal_table(signals: dict, bin_size: float = DEFAULT_BIN_SIZE) -> Table:
    keys = ["relative_gap", "ss_gap", "gap_closed", "psth_corr_before_30", "psth_corr_from_30",
            "quality_ratio_vs_previous", "parallel_ratio_vs_previous", "drops_out_of_proportion"]
    rows = [[horizon_label(int(h), bin_size)] + [s.get(k, np.nan) for k in keys] for h, s in signals.items()]
    return Table(columns=["horizon"] + [k.replace("_", " ") for k in keys], rows=rows,
                 caption="Decision signals: is scheduled sampling needed at each horizon?")


def write_study_report(study_dir: Path, cells: dict, signals: dict, horizons, *, data: str,
                       bin_size: float = DEFAULT_BIN_SIZE):
    """report.html/.md of a study; bin_size (s) is its cells' bin width (axes and horizon labels)."""
    fig_paths = []
    for h in horizons:
        curves = {}
        for name, c in cells.items():
            if c["horizon"] != h:
                continue
            variant = name.split("-", 1)[1]
            ro = _pooled(c, "rollout", "per_bin_fp_bps")
            if isinstance(ro, list):
                curves[f"{variant} (rollout)"] = np.asarray(ro, dtype=float)
            tf = _pooled(c, "teacher_forced", "per_bin_fp_bps")
            if variant == "teacher_forcing" and isinstance(tf, list):
                curves["teacher_forcing (teacher-forced)"] = np.asarray(tf, dtype=float)
        oracle = next((_pooled(c, "oracle", "oracle_per_bin_fp_bps") for c in cells.values() if c["horizon"] == h), None)
        if curves:
            fig_paths.append(figures.plot_decay(
                curves, bin_size=bin_size, path=study_dir / "figures" / f"decay_h{h}.png",
                oracle=np.asarray(oracle, dtype=float) if isinstance(oracle, list) else None,
                title=f"Per-bin forecast quality, {horizon_label(h, bin_size)}", horizons=[h]))
    verdicts = [s["verdict"] for s in signals.values()]
    sections = [
        Section(title="Comparison", tables=[comparison_table(cells, bin_size)]),
        Section(title="Decay curves", figures=fig_paths),
        Section(title="Decision signals", tables=[signal_table(signals, bin_size)], paragraphs=[
            "relative gap: (teacher-forced − rollout) / |rollout| of the teacher-forcing-only model; "
            "gap closed: fraction of that gap removed by scheduled sampling (none where teacher forcing "
            "alone leaves less than 0.001 bits/spike); PSTH correlation before/after "
            "step 30 (trial data); quality ratio: rollout bits/spike relative to the previous horizon, "
            "compared with the parallel decoder, which has no error accumulation."]),
        Section(title="Verdict", paragraphs=verdicts),
    ]
    return write_report(study_dir, title=f"NeuroHorizon horizon study — {data}", summary=verdicts,
                        sections=sections, metadata={"data": data, "cells": len(cells)}, overwrite=True)
