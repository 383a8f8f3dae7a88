"""Baselines on small hand-built synthetic batches (dicts of tensors)."""

import time

import numpy as np
import pytest
import torch

from neurohorizon.evaluation.baselines import (
    BASELINES,
    PSTH,
    GRUSeq2Seq,
    MeanRate,
    NDTForward,
    Persistence,
    PoissonGLM,
    build_baseline,
    fit_poisson_ridge,
)
from neurohorizon.evaluation.metrics import fp_bps


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run ~10x faster on one thread than with two contended ones."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_batch(counts, units, condition=None, Tc=10, session=0):
    """counts (B, Tc+T, N) numpy -> batch dict; units (N,) vocab indices."""
    counts = torch.as_tensor(counts, dtype=torch.float32)
    B, _, N = counts.shape
    return {
        "context_counts": counts[:, :Tc],
        "target_counts": counts[:, Tc:],
        "units": torch.as_tensor(units).repeat(B, 1),
        "unit_mask": torch.ones(B, N, dtype=bool),
        "condition": torch.as_tensor(condition if condition is not None else [-1] * B),
        "session": torch.full((B,), session),
    }


def ar_counts(n, T=20, N=8, seed=0, a=0.9):
    """AR(1) 2-d latent driving Poisson counts: (n, T, N) counts and rates."""
    rng = np.random.default_rng(seed)
    C = np.random.default_rng(100).normal(0, 0.8, (2, N))
    z = rng.normal(0, 1, (n, 2))
    log_r = []
    for _ in range(T):
        z = a * z + np.sqrt(1 - a * a) * rng.normal(0, 1, (n, 2))
        log_r.append(-0.5 + z @ C)
    rates = np.exp(np.stack(log_r, 1))
    return rng.poisson(rates).astype(np.float32), rates


def split(counts, units, size, Tc=10):
    return [make_batch(counts[i : i + size], units, Tc=Tc) for i in range(0, len(counts), size)]


def test_mean_rate_exact_and_multisession():
    rng = np.random.default_rng(0)
    a = rng.poisson(0.5, (6, 15, 3)).astype(np.float32)
    b = rng.poisson(2.0, (4, 15, 2)).astype(np.float32)
    batch_b = make_batch(b, [7, 5])
    padded = make_batch(np.concatenate([b, np.zeros((4, 15, 1), np.float32)], 2), [7, 5, 0])
    padded["unit_mask"][:, 2] = False
    m = MeanRate().fit([make_batch(a, [1, 2, 3]), padded])
    pred = m.predict(batch_b)
    np.testing.assert_allclose(pred[0, 0].numpy(), b[:, 10:].mean((0, 1)), rtol=1e-6)
    pa = m.predict(make_batch(a, [1, 2, 3]))
    np.testing.assert_allclose(pa[2, 4].numpy(), a[:, 10:].mean((0, 1)), rtol=1e-6)
    assert (m.predict(padded)[:, :, 2] == 0).all()
    with pytest.raises(KeyError, match="not in training"):
        m.predict(make_batch(a, [1, 2, 9]))


def test_psth_equals_condition_mean():
    rng = np.random.default_rng(1)
    C, reps, T, N = 3, 400, 15, 4
    true = rng.uniform(0.2, 2.0, (C, T, N))
    cond = np.repeat(np.arange(C), reps)
    counts = rng.poisson(true[cond]).astype(np.float32)
    batches = [make_batch(counts[i::4], [1, 2, 3, 4], cond[i::4]) for i in range(4)]
    p = PSTH(sigma=0, shrink=0).fit(batches)  # raw condition average
    test = make_batch(counts[: C * reps : reps], [1, 2, 3, 4], np.arange(C))
    pred = p.predict(test).numpy()
    for c in range(C):  # exactly the empirical condition mean of the target bins
        np.testing.assert_allclose(pred[c], counts[cond == c, 10:].mean(0), rtol=1e-5)
    np.testing.assert_allclose(pred, true[:, 10:], atol=0.25)  # and close to the truth
    smooth = PSTH().fit(batches[:3], batches[3])  # smoothing and shrinkage chosen on validation
    assert smooth.sigma in smooth.sigmas and smooth.shrink in smooth.shrinks
    np.testing.assert_allclose(smooth.predict(test).numpy(), true[:, 10:], atol=0.3)
    test["condition"][:] = -1  # no condition -> mean rate
    np.testing.assert_allclose(
        p.predict(test)[0, 0].numpy(), counts[:, 10:].mean((0, 1)), rtol=1e-5
    )


