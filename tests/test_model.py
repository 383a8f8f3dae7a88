"""NeuroHorizon model: shapes, masking, causality, KV-cache equivalence, sampling, unit identity."""

from __future__ import annotations

import pytest
import torch
from torch_brain.nn import RotaryCrossAttention, RotaryTimeEmbedding

from neurohorizon.losses import build_likelihood
from neurohorizon.model.encoder import rotary_cis, rotate
from neurohorizon.model.presets import PRESETS, count_parameters, from_config

V = 30  # vocabulary size (global units)
IDS = [f"s{i // 15}/u{i % 15}" for i in range(V)]  # two sessions of 15 units
LIK = build_likelihood("poisson")


def make_batch(*, B=2, N=6, S=40, Tc=10, T=8, seed=0, units=None):
    """Hand-built batch per docs/architecture.md; row 0 has one padding unit and padding spikes."""
    g = torch.Generator().manual_seed(seed)
    if units is None:
        units = torch.stack([torch.randperm(V, generator=g)[:N] + 1 for _ in range(B)])
    unit_mask = torch.ones(B, N, dtype=torch.bool)
    unit_mask[0, -1] = False
    units = units.masked_fill(~unit_mask, 0)
    col = torch.randint(0, N - 1, (B, S), generator=g)
    spike_mask = torch.ones(B, S, dtype=torch.bool)
    spike_mask[0, -7:] = False
    spike_units = units.gather(1, col).masked_fill(~spike_mask, 0)
    spike_times = (-torch.rand(B, S, generator=g) * Tc * 0.02).masked_fill(~spike_mask, 0.0)
    return {
        "spike_times": spike_times,
        "spike_units": spike_units,
        "spike_mask": spike_mask,
        "context_counts": torch.poisson(torch.full((B, Tc, N), 0.5), generator=g),
        "target_counts": torch.poisson(torch.full((B, T, N), 0.5), generator=g),
        "units": units,
        "unit_mask": unit_mask,
    }


def model(decoder="autoregressive", seed=0, **kw):
    torch.manual_seed(seed)
    return from_config("tiny", IDS, n_params=1, decoder=decoder, **kw).eval()


def test_presets_sizes():
    assert 30_000 < count_parameters(from_config("tiny", IDS[:100], n_params=1)) < 70_000
    ids100 = [f"s/u{i}" for i in range(100)]
    assert 4.0e6 <= count_parameters(from_config("small", ids100, n_params=1)) <= 4.4e6
    assert 1.2e5 <= count_parameters(from_config("compact", ids100, n_params=1)) <= 2.0e5
    assert set(PRESETS) == {"tiny", "compact", "small", "base"}
    with pytest.raises(ValueError, match="unknown model preset"):
        from_config("huge", IDS, n_params=1)


def test_vocab_matches_dataset_indices():
    # a UnitVocab-like token list with "NA" at 0: dataset index i must be embedding index i
    m = from_config("tiny", ["NA", *IDS], n_params=1)
    assert m.unit_emb.tokenizer(IDS) == list(range(1, V + 1))
    assert m.unit_emb.detokenizer(0) == "NA"
    b = make_batch()
    b["units"][1, 0] = V + 1  # outside the vocabulary
    with pytest.raises(ValueError, match="vocabulary"):
        m(b, b["target_counts"])


@pytest.mark.parametrize("decoder", ["autoregressive", "parallel", "causal"])
def test_output_shapes_and_rollout_shapes(decoder):
    m, b = model(decoder), make_batch()
    assert m(b, b["target_counts"]).shape == (2, 8, 6, 1)
    out = m.rollout(b, LIK, n_steps=5, n_samples=3, feedback="sample")
    assert out["params"].shape == (3, 2, 5, 6, 1)
    assert out["counts"].shape == out["mean"].shape == (3, 2, 5, 6)
    torch.testing.assert_close(out["mean"], LIK.mean(out["params"]))
    if decoder != "autoregressive":
        assert m(b, n_steps=4).shape == (2, 4, 6, 1)


def test_negbin_unit_only_params_are_constant_over_bins():
    torch.manual_seed(0)
    m = from_config("tiny", IDS, n_params=2, unit_only_params=1).eval()
    b = make_batch()
    p = m(b, b["target_counts"])
    assert p.shape == (2, 8, 6, 2)
    # dispersion column depends on the unit only: identical across bins and batch contexts
    torch.testing.assert_close(p[..., 1], p[:, :1, :, 1].expand_as(p[..., 1]))
    assert not torch.allclose(p[..., 0], p[:, :1, :, 0].expand_as(p[..., 0]))


