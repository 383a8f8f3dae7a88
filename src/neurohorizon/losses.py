"""Count likelihoods for binned spikes: Poisson, NegativeBinomial, ZeroInflatedPoisson, Categorical.

Every likelihood shares one interface (docs/architecture.md):

    lik.n_params                              P outputs per (bin, unit)
    lik.nll(params, counts, full=False)       params (..., P), counts (...) -> (...) elementwise NLL
    lik.mean(params) / lik.variance(params)   (...) moments of the predicted count distribution
    lik.sample(params, generator=None)        (...) float counts, one draw per entry
    lik.log_prob(params, counts)              (...) exact log-pmf, = -nll(full=True)

`full=False` drops terms that do not depend on the parameters (log k!), which is what training
optimises; `full=True` gives exact log-probabilities for reporting. Counts are float tensors holding
non-negative integers; they are not validated here (that would force a device sync per call).
Sampling uses only torch ops that take a `torch.Generator`, so it is reproducible on CPU and CUDA
(the generator must live on the params' device).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import nn

# knowledge-base clamp: exp(10) ~ 22026 counts/bin, far past physiology
LOG_RATE_RANGE = (-10.0, 10.0)
# theta = e^10 is Poisson for any physiological rate; e^-10 is extreme over-dispersion
LOG_THETA_RANGE = (-10.0, 10.0)


def _log_rate(raw: torch.Tensor) -> torch.Tensor:
    # torch.clamp zeroes the gradient outside the range (the knowledge base's behaviour): the
    # gradient stays finite everywhere, it just stops pushing once the rate is saturated.
    return raw.clamp(*LOG_RATE_RANGE)


class Likelihood(nn.Module, ABC):
    """Base class: shape checks and the shared `log_prob` / `forward` plumbing."""

    name: str = "likelihood"
    n_params: int = 1
    log_rate_first: bool = False  # params[..., 0] is a log-rate (a rate prior or bias can start it)
    unit_only_params: int = 0  # trailing params the model makes per unit only, broadcast over bins

    def _check(self, params: torch.Tensor, counts: torch.Tensor | None = None) -> None:
        if params.dim() == 0 or params.shape[-1] != self.n_params:
            raise ValueError(
                f"{self.name} likelihood expects params (..., {self.n_params}), "
                f"got shape {tuple(params.shape)}"
            )
        if counts is not None and counts.shape != params.shape[:-1]:
            raise ValueError(
                f"{self.name} likelihood: counts shape {tuple(counts.shape)} does not match "
                f"params shape {tuple(params.shape)} without its last axis"
            )

    @abstractmethod
    def nll(self, params: torch.Tensor, counts: torch.Tensor, *, full: bool = False):
        ...

    @abstractmethod
    def mean(self, params: torch.Tensor) -> torch.Tensor:
        ...

    @abstractmethod
    def variance(self, params: torch.Tensor) -> torch.Tensor:
        ...

    @abstractmethod
    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None):
        ...

    def log_prob(self, params: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        return -self.nll(params, counts, full=True)

    def forward(self, params: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        return self.nll(params, counts)

    def extra_repr(self) -> str:
        return f"n_params={self.n_params}"


class Poisson(Likelihood):
    """Poisson with log-rate parameter r (P=1), r clamped to [-10, 10]: nll = exp(r) - k r."""

    name = "poisson"
    log_rate_first = True
    n_params = 1

    def nll(self, params, counts, *, full=False):
        self._check(params, counts)
        r = _log_rate(params[..., 0])
        out = torch.exp(r) - counts * r
        return out + torch.lgamma(counts + 1) if full else out

    def mean(self, params):
        self._check(params)
        return torch.exp(_log_rate(params[..., 0]))

    def variance(self, params):
        return self.mean(params)

    def sample(self, params, generator=None):
        return torch.poisson(self.mean(params), generator=generator)


class NegativeBinomial(Likelihood):
    """Negative binomial with mean mu = exp(r) and dispersion theta: Var = mu + mu^2 / theta.

    params[..., 0] is the log-mean r (clamped like Poisson), params[..., 1] is log theta
    (clamped to LOG_THETA_RANGE). `dispersion` tells the model how to produce params[..., 1]:
    "predicted" = one value per (bin, unit); "per_neuron" = the model's readout supplies a
    unit-only term broadcast over bins. The likelihood itself reads both the same way.
    theta -> infinity recovers Poisson.
    """

    name = "negbin"
    n_params = 2
    log_rate_first = True

    def __init__(self, *, dispersion: str = "predicted"):
        super().__init__()
        if dispersion not in ("predicted", "per_neuron"):
            raise ValueError(
                f"negbin dispersion must be 'predicted' or 'per_neuron', got {dispersion!r}"
            )
        self.dispersion = dispersion
        self.unit_only_params = 1 if dispersion == "per_neuron" else 0  # log theta per neuron

    def _split(self, params):
        self._check(params)
        return _log_rate(params[..., 0]), params[..., 1].clamp(*LOG_THETA_RANGE)

    def nll(self, params, counts, *, full=False):
        self._check(params, counts)
        r, log_theta = self._split(params)
        theta = torch.exp(log_theta)
        # log p = lgamma(k+theta) - lgamma(theta) - lgamma(k+1)
        #         + theta log(theta/(theta+mu)) + k log(mu/(theta+mu)),
        # with log(theta/(theta+mu)) = -softplus(r - log theta) and log(mu/(theta+mu)) =
        # -softplus(log theta - r): no division, no overflow.
        # lgamma(k+theta) - lgamma(theta) cancels two large numbers when theta is large, so it is
        # done in float64 (float32 would lose ~1e-2 nats at theta ~ 1e4).
        k64, theta64 = counts.double(), theta.double()
        lgamma_ratio = (torch.lgamma(k64 + theta64) - torch.lgamma(theta64)).to(counts.dtype)
        out = theta * F.softplus(r - log_theta) + counts * F.softplus(log_theta - r) - lgamma_ratio
        return out + torch.lgamma(counts + 1) if full else out

    def mean(self, params):
        return torch.exp(self._split(params)[0])

    def variance(self, params):
        r, log_theta = self._split(params)
        mu = torch.exp(r)
        return mu + mu * torch.exp(r - log_theta)

    def sample(self, params, generator=None):
        # gamma-Poisson mixture: lambda ~ Gamma(shape theta, scale mu/theta), k ~ Poisson(lambda).
        # torch._standard_gamma is the (generator-aware) sampler behind torch.distributions.Gamma.
        r, log_theta = self._split(params)
        theta = torch.exp(log_theta)
        lam = torch._standard_gamma(theta, generator=generator) * torch.exp(r - log_theta)
        return torch.poisson(lam, generator=generator)

    def extra_repr(self):
        return f"n_params={self.n_params}, dispersion={self.dispersion!r}"


class ZeroInflatedPoisson(Likelihood):
    """Zero-inflated Poisson: with probability pi a structural zero, else Poisson(exp(r)).

    params[..., 0] = log-rate r (clamped like Poisson), params[..., 1] = logit pi.
    P(0) = pi + (1-pi) e^-lambda;  P(k>0) = (1-pi) lambda^k e^-lambda / k!.
    """

    name = "zip"
    log_rate_first = True
    n_params = 2

    def _split(self, params):
        self._check(params)
        return _log_rate(params[..., 0]), params[..., 1]

    def nll(self, params, counts, *, full=False):
        self._check(params, counts)
        r, logit = self._split(params)
        rate = torch.exp(r)
        log_pi, log_not_pi = -F.softplus(-logit), -F.softplus(logit)
        log_p_zero = torch.logaddexp(log_pi, log_not_pi - rate)
        log_p_pos = log_not_pi + counts * r - rate  # without -log k!
        out = -torch.where(counts > 0, log_p_pos, log_p_zero)
        return out + torch.lgamma(counts + 1) if full else out

    def mean(self, params):
        r, logit = self._split(params)
        return torch.sigmoid(-logit) * torch.exp(r)

    def variance(self, params):
        r, logit = self._split(params)
        rate = torch.exp(r)
        return torch.sigmoid(-logit) * rate * (1 + torch.sigmoid(logit) * rate)

    def sample(self, params, generator=None):
        r, logit = self._split(params)
        active = torch.bernoulli(torch.sigmoid(-logit), generator=generator)
        return active * torch.poisson(torch.exp(r), generator=generator)


class Categorical(Likelihood):
    """Counts as classes 0..K plus an overflow class K+1 meaning "more than K" (P = K + 2 logits).

    nll is the cross-entropy on min(k, K+1). It is already a normalised pmf over classes, so
    `full` changes nothing; for k > K the log-probability is that of the event {k > K}, not of k.
    `mean`, `variance` and `sample` treat the overflow class as the count K+1, so the mean is a
    lower bound whenever overflow mass is present; use `truncation_report` to see how often the
    data exceed K.
    """

    name = "categorical"

    def __init__(self, *, max_count: int = 8):
        super().__init__()
        if not isinstance(max_count, int) or max_count < 1:
            raise ValueError(
                f"categorical max_count (K) must be an integer >= 1, got {max_count!r}"
            )
        self.max_count = max_count
        self.n_params = max_count + 2

    def _classes(self, params):
        return torch.arange(self.n_params, device=params.device, dtype=params.dtype)

    def nll(self, params, counts, *, full=False):
        self._check(params, counts)
        target = counts.clamp(0, self.max_count + 1).long()
        log_p = torch.log_softmax(params, dim=-1)
        return -log_p.gather(-1, target.unsqueeze(-1)).squeeze(-1)

    def mean(self, params):
        self._check(params)
        return torch.softmax(params, dim=-1) @ self._classes(params)

    def variance(self, params):
        self._check(params)
        p, c = torch.softmax(params, dim=-1), self._classes(params)
        return p @ (c * c) - (p @ c) ** 2

    def sample(self, params, generator=None):
        self._check(params)
        probs = torch.softmax(params, dim=-1).reshape(-1, self.n_params)
        idx = torch.multinomial(probs, 1, generator=generator)
        return idx.reshape(params.shape[:-1]).to(params.dtype)

    def truncation_report(self, counts: torch.Tensor, mask: torch.Tensor | None = None) -> dict:
        """How many counts exceed K (they collapse into the overflow class).

        counts (...); optional boolean mask broadcastable to counts selects valid entries.
        Returns dict(n_truncated=int, n_total=int, fraction=float).
        """
        valid = torch.ones_like(counts, dtype=torch.bool)
        if mask is not None:
            valid = valid & mask
        n_total = int(valid.sum())
        n_trunc = int(((counts > self.max_count) & valid).sum())
        return {
            "max_count": self.max_count,
            "n_truncated": n_trunc,
            "n_total": n_total,
            "fraction": n_trunc / n_total if n_total else 0.0,
        }

    @staticmethod
    def truncation_text(report: dict, *, counts: str) -> str:
        """One line for a `truncation_report` of `counts` (e.g. "training target")."""
        advice = "; raise loss.options.max_count" if report["fraction"] > 0.01 else ""
        return (f"categorical likelihood: {report['n_truncated']:,} of {report['n_total']:,} {counts} counts "
                f"({100 * report['fraction']:.3g} %) exceed K={report['max_count']} and fall in the overflow "
                f"class{advice}")

    def extra_repr(self):
        return f"n_params={self.n_params}, max_count={self.max_count}"


LIKELIHOODS: dict[str, type[Likelihood]] = {
    "poisson": Poisson,
    "negbin": NegativeBinomial,
    "zip": ZeroInflatedPoisson,
    "categorical": Categorical,
}


def build_likelihood(name: str, **options) -> Likelihood:
    """Likelihood by name ("poisson", "negbin", "zip", "categorical") with keyword options."""
    if name not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {name!r}; valid names: {', '.join(LIKELIHOODS)}")
    try:
        return LIKELIHOODS[name](**options)
    except TypeError as err:  # unexpected keyword
        raise ValueError(f"bad options {options} for likelihood {name!r}: {err}") from None


def masked_nll_sum(nll: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of nll over valid entries, their number), without a device sync.

    nll (B, T, N); mask (B, N) unit_mask (treated as (B, 1, N)) or any bool/float shape that
    broadcasts to nll. Padded entries are dropped with `where`, so NaN/inf there cannot leak.
    """
    if mask.dim() == nll.dim() - 1:
        mask = mask.unsqueeze(-2)
    try:
        mask = torch.broadcast_to(mask, nll.shape)
    except RuntimeError:
        raise ValueError(
            f"masked_nll_sum: mask shape {tuple(mask.shape)} does not broadcast to nll shape "
            f"{tuple(nll.shape)}"
        ) from None
    weight = mask.to(nll.dtype)
    return torch.where(weight > 0, nll * weight, torch.zeros_like(nll)).sum(), weight.sum()


def reduce_nll(nll: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean NLL over valid entries (see `masked_nll_sum`); an all-padding mask is an error."""
    total, count = masked_nll_sum(nll, mask)
    if count.item() == 0:
        raise ValueError("reduce_nll: mask selects no entries (every unit is padding)")
    return total / count