def test_psth_denoising_pools_units_of_a_low_rank_population():
    """40 units whose root rates share 2 latent time courses, 6 trials per condition: the
    rank chosen on validation keeps few modes and lands nearer the truth than the plain PSTH."""
    rng = np.random.default_rng(3)
    C, reps, T, N = 4, 6, 40, 40
    t = np.arange(T)
    latents = np.stack([np.sin(2 * np.pi * (t / T + c / C)) for c in range(C)])  # (C, T)
    loadings = rng.normal(0, 0.25, (2, N))
    roots = 0.6 + latents[..., None] * loadings[0] + np.cos(np.pi * t / T)[None, :, None] * loadings[1]
    true = np.square(roots)  # (C, T, N) expected counts, rank 2 around the unit means in roots
    cond = np.repeat(np.arange(C), reps)
    units = list(range(1, N + 1))
    batches = [make_batch(rng.poisson(true[cond]).astype(np.float32), units, cond, Tc=0) for _ in range(2)]
    test = make_batch(true.astype(np.float32), units, np.arange(C), Tc=0)
    plain = PSTH(sigma=1.0, shrink=0.01, rank=0).fit(batches[:1])
    chosen = PSTH(sigmas=(1.0,), shrinks=(0.01,), ranks=(0, 2, 4, 16)).fit(batches[:1], batches[1])
    assert chosen.rank in (2, 4) and chosen.chosen() == {"sigma": 1.0, "shrink": 0.01, "rank": chosen.rank}
    err = [float(((m.predict(test).numpy() - true) ** 2).mean()) for m in (plain, chosen)]
    assert err[1] < 0.6 * err[0]


def test_persistence():
    rng = np.random.default_rng(2)
    ctx = rng.poisson(1.0, (5, 20, 3)).astype(np.float32)
    b = make_batch(ctx, [1, 2, 3], Tc=15)
    fixed = Persistence(kind="boxcar", k=2).predict(b)
    np.testing.assert_allclose(
        fixed[:, 3].numpy(), np.maximum(ctx[:, 13:15].mean(1), 1e-3), rtol=1e-6
    )
    assert fixed.shape == (5, 5, 3)
    # rate constant within each window, varied across windows: the longest average wins
    rates = rng.uniform(0.2, 3.0, (300, 1, 3)).repeat(30, 1)
    slow = split(rng.poisson(rates).astype(np.float32), [1, 2, 3], 100, Tc=20)
    assert Persistence(taus=()).fit(slow).choice == ("boxcar", float("inf"))
    # a drifting latent favours recent bins over the whole context
    counts, _ = ar_counts(300, T=30, N=3, seed=3, a=0.95)
    drift = Persistence().fit(split(counts, [1, 2, 3], 100, Tc=20)).choice
    assert drift[1] <= 10


def newton_poisson(X, y, ridge, iters=50):
    """Independent check: Newton's method on the same objective (bias unpenalised)."""
    n, F = X.shape
    Xb = np.hstack([X, np.ones((n, 1))])
    w = np.zeros(F + 1)
    P = np.eye(F + 1) * ridge
    P[-1, -1] = 0
    for _ in range(iters):
        mu = np.exp(Xb @ w)
        g = Xb.T @ (mu - y) / n + P @ w
        H = Xb.T @ (Xb * mu[:, None]) / n + P
        w -= np.linalg.solve(H, g)
    return w


