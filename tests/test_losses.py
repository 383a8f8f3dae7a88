"""Count likelihoods against scipy / numpy, plus gradients, moments and sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import special, stats

from neurohorizon.losses import (
    LIKELIHOODS,
    Categorical,
    NegativeBinomial,
    Poisson,
    ZeroInflatedPoisson,
    build_likelihood,
    reduce_nll,
)

D = torch.float64
KS = np.array([0, 1, 2, 3, 5, 10, 40])
LOG_RATES = np.array([-3.0, -0.5, 0.0, 1.2, 3.0])
LOG_THETAS = np.array([-2.0, 0.0, 1.5, 6.0])
LOGITS = np.array([-4.0, -0.3, 0.0, 2.5])


def grid(*axes):
    mesh = np.meshgrid(*axes, indexing="ij")
    return [torch.tensor(m.ravel(), dtype=D) for m in mesh]


def params_of(*cols):
    return torch.stack(cols, dim=-1)


# ---------------------------------------------------------------- exact log-pmfs


def test_poisson_full_nll_matches_scipy():
    r, k = grid(LOG_RATES, KS)
    got = Poisson().nll(params_of(r), k, full=True).numpy()
    want = -stats.poisson.logpmf(k.numpy(), np.exp(r.numpy()))
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_negbin_full_nll_matches_scipy():
    r, lt, k = grid(LOG_RATES, LOG_THETAS, KS)
    got = NegativeBinomial().nll(params_of(r, lt), k, full=True).numpy()
    mu, theta = np.exp(r.numpy()), np.exp(lt.numpy())
    want = -stats.nbinom.logpmf(k.numpy(), theta, theta / (theta + mu))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_negbin_float32_accurate_at_large_theta():
    # lgamma(k+theta) - lgamma(theta) at theta = e^10: float32 alone is off by up to ~1e-2 nats
    r, lt, k = grid(np.array([0.5]), np.array([10.0]), np.array([0.0, 3.0, 12.0, 40.0]))
    got = NegativeBinomial().nll(params_of(r, lt).float(), k.float(), full=True).double().numpy()
    mu, theta = np.exp(0.5), np.exp(10.0)
    want = -stats.nbinom.logpmf(k.numpy(), theta, theta / (theta + mu))
    np.testing.assert_allclose(got, want, atol=2e-4)


def zip_logpmf(k, rate, pi):
    base = stats.poisson.logpmf(k, rate)
    zero = np.log(pi + (1 - pi) * np.exp(-rate))
    return np.where(k == 0, zero, np.log1p(-pi) + base)


def test_zip_full_nll_matches_hand_built_scipy():
    r, z, k = grid(LOG_RATES, LOGITS, KS)
    got = ZeroInflatedPoisson().nll(params_of(r, z), k, full=True).numpy()
    want = -zip_logpmf(k.numpy(), np.exp(r.numpy()), special.expit(z.numpy()))
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_categorical_nll_matches_numpy_log_softmax():
    rng = np.random.default_rng(0)
    lik = Categorical(max_count=4)
    logits = rng.normal(0, 2, size=(50, 6))
    k = rng.integers(0, 12, size=50).astype(float)
    got = lik.nll(torch.tensor(logits), torch.tensor(k), full=True).numpy()
    log_p = logits - special.logsumexp(logits, axis=1, keepdims=True)
    want = -log_p[np.arange(50), np.minimum(k, 5).astype(int)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # already a normalised pmf over classes: full changes nothing
    np.testing.assert_array_equal(got, lik.nll(torch.tensor(logits), torch.tensor(k)).numpy())


@pytest.mark.parametrize("name", ["poisson", "negbin", "zip"])
def test_full_minus_partial_is_log_factorial(name):
    lik = build_likelihood(name)
    rng = np.random.default_rng(1)
    k = torch.tensor(rng.integers(0, 60, size=200), dtype=D)
    params = torch.tensor(rng.normal(0, 2, size=(200, lik.n_params)), dtype=D)
    diff = lik.nll(params, k, full=True) - lik.nll(params, k)
    torch.testing.assert_close(diff, torch.lgamma(k + 1), rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(lik.log_prob(params, k), -lik.nll(params, k, full=True))


@pytest.mark.parametrize("name", list(LIKELIHOODS))
def test_pmf_sums_to_one(name):
    lik = build_likelihood(name)
    rng = np.random.default_rng(2)
    params = torch.tensor(rng.normal(0, 1, size=(7, lik.n_params)), dtype=D)
    k = torch.arange(0, 400, dtype=D)
    kmax = lik.n_params if name == "categorical" else 400  # classes 0..K+1
    k = k[:kmax]
    logp = lik.log_prob(params[:, None, :].expand(-1, len(k), -1), k.expand(7, -1))
    torch.testing.assert_close(logp.exp().sum(1), torch.ones(7, dtype=D), rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------- proper scoring: minimum at truth


def expected_nll(lik, params, pmf, ks):
    """E_{k ~ pmf}[nll(params, k)] computed exactly over k = 0..cutoff."""
    nll = lik.nll(params.expand(len(ks), -1), ks)
    return (torch.tensor(pmf, dtype=D) * nll).sum()


KGRID = torch.arange(0, 300, dtype=D)


@pytest.mark.parametrize(
    "lik, truth, pmf",
    [
        (Poisson(), [0.7], stats.poisson.pmf(KGRID.numpy(), math.exp(0.7))),
        (
            NegativeBinomial(),
            [1.1, 0.4],
            stats.nbinom.pmf(
                KGRID.numpy(), math.exp(0.4), math.exp(0.4) / (math.exp(0.4) + math.exp(1.1))
            ),
        ),
        (
            ZeroInflatedPoisson(),
            [1.3, -0.5],
            np.exp(zip_logpmf(KGRID.numpy(), math.exp(1.3), special.expit(-0.5))),
        ),
    ],
    ids=["poisson", "negbin", "zip"],
)
def test_expected_nll_minimised_at_truth(lik, truth, pmf):
    assert abs(pmf.sum() - 1) < 1e-12  # cutoff is large enough
    theta = torch.tensor([truth], dtype=D, requires_grad=True)
    value = expected_nll(lik, theta, pmf, KGRID)
    (grad,) = torch.autograd.grad(value, theta)
    assert grad.abs().max() < 1e-8
    # every perturbation on a small grid is worse
    for d in [(-0.2, 0), (0.2, 0), (0, -0.2), (0, 0.2), (0.1, 0.1), (-0.1, 0.1)]:
        shifted = theta.detach() + torch.tensor([d[: lik.n_params]], dtype=D)
        if torch.equal(shifted, theta.detach()):
            continue
        assert expected_nll(lik, shifted, pmf, KGRID) > value.detach()


def test_categorical_expected_nll_minimised_at_true_logits():
    lik = Categorical(max_count=3)
    true_logits = torch.tensor([[0.5, -1.0, 0.2, 1.0, -0.3]], dtype=D)
    pmf = torch.softmax(true_logits, -1)[0].numpy()
    theta = true_logits.clone().requires_grad_(True)
    value = expected_nll(lik, theta, pmf, torch.arange(5, dtype=D))
    (grad,) = torch.autograd.grad(value, theta)
    assert grad.abs().max() < 1e-12


def test_poisson_gradient_is_rate_minus_count_inside_clamp():
    r = torch.tensor([-9.5, -2.0, 0.0, 1.5, 9.5], dtype=D, requires_grad=True)
    k = torch.tensor([0.0, 1.0, 4.0, 2.0, 100.0], dtype=D)
    Poisson().nll(r[:, None], k).sum().backward()
    torch.testing.assert_close(r.grad, torch.exp(r.detach()) - k)


def test_poisson_clamp_saturates():
    r = torch.tensor([[50.0], [-50.0]], dtype=D, requires_grad=True)
    lik = Poisson()
    torch.testing.assert_close(lik.mean(r), torch.exp(torch.tensor([10.0, -10.0], dtype=D)))
    lik.nll(r, torch.tensor([3.0, 3.0], dtype=D)).sum().backward()
    assert torch.equal(r.grad, torch.zeros_like(r))  # torch.clamp: zero gradient outside range


# ------------------------------------------------------------- extreme inputs stay finite


@pytest.mark.parametrize("name", list(LIKELIHOODS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_finite_values_and_gradients_at_extremes(name, dtype):
    lik = build_likelihood(name)
    extremes = [-100.0, -50.0, 0.0, 50.0, 100.0]
    cols = np.meshgrid(*([extremes] * min(lik.n_params, 2)), indexing="ij")
    base = np.stack([c.ravel() for c in cols], -1)
    if lik.n_params > 2:  # categorical: spread the extremes over all logits
        base = np.concatenate([base, np.resize(extremes, (len(base), lik.n_params - 2))], -1)
    counts = torch.tensor([0.0, 1.0, 1000.0], dtype=dtype)
    params = torch.tensor(base, dtype=dtype)[:, None, :].expand(-1, 3, -1).clone()
    params.requires_grad_(True)
    k = counts.expand(len(base), -1)
    for full in (False, True):
        out = lik.nll(params, k, full=full)
        assert torch.isfinite(out).all()
        (grad,) = torch.autograd.grad(out.sum(), params)
        assert torch.isfinite(grad).all()
    assert torch.isfinite(lik.mean(params)).all()
    assert torch.isfinite(lik.variance(params)).all()


# ------------------------------------------------------------------ moments and sampling


MOMENT_CASES = {
    "poisson": [[-1.0], [1.5]],
    "negbin": [[0.5, -0.5], [1.5, 1.0]],
    "zip": [[1.0, 0.0], [2.0, -1.5]],
    "categorical": [[0.0, 1.0, -1.0, 0.5, 0.2, -0.5, 0.0, 0.3, 0.1, 0.4]],
}


@pytest.mark.parametrize("name", list(LIKELIHOODS))
def test_mean_and_variance_match_exact_pmf(name):
    lik = build_likelihood(name)
    params = torch.tensor(MOMENT_CASES[name], dtype=D)
    k = torch.arange(0, lik.n_params if name == "categorical" else 500, dtype=D)
    p = lik.log_prob(params[:, None, :].expand(-1, len(k), -1), k.expand(len(params), -1)).exp()
    mean = (p * k).sum(1)
    torch.testing.assert_close(lik.mean(params), mean, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(lik.variance(params), (p * k**2).sum(1) - mean**2, rtol=1e-8, atol=0)


@pytest.mark.parametrize("name", list(LIKELIHOODS))
def test_sample_moments_match_mean_and_variance(name):
    lik = build_likelihood(name)
    n = 200_000
    params = torch.tensor(MOMENT_CASES[name], dtype=D)
    draws = lik.sample(
        params[None].expand(n, -1, -1).contiguous(), torch.Generator().manual_seed(3)
    )
    assert draws.shape == (n, len(params))
    assert torch.equal(draws, draws.round()) and (draws >= 0).all()
    mean, var = lik.mean(params), lik.variance(params)
    m_hat, v_hat = draws.mean(0), draws.var(0)
    m4_hat = ((draws - m_hat) ** 4).mean(0)
    assert ((m_hat - mean).abs() < 5 * (var / n).sqrt()).all(), (m_hat, mean)
    assert ((v_hat - var).abs() < 5 * ((m4_hat - v_hat**2) / n).sqrt()).all(), (v_hat, var)


@pytest.mark.parametrize("name", list(LIKELIHOODS))
def test_sampling_reproducible_with_generator(name):
    lik = build_likelihood(name)
    params = torch.randn(4, 5, 3, lik.n_params, generator=torch.Generator().manual_seed(9))
    a = lik.sample(params, torch.Generator().manual_seed(11))
    b = lik.sample(params, torch.Generator().manual_seed(11))
    c = lik.sample(params * 0 + 2.0, torch.Generator().manual_seed(12))
    assert a.shape == (4, 5, 3) and a.dtype == params.dtype
    assert torch.equal(a, b)
    d = lik.sample(params * 0 + 2.0, torch.Generator().manual_seed(13))
    assert not torch.equal(c, d)


# ------------------------------------------------------------------------ categorical


def test_categorical_sizes_and_overflow_class():
    assert Categorical().n_params == 10  # K = 8 -> classes 0..8 plus ">8"
    lik = Categorical(max_count=2)
    logits = torch.tensor([[-1e4, -1e4, -1e4, 0.0]])  # all mass on overflow
    assert lik.mean(logits).item() == 3.0  # counted as K+1 (lower bound)
    assert lik.sample(logits).item() == 3.0
    # any count above K scores the overflow class
    for k in (3.0, 7.0, 1000.0):
        assert lik.nll(logits, torch.tensor([k])).item() == pytest.approx(0.0, abs=1e-6)


def test_categorical_truncation_report():
    lik = Categorical(max_count=3)
    counts = torch.tensor([[0.0, 3.0, 4.0], [9.0, 1.0, 2.0]])
    assert lik.truncation_report(counts) == {"max_count": lik.max_count, "n_truncated": 2, "n_total": 6,
                                             "fraction": 2 / 6}
    mask = torch.tensor([[True, True, False], [True, True, True]])
    rep = lik.truncation_report(counts, mask)
    assert rep == {"max_count": 3, "n_truncated": 1, "n_total": 5, "fraction": 0.2}
    assert lik.truncation_text(rep, counts="test") == ("categorical likelihood: 1 of 5 test counts (20 %) exceed "
                                                       "K=3 and fall in the overflow class; raise loss.options.max_count")


# -------------------------------------------------------------------- API and errors


def test_build_likelihood_registry_and_errors():
    assert isinstance(build_likelihood("poisson"), Poisson)
    nb = build_likelihood("negbin", dispersion="per_neuron")
    assert nb.dispersion == "per_neuron" and nb.n_params == 2
    assert build_likelihood("categorical", max_count=5).n_params == 7
    assert build_likelihood("zip").n_params == 2
    with pytest.raises(ValueError, match="poisson, negbin, zip, categorical"):
        build_likelihood("gaussian")
    with pytest.raises(ValueError, match="dispersion"):
        build_likelihood("negbin", dispersion="global")
    with pytest.raises(ValueError, match="max_count"):
        build_likelihood("categorical", max_count=0)
    with pytest.raises(ValueError, match="bad options"):
        build_likelihood("poisson", temperature=2.0)


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match=r"params \(\.\.\., 2\)"):
        NegativeBinomial().nll(torch.zeros(3, 1), torch.zeros(3))
    with pytest.raises(ValueError, match="counts shape"):
        Poisson().nll(torch.zeros(3, 1), torch.zeros(4))


def test_reduce_nll_averages_valid_units_only():
    nll = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    nll[1, :, 3] = float("nan")  # padded unit: must not leak
    unit_mask = torch.tensor([[True, True, False, True], [True, True, True, False]])
    want = nll[0][:, [0, 1, 3]].sum() + nll[1][:, :3].sum()
    got = reduce_nll(nll, unit_mask)
    torch.testing.assert_close(got, want / 18)
    torch.testing.assert_close(reduce_nll(nll, unit_mask[:, None, :]), got)
    with pytest.raises(ValueError, match="no entries"):
        reduce_nll(nll, torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="does not broadcast"):
        reduce_nll(nll, torch.ones(3, 4, dtype=torch.bool))


def test_reduce_nll_gradient_ignores_padding():
    params = torch.zeros(2, 3, 4, 1, requires_grad=True)
    nll = Poisson().nll(params, torch.full((2, 3, 4), 3.0))  # grad = 1 - 3
    mask = torch.tensor([[True, False, True, True], [True, True, True, True]])
    reduce_nll(nll, mask).backward()
    assert (params.grad[0, :, 1] == 0).all()
    assert (params.grad[mask[:, None, :].expand(2, 3, 4)] != 0).all()


def test_likelihoods_say_what_the_model_builder_needs():
    from neurohorizon.losses import build_likelihood

    assert [build_likelihood(n).log_rate_first for n in ("poisson", "negbin", "zip", "categorical")] == [
        True, True, True, False]
    assert build_likelihood("negbin", dispersion="per_neuron").unit_only_params == 1
    assert build_likelihood("negbin").unit_only_params == 0 == build_likelihood("poisson").unit_only_params
