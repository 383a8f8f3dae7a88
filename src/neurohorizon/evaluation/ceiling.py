"""The causal ceiling of synthetic reach evaluations (see `data.synthetic.causal`).

The oracle knows the future latents; the causal oracle knows only the past and averages
over the rest, so "fraction of the causal oracle" is how much of the *achievable* forecast
quality a method reaches. Attached only where it is defined: synthetic reach recordings
evaluated at go-cue-aligned windows.
"""

from __future__ import annotations

import numpy as np

from neurohorizon.data.recording import RecordingError
from neurohorizon.data.synthetic.causal import reach_causal_expected


def attach_causal_oracle(predictions: dict, recordings, *, bin_size: float, log=print) -> bool:
    """Add `causal_expected` (n, T, N) to every method's session groups where defined."""
    any_session = next(iter(predictions.values()), {})
    attached = False
    for session, group in any_session.items():
        causal = _causal_for(recordings[session], group, bin_size)
        if causal is None:
            continue
        for groups in predictions.values():
            if session in groups:
                groups[session]["causal_expected"] = causal
        attached = True
    if attached:
        log("  causal oracle (best forecast from the past, synthetic reach) attached")
    return attached


def _causal_for(rec, group: dict, bin_size: float) -> np.ndarray | None:
    n_bins, n_units = group["target"].shape[1:]
    if n_units != rec.n_units:  # a unit subset (unknown units dropped): not comparable
        return None
    try:
        return reach_causal_expected(rec, group["start"], n_bins=n_bins, bin_size=bin_size)
    except (RecordingError, ValueError):  # not reach, or windows not at go cues
        return None
