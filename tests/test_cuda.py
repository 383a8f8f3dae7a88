"""The same model, training and evaluation on a CUDA GPU; skipped where there is none.

CI has no GPU: these run on a lent GPU machine (see docs/performance.md, GPU). fp32 results
must match the CPU's; bf16-autocast training must stay finite, resume and load on a CPU.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_model import LIK, make_batch, model
from test_training import SMALL_REACH, losses, tiny_cfg

from neurohorizon.data.synthetic import generate
from neurohorizon.evaluation.evaluate import evaluate_run
from neurohorizon.evaluation.forecast import forecast
from neurohorizon.evaluation.loading import load_run
from neurohorizon.losses import build_likelihood
from neurohorizon.training.checkpoint import load_checkpoint
from neurohorizon.training.run import train_run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def no_tf32():
    """TF32 matmuls differ from fp32 by ~1e-3; the CPU comparisons need true fp32."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def on(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


@pytest.mark.parametrize("decoder", ["autoregressive", "parallel", "causal"])
def test_forward_and_mean_rollout_match_the_cpu(decoder):
    m, b = model(decoder), make_batch()
    ref = m(b, b["target_counts"])
    ref_roll = m.rollout(b, LIK, n_steps=8, feedback="mean")["params"]
    m.to(CUDA)
    torch.testing.assert_close(m(on(b, CUDA), b["target_counts"].to(CUDA)).cpu(), ref,
                               atol=1e-4, rtol=1e-4)
    roll = m.rollout(on(b, CUDA), LIK, n_steps=8, feedback="mean")["params"].cpu()
    torch.testing.assert_close(roll, ref_roll, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("feedback", ["mean", "sample"])
def test_kv_cache_matches_full_recomputation_on_cuda(feedback):
    m, b = model().to(CUDA), on(make_batch(), CUDA)
    runs = [m.rollout(b, LIK, n_steps=8, feedback=feedback, n_samples=3, use_cache=cache,
                      generator=torch.Generator(device=CUDA).manual_seed(7)) for cache in (True, False)]
    for key in ("params", "counts", "mean"):
        torch.testing.assert_close(runs[0][key], runs[1][key], atol=1e-5, rtol=0)


def test_compiled_rollout_matches_eager_on_cuda():
    m, b = model().to(CUDA), on(make_batch(), CUDA)
    runs = [m.rollout(b, LIK, n_steps=6, feedback="sample", n_samples=2, compile=c,
                      generator=torch.Generator(device=CUDA).manual_seed(5)) for c in (False, True)]
    torch.testing.assert_close(runs[1]["params"], runs[0]["params"], atol=1e-4, rtol=1e-4)
    assert torch.equal(runs[1]["counts"], runs[0]["counts"])


@pytest.mark.parametrize("compiled", [False, True])
def test_cuda_graph_rollout_matches_eager_and_follows_new_inputs_and_weights(compiled):
    m = model(rate_prior=True).to(CUDA)  # the prior's per-bin lookup is recorded too

    def roll(b, **kw):
        return m.rollout(on(b, CUDA), LIK, n_steps=8, feedback="sample", n_samples=3,
                         generator=torch.Generator(device=CUDA).manual_seed(4), **kw)

    for seed in (0, 1):  # the second batch replays the graph recorded for the first
        b = make_batch(seed=seed)
        b["prior_counts"] = torch.rand_like(b["target_counts"]) + 0.1
        ref, graphed = roll(b), roll(b, cuda_graph=True, compile=compiled)
        torch.testing.assert_close(graphed["params"], ref["params"], atol=1e-5, rtol=1e-5)
        assert torch.equal(graphed["counts"], ref["counts"])
    m.load_state_dict(model(seed=9, rate_prior=True).state_dict())  # new weights, same memory: same graph
    torch.testing.assert_close(roll(b, cuda_graph=True, compile=compiled)["params"], roll(b)["params"],
                               atol=1e-5, rtol=1e-5)
    assert len(m._cuda_graphs) == 1


@pytest.mark.parametrize("name", ["poisson", "negbin", "zip", "categorical"])
def test_likelihoods_on_cuda_match_cpu_and_sample_reproducibly(name):
    lik = build_likelihood(name)
    params = torch.randn(4000, lik.n_params) * 0.5
    counts = torch.poisson(torch.full((4000,), 0.8))
    ref = lik.nll(params, counts, full=True)
    lik_cuda = lik.to(CUDA)
    torch.testing.assert_close(lik_cuda.nll(params.to(CUDA), counts.to(CUDA), full=True).cpu(), ref,
                               atol=1e-4, rtol=1e-4)
    draws = [lik_cuda.sample(params.to(CUDA).repeat(25, 1),
                             generator=torch.Generator(device=CUDA).manual_seed(3)) for _ in range(2)]
    assert torch.equal(draws[0], draws[1])
    mean = lik_cuda.mean(params.to(CUDA)).mean()
    assert abs(draws[0].mean() - mean) < 0.03 * mean + 0.01


def test_bf16_training_resumes_and_the_run_loads_and_evaluates_on_the_cpu(tmp_path):
    reach = generate("reach", **SMALL_REACH)
    cfg = tiny_cfg("train.device=cuda", "train.amp=true", "sampling.kind=linear", "sampling.n=6",
                   "sampling.feedback=mean")  # a deterministic rollout, comparable across devices
    full = train_run(cfg, runs_dir=tmp_path / "a", recordings=[reach], quiet=True)
    half = train_run(cfg, runs_dir=tmp_path / "b", recordings=[reach], quiet=True, stop_after=4)
    train_run(None, resume=half, recordings=[reach])
    assert load_checkpoint(half / "last.pt")["step"] == 8
    a, b = losses(full), losses(half)
    assert all(torch.isfinite(torch.tensor(a))) and len(a) == len(b) == 8
    # CUDA's atomic-add backward kernels are not bitwise deterministic: close, not equal
    torch.testing.assert_close(torch.tensor(b), torch.tensor(a), atol=2e-3, rtol=2e-3)
    assert load_run(full, device="cpu").device.type == "cpu"
    run, go = load_run(full, device="cuda"), float(reach.trials.events["go_cue"][3])
    plain, graphed = (forecast(run, reach, start=go, n_samples=3, cuda_graph=g) for g in (False, True))
    np.testing.assert_allclose(graphed.mean, plain.mean, atol=1e-5)
    np.testing.assert_array_equal(graphed.samples, plain.samples)
    scores = {}
    for device in ("cpu", "cuda"):
        out = evaluate_run(full, device=device, baselines=False, n_samples=4, out_dir=tmp_path / device,
                           log=lambda *_: None)
        scores[device] = json.loads((out / "metrics.json").read_text())["results"]
    for horizon, cpu in scores["cpu"]["NeuroHorizon"].items():
        gpu = scores["cuda"]["NeuroHorizon"][horizon]["pooled"]
        for kind in ("rollout", "teacher_forced"):
            assert abs(gpu[kind]["fp_bps"] - cpu["pooled"][kind]["fp_bps"]) < 1e-3, (horizon, kind)