def test_glm_solver_matches_newton():
    rng = np.random.default_rng(4)
    X = rng.normal(0, 1, (300, 4))
    w_true = np.array([[0.5, -0.3], [0.2, 0.0], [-0.4, 0.6], [0.1, 0.1]])
    Y = rng.poisson(np.exp(X @ w_true + [0.2, -0.5])).astype(float)
    W, b, info = fit_poisson_ridge(torch.tensor(X), torch.tensor(Y), 0.05)
    assert info["grad_norm"] < 1e-6
    for k in range(2):
        ref = newton_poisson(X, Y[:, k], 0.05)
        np.testing.assert_allclose(W[:, k].numpy(), ref[:-1], atol=1e-6)
        assert float(b[k]) == pytest.approx(ref[-1], abs=1e-6)


@pytest.mark.parametrize("mode", ["autoregressive", "direct"])
def test_glm_beats_mean_rate(mode):
    counts, _ = ar_counts(900, T=20, N=8, seed=5)
    units = list(range(1, 9))
    train, valid = split(counts[:600], units, 200), split(counts[600:750], units, 150)
    test = make_batch(counts[750:], units)
    glm = PoissonGLM(mode=mode, history=3, ridges=(1.0, 0.01)).fit(train, valid)
    (model,) = glm.models.values()
    assert model["ridge"] in (1.0, 0.01) and len(model["valid_nll"]) == 2
    assert model["info"]["grad_norm"] < 1e-3
    null = MeanRate().fit(train)
    target = test["target_counts"].numpy()
    glm_bps = fp_bps(glm.predict(test).numpy(), target)
    null_bps = fp_bps(null.predict(test).numpy(), target)
    assert glm_bps > null_bps + 0.05
    s = glm.sample(test, 3, torch.Generator().manual_seed(0))
    assert s.shape == (3, *target.shape) and (s == s.round()).all()


def test_glm_routes_sessions_and_reorders_columns():
    c1, _ = ar_counts(300, N=4, seed=6)
    c2, _ = ar_counts(300, N=3, seed=7)
    train = split(c1, [1, 2, 3, 4], 150) + split(c2, [5, 6, 7], 150)
    glm = PoissonGLM(history=2, ridge=0.1).fit(train)
    assert len(glm.models) == 2
    b = make_batch(c1[:5], [1, 2, 3, 4])
    ref = glm.predict(b)
    perm = [2, 0, 3, 1]  # same session, shuffled columns, plus a padded column
    shuf = make_batch(
        np.concatenate([c1[:5][:, :, perm], np.zeros((5, 20, 1))], 2), [3, 1, 4, 2, 0]
    )
    shuf["unit_mask"][:, 4] = False
    out = glm.predict(shuf)
    torch.testing.assert_close(out[..., :4], ref[..., perm])
    assert (out[..., 4] == 0).all()
    with pytest.raises(KeyError, match="unit set"):
        glm.predict(make_batch(c1[:5, :, :2], [1, 2]))


@pytest.mark.parametrize("cls", [GRUSeq2Seq, NDTForward])
def test_neural_baselines_train(cls):
    counts, _ = ar_counts(400, T=20, N=6, seed=8)
    train = split(counts[:320], list(range(1, 7)), 32)
    valid = make_batch(counts[320:], list(range(1, 7)))
    f = cls(dim=32, max_steps=80, eval_every=40, lr=5e-3).fit(train, valid)
    h = f.history
    assert np.mean(h[-10:]) < np.mean(h[:10])
    assert len(f.valid_history) == 2
    pred = f.predict(valid)
    assert pred.shape == valid["target_counts"].shape and (pred >= 0).all()
    s = f.sample(valid, 2, torch.Generator().manual_seed(0))
    assert s.shape == (2, *pred.shape)
    null = MeanRate().fit(train).predict(valid).numpy()
    target = valid["target_counts"].numpy()
    assert fp_bps(pred.numpy(), target) > fp_bps(null, target)


