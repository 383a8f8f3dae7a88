"""How much does denoising the condition prior across units help on the demo's reach data? (JSON)

    python benchmarks/reach_prior_rank.py [--out benchmarks/results/prior_rank_reach_prior_alone.json]

The prior alone (no model) as a forecast of the go-cue validation and test windows, NLB null, for
data.rate_prior_rank = 0 (plain) and 4..32 population modes; and, as a reference for a nearly
noise-free average, the plain prior fitted on an independent session of the same generator with
1,000 trials per condition (same network, other trials). One core, about a minute.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from reach_glm_probe import DEMO, HORIZONS, PLAIN_PRIOR, window_arrays

from neurohorizon.config import load_config
from neurohorizon.data.prepare import fit_prior, prepare_data
from neurohorizon.data.prior import ConditionPrior
from neurohorizon.data.synthetic.reach import make_reach
from neurohorizon.evaluation.metrics import bits_per_spike

RANKS = (0, 4, 8, 12, 16, 24, 32)


def prior_scores(prior, data) -> dict:
    out = {}
    for split in ("valid", "test"):
        a = window_arrays(getattr(data, split), prior, data.spec)
        out[split] = [round(float(bits_per_spike(a["prior"][:, :h], a["target"][:, :h])), 4) for h in HORIZONS]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/prior_rank_reach_prior_alone.json")
    parser.add_argument("--reference-trials", type=int, default=1000, help="trials per condition of the reference")
    args = parser.parse_args(argv)
    cfg = load_config(DEMO, PLAIN_PRIOR)
    data = prepare_data(cfg.data)
    result = {"data": "demo config (synthetic:reach, 40 trials per condition; 48 valid and 48 test go-cue windows)",
              "null": "NLB (per-neuron mean of the evaluated spikes)", "horizons": list(HORIZONS), "by_rank": {}}
    for rank in RANKS:
        cfg.data.rate_prior_rank = rank
        prior = fit_prior(cfg.data, data.train.recordings, data.splits, data.vocab, data.spec)[0]
        result["by_rank"][str(rank)] = prior_scores(prior, data)
        print(rank, result["by_rank"][str(rank)], flush=True)
    big = make_reach(trials_per_condition=args.reference_trials, seed=0)
    # the same seed draws the same network (neurons in the same order), in a session of another name
    units = data.vocab.index(data.train.recordings[0].unit_ids)
    reference = ConditionPrior.fit([big], [(0, 0.0, float(big.duration))], lambda r: units,
                                   bin_size=data.spec.bin_size, event=cfg.data.align_event)
    result[f"plain_prior_of_{args.reference_trials}_trials_per_condition"] = prior_scores(reference, data)
    print("reference", result[f"plain_prior_of_{args.reference_trials}_trials_per_condition"])
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