@pytest.mark.parametrize("decoder", ["autoregressive", "parallel"])
def test_padding_does_not_change_real_outputs(decoder):
    m, b = model(decoder), make_batch()
    ref = m(b, b["target_counts"])
    # change everything padded: padding spikes' times, padded unit's counts
    b2 = {k: v.clone() for k, v in b.items()}
    b2["spike_times"][0, -7:] = -0.1
    b2["context_counts"][0, :, -1] = 9.0
    b2["target_counts"][0, :, -1] = 7.0
    out = m(b2, b2["target_counts"])
    torch.testing.assert_close(out[0, :, :-1], ref[0, :, :-1])
    torch.testing.assert_close(out[1], ref[1])
    # adding extra padding columns and padding spikes changes nothing either
    b3 = {k: v.clone() for k, v in b.items()}
    pad = lambda x, n, v: torch.cat([x, torch.full((*x.shape[:-1], n), v, dtype=x.dtype)], -1)  # noqa: E731
    for key, val in [("spike_times", 0.0), ("spike_units", 0), ("spike_mask", False)]:
        b3[key] = pad(b3[key], 5, val)
    for key, val in [("units", 0), ("unit_mask", False), ("context_counts", 3.0)]:
        b3[key] = pad(b3[key], 2, val)
    fut = pad(b["target_counts"], 2, 4.0)
    out3 = m(b3, fut)
    torch.testing.assert_close(out3[0, :, :5], ref[0, :, :5])
    torch.testing.assert_close(out3[1, :, :6], ref[1])


def test_autoregressive_is_causal_and_uses_feedback():
    m, b = model(), make_batch()
    ref = m(b, b["target_counts"])
    for t in (0, 3, 6):
        fut = b["target_counts"].clone()
        fut[:, t] += 3.0  # counts of bin t feed the token of bin t + 1
        out = m(b, fut)
        torch.testing.assert_close(out[:, : t + 1], ref[:, : t + 1], rtol=0, atol=1e-6)
        assert (out[:, t + 1] - ref[:, t + 1]).abs().max() > 1e-3
    # the last context bin is the input of future bin 0
    b2 = {**b, "context_counts": b["context_counts"].clone()}
    b2["context_counts"][:, -1] += 2.0
    assert (m(b2, b["target_counts"])[:, 0] - ref[:, 0]).abs().max() > 1e-3


def test_teacher_forcing_differs_from_rollout_when_inputs_differ():
    m, b = model(), make_batch()
    roll = m.rollout(b, LIK, n_steps=8, feedback="mean")
    # teacher forcing with the rollout's own fed-back counts reproduces the rollout ...
    torch.testing.assert_close(m(b, roll["counts"][0]), roll["params"][0], atol=1e-5, rtol=0)
    # ... and with the ground truth (different counts) it does not
    tf = m(b, b["target_counts"])
    assert torch.allclose(tf[:, 0], roll["params"][0, :, 0], atol=1e-5)  # same input at bin 0
    assert (tf[:, 1:] - roll["params"][0, :, 1:]).abs().max() > 1e-3


@pytest.mark.parametrize("decoder", ["parallel", "causal"])
def test_non_autoregressive_ignores_future_inputs(decoder):
    m, b = model(decoder), make_batch()
    a = m(b, b["target_counts"])
    torch.testing.assert_close(m(b, b["target_counts"] * 0 + 5), a)
    torch.testing.assert_close(m(b, n_steps=8), a)


def test_causal_decoder_prefix_is_independent_of_horizon():
    m, b = model("causal"), make_batch()
    torch.testing.assert_close(m(b, n_steps=8)[:, :4], m(b, n_steps=4), atol=1e-6, rtol=0)
    p = model("parallel")
    assert (p(b, n_steps=8)[:, :4] - p(b, n_steps=4)).abs().max() > 1e-6  # bidirectional


@pytest.mark.parametrize("feedback", ["mean", "sample"])
def test_kv_cache_matches_full_recomputation(feedback):
    m, b = model(), make_batch()
    runs = [
        m.rollout(
            b,
            LIK,
            n_steps=8,
            feedback=feedback,
            n_samples=3,
            generator=torch.Generator().manual_seed(7),
            use_cache=cache,
        )
        for cache in (True, False)
    ]
    for key in ("params", "counts", "mean"):
        torch.testing.assert_close(runs[0][key], runs[1][key], atol=1e-5, rtol=0)