def test_registry():
    assert set(BASELINES) >= {
        "mean_rate",
        "psth",
        "persistence",
        "glm_ar",
        "glm_direct",
        "gru_seq2seq",
        "ndt_forward",
    }
    assert build_baseline("glm_direct", history=2).mode == "direct"
    with pytest.raises(ValueError, match="unknown baseline"):
        build_baseline("nope")
    with pytest.raises(ValueError, match="bad options"):
        build_baseline("psth", bogus=1)


def test_map_style_dataset_items_are_collated():
    """A map-style dataset of window items (ForecastDataset's item layout) works like batches."""
    pytest.importorskip("neurohorizon.data.windows")
    counts, _ = ar_counts(40, N=3, seed=9)
    items = [
        {
            "spike_times": np.zeros(0, np.float32),
            "spike_units": np.zeros(0, np.int64),
            "context_counts": c[:10],
            "target_counts": c[10:],
            "units": np.array([4, 5, 6]),
            "true_expected": np.full((10, 3), np.nan, np.float32),
            "context_true_expected": np.full((10, 3), np.nan, np.float32),
            "condition": -1,
            "session": 0,
            "start": 1.0 * i,
        }
        for i, c in enumerate(counts)
    ]
    from_items = MeanRate().fit(items)
    from_batches = MeanRate().fit(split(counts, [4, 5, 6], 7))
    torch.testing.assert_close(from_items.total, from_batches.total)
    glm = PoissonGLM(history=2, ridge=0.1).fit(items)
    assert list(glm.models) == [(4, 5, 6)]


def test_glm_fit_respects_its_time_budget():
    rng = np.random.default_rng(6)
    X = torch.tensor(rng.normal(0, 1, (400, 6)))
    Y = torch.tensor(rng.poisson(np.exp(X.numpy() @ rng.normal(0, 0.3, (6, 3)))).astype(float))
    W, b, info = fit_poisson_ridge(X, Y, 0.01, deadline=time.monotonic() - 1)  # already past
    assert info["stopped_early"] and info["n_iter"] == 0 and (W == 0).all()
    _, _, full = fit_poisson_ridge(X, Y, 0.01)
    assert not full["stopped_early"] and full["grad_norm"] < 1e-6 and full["n_iter"] < 500
    # with a far deadline the small blocks sized to it reach the same optimum
    W2, _, timed = fit_poisson_ridge(X, Y, 0.01, deadline=time.monotonic() + 600)
    assert not timed["stopped_early"] and timed["grad_norm"] < 1e-6
    torch.testing.assert_close(W2, fit_poisson_ridge(X, Y, 0.01)[0], rtol=1e-5, atol=1e-7)


def test_glm_iteration_blocks_are_sized_to_the_time_left():
    from neurohorizon.evaluation.baselines.glm import _block_within

    now = time.monotonic()
    assert _block_within(now - 1, now - 5, 10, 10) == 0  # out of time: no new block
    assert _block_within(now + 100, now, 0, 10) == 1  # pace unknown: one iteration first
    assert _block_within(now + 100, now - 1, 1000, 10) == 10  # fast: full blocks
    # 1 s per evaluation and ~6 s left: 3 iterations of up to 2 evaluations each
    assert _block_within(now + 6.5, now - 10, 10, 10) == 3


def test_glm_autoregressive_rollout_saturates_instead_of_diverging():
    """A self-exciting fit (positive feedback) is capped at the largest training count."""
    counts, _ = ar_counts(300, T=20, N=4, seed=7)
    units = [1, 2, 3, 4]
    glm = PoissonGLM(history=2, ridge=0.1).fit(split(counts, units, 300))
    (model,) = glm.models.values()
    model["W"] = torch.full_like(model["W"], 2.0)  # explosive feedback
    pred = glm.predict(make_batch(counts[:20], units))
    cap = torch.as_tensor(counts).amax((0, 1)).clamp(min=1).double()
    assert torch.isfinite(pred).all() and (pred <= cap.float() + 1e-6).all()
    saturated = torch.isclose(pred[:, -1], cap.float().expand_as(pred[:, -1])).all(1)
    assert saturated.any()  # windows that start active run up to the cap and stay there