def test_attention_helpers_match_torch_brain():
    m = model()
    # complex rotation == RotaryTimeEmbedding.rotate
    t, x = torch.rand(3, 5) * 2 - 1, torch.randn(3, 5, 2, 16)  # (B, T, H, Dh)
    ref = RotaryTimeEmbedding.rotate(x, m.rotary(t), unsqueeze_dim=2)
    torch.testing.assert_close(rotate(x, rotary_cis(m.rotary, t)[:, :, None]), ref)
    # split (cached) latent cross-attention == torch_brain RotaryCrossAttention.forward
    block = m.blocks[0].cross_attn
    x, lat = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    tq, tk = torch.rand(5), torch.rand(7) - 1
    qr, kr = m.rotary(tq).expand(2, -1, -1), m.rotary(tk).expand(2, -1, -1)
    ref = RotaryCrossAttention.forward(block, x, lat, qr, kr)
    qc, kc = rotary_cis(m.rotary, tq), rotary_cis(m.rotary, tk)
    torch.testing.assert_close(block.attend(x, qc, block.context_kv(lat, kc)), ref)
    # encoder token-table cross-attention (rotate_value=True) == the plain layer on tokens
    enc = m.encoder.cross_attn
    table, idx = torch.randn(9, 32), torch.randint(0, 9, (2, 11))
    mask = torch.rand(2, 11) > 0.3
    mask[:, 0] = True
    tt = torch.rand(2, 11) - 1
    ref = RotaryCrossAttention.forward(enc, lat, table[idx], kr, m.rotary(tt), mask)
    out = enc.forward_table(lat, table, idx, kc[None], rotary_cis(m.rotary, tt), mask)
    torch.testing.assert_close(out, ref)


def test_sampled_rollouts_reproducible_and_distinct():
    m, b = model(), make_batch()

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return m.rollout(b, LIK, n_steps=8, feedback="sample", n_samples=4, generator=g)

    a, a2, c = run(1), run(1), run(2)
    torch.testing.assert_close(a["counts"], a2["counts"])
    torch.testing.assert_close(a["params"], a2["params"])
    assert not torch.equal(a["counts"], c["counts"])
    # the 4 trajectories differ from each other (and their later params too, via feedback)
    assert len({tuple(a["counts"][s].flatten().tolist()) for s in range(4)}) == 4
    assert (a["params"][0, :, 1:] - a["params"][1, :, 1:]).abs().max() > 1e-4
    assert torch.equal(a["counts"], a["counts"].round())  # integer samples fed back


def test_two_sessions_disjoint_units_and_permutation_equivariance():
    m = model()
    units = torch.tensor([[1, 2, 3, 4, 5, 6], [16, 17, 18, 19, 20, 21]])  # s0/* and s1/*
    b = make_batch(units=units)
    out = m(b, b["target_counts"])
    assert torch.isfinite(out).all()
    # permute the real unit columns of row 1 (row 0 keeps its padding column last)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    b2 = {k: v.clone() for k, v in b.items()}
    for key in ("units", "unit_mask"):
        b2[key][1] = b[key][1, perm]
    for key in ("context_counts", "target_counts"):
        b2[key][1] = b[key][1][:, perm]
    out2 = m(b2, b2["target_counts"])
    torch.testing.assert_close(out2[1], out[1][:, perm], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out2[0], out[0])
    # the unit identity matters: relabelling row 1's units to other ids changes outputs
    b3 = {**b, "units": b["units"].clone(), "spike_units": b["spike_units"].clone()}
    b3["units"][1] += 5
    b3["spike_units"][1] += 5
    assert (m(b3, b["target_counts"])[1] - out[1]).abs().max() > 1e-4


@pytest.mark.parametrize("decoder", ["autoregressive", "parallel"])
def test_gradients_reach_encoder_and_spikes_matter(decoder):
    m, b = model(decoder), make_batch()
    m.train()
    loss = LIK.nll(m(b, b["target_counts"]), b["target_counts"]).mean()
    loss.backward()
    for name in ("encoder.latent_emb.weight", "encoder.cross_attn.to_kv.weight", "unit_emb.weight"):
        g = dict(m.named_parameters())[name].grad
        assert g is not None and g.abs().sum() > 0, name
    m.eval()
    # moving context spikes in time changes the forecast: the decoder reads the latents
    b2 = {**b, "spike_times": b["spike_times"] * 0.3}
    assert (m(b2, b["target_counts"]) - m(b, b["target_counts"])).abs().max() > 1e-4


def test_bad_inputs_raise_clear_errors():
    m, b = model(), make_batch()
    with pytest.raises(ValueError, match="future_inputs"):
        m(b)
    with pytest.raises(ValueError, match="does not match units"):
        m(b, b["target_counts"][:, :, :3])
    with pytest.raises(KeyError, match="spike_times"):
        m({k: v for k, v in b.items() if k != "spike_times"}, b["target_counts"])
    with pytest.raises(ValueError, match="max_bins"):
        m.rollout(b, LIK, n_steps=500)
    with pytest.raises(ValueError, match="feedback"):
        m.rollout(b, LIK, n_steps=3, feedback="argmax")
    with pytest.raises(ValueError, match="decoder"):
        from_config("tiny", IDS, n_params=1, decoder="rnn")


def test_tiny_model_learns_rate_pattern():
    # per-unit rates differ 20x: a working model must fit them from a few AdamW steps
    torch.manual_seed(0)
    m = from_config("tiny", IDS, n_params=1)
    b = make_batch(B=4, T=6)
    rates = torch.linspace(0.1, 2.0, 6)
    b["target_counts"] = torch.poisson(
        rates.expand(4, 6, 6), generator=torch.Generator().manual_seed(1)
    )
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        loss = LIK.nll(m(b, b["target_counts"]), b["target_counts"]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # Poisson NLL (without log k!) at the true rates is mean(rate - k log rate)
    k = b["target_counts"]
    floor = (rates - k * rates.log()).mean().item()
    assert losses[-1] < losses[0] - 0.3
    assert losses[-1] < floor + 0.15


def test_event_tokens_condition_the_forecast():
    m = model(event_names=("target_on", "go_cue"))
    b = make_batch()
    b["event_times"] = torch.tensor([[-0.1, 0.0], [-0.15, 0.0]])
    b["event_types"] = torch.tensor([[1, 2], [2, 0]])
    out = m(b, b["target_counts"])
    # the forecast depends on when an event happened and on which event it was
    moved = m({**b, "event_times": b["event_times"] - 0.05}, b["target_counts"])
    retyped = m({**b, "event_types": torch.tensor([[2, 1], [1, 0]])}, b["target_counts"])
    assert (moved - out).abs().max() > 1e-5 and (retyped - out).abs().max() > 1e-5
    # padding events (type 0) are ignored whatever their time
    padded = {**b, "event_times": torch.tensor([[-0.1, 0.0, -0.3], [-0.15, 0.2, -0.3]]),
              "event_types": torch.tensor([[1, 2, 0], [2, 0, 0]])}
    torch.testing.assert_close(m(padded, b["target_counts"]), out)
    # the cached rollout still equals full recomputation with events
    g = [torch.Generator().manual_seed(3) for _ in range(2)]
    a = m.rollout(b, LIK, n_steps=5, feedback="sample", generator=g[0])["params"]
    c = m.rollout(b, LIK, n_steps=5, feedback="sample", generator=g[1], use_cache=False)["params"]
    torch.testing.assert_close(a, c, atol=1e-5, rtol=1e-5)
    with pytest.raises(KeyError, match="conditioned on events"):
        m(make_batch(), b["target_counts"])
    with pytest.raises(ValueError, match="event types"):
        m({**b, "event_types": torch.tensor([[3, 0], [0, 0]])}, b["target_counts"])


def test_cuda_graph_rollout_needs_a_gpu_model_and_the_cache():
    with pytest.raises(ValueError, match="CUDA device and use_cache"):
        model().rollout(make_batch(), LIK, n_steps=4, cuda_graph=True)


def test_compiled_rollout_matches_eager():
    """Also across batch shapes in turn: the graph for each shape must be the one that runs."""
    m, b = model(), make_batch()
    for n_samples in (2, 3, 2):
        runs = [m.rollout(b, LIK, n_steps=6, feedback="sample", n_samples=n_samples, compile=c,
                          generator=torch.Generator().manual_seed(5)) for c in (False, True)]
        torch.testing.assert_close(runs[1]["params"], runs[0]["params"], atol=1e-5, rtol=1e-5)
        assert torch.equal(runs[1]["counts"], runs[0]["counts"])


def test_chunked_compiled_rollout_matches_eager():
    """K bins per compiled call, a shorter last call included (7 = 3 + 3 + 1), equal the eager rollout."""
    m, b = model(), make_batch()
    eager = m.rollout(b, LIK, n_steps=7, feedback="mean", n_samples=2)
    chunked = m.rollout(b, LIK, n_steps=7, feedback="mean", n_samples=2, compile=True, compile_chunk=3)
    for key in ("params", "counts", "mean"):
        torch.testing.assert_close(chunked[key], eager[key], atol=1e-5, rtol=1e-5)
    for bad in ({"compile_chunk": 0, "compile": True}, {"compile_chunk": 2},
                {"compile_chunk": 2, "compile": True, "feedback": "sample"}):
        with pytest.raises(ValueError, match="compile_chunk"):
            m.rollout(b, LIK, n_steps=4, **{"feedback": "mean", **bad})


def test_bad_batches_are_clear_errors():
    m, b = model(), make_batch()
    n_vocab = len(m.unit_emb.vocab)
    for key, value in (("units", n_vocab), ("spike_units", -1)):
        bad = {**b, key: b[key].clone()}
        bad[key][0, 0] = value
        with pytest.raises(ValueError, match=rf"batch\['{key}'\] has indices outside the model vocabulary"):
            m(bad, b["target_counts"])
    empty_row = {**b, "unit_mask": b["unit_mask"].clone()}
    empty_row["unit_mask"][1] = False
    with pytest.raises(ValueError, match="every batch row needs at least one real unit"):
        m(empty_row, b["target_counts"])
