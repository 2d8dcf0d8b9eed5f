"""The output distributions: projection, loss and sampling with an explicit generator.

Each likelihood maps the network's raw head outputs ``(..., num_args)`` to distribution
parameters (GluonTS's ``domain_map``), scores a target (negative log-likelihood) and draws
samples. Scaling follows GluonTS (DEEPAR_REFERENCE.md A.10): location-scale families are the
base distribution affinely scaled by the series scale ``s``; the negative binomial adds
``log s`` to its logits. Draws take a ``torch.Generator`` and consume it in the order
``torch.distributions`` does (normal first, then gamma for the Student-T), so a seed means the
same thing here as in GluonTS.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from batchcast.errors import ConfigError

__all__ = [
    "Beta",
    "DeterministicL1",
    "Gaussian",
    "Likelihood",
    "NegativeBinomial",
    "StudentT",
    "get_likelihood",
]

_EPS = torch.finfo(torch.float32).eps
_TINY = torch.finfo(torch.float32).tiny


def _standard_gamma(concentration: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    # torch._standard_gamma is the kernel behind torch.distributions.Gamma and is the only
    # gamma sampler that takes an explicit generator.
    return torch._standard_gamma(concentration, generator=generator)


class Likelihood:
    """Base class. Subclasses set ``name``, ``num_args`` and implement the three methods.

    Attributes:
        value_in_support: what missing target points are imputed with (GluonTS's dummy value).
        scaled: whether the series is mean-scaled before the network sees it.
    """

    name: str = ""
    num_args: int = 0
    value_in_support: float = 0.0
    scaled: bool = True

    def domain_map(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw head outputs (..., num_args) -> distribution parameters (..., num_args)."""
        raise NotImplementedError

    def nll(self, params: torch.Tensor, target: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of ``target`` (...,); params (..., num_args), scale (...,)."""
        raise NotImplementedError

    def held_out_loss(
        self, params: torch.Tensor, target: torch.Tensor, scale: torch.Tensor
    ) -> torch.Tensor:
        """The loss of held-out points in the series' own units, so that networks with
        different scalings compare: the NLL of a density already is (its ``log(scale)``
        term makes it the density of the target itself)."""
        return self.nll(params, target, scale)

    def sample(
        self, params: torch.Tensor, scale: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """One draw per row: params (N, num_args), scale (N,) -> (N,) in target units."""
        raise NotImplementedError

    def draw(
        self, raw: torch.Tensor, scale: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """``sample(domain_map(raw), scale, generator)``, bit for bit: the sampler's per-step
        call. A subclass may skip the stacked parameter tensor in between."""
        return self.sample(self.domain_map(raw), scale, generator)


class StudentT(Likelihood):
    """Student-T: ``df = 2 + softplus``, ``loc``, ``sigma = max(softplus, eps)``; y = s * T."""

    name = "student-T"
    num_args = 3

    def domain_map(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.stack(self._arguments(raw), dim=-1)

    @staticmethod
    def _arguments(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """df, loc, sigma from the raw head outputs, unstacked (``domain_map`` stacks them)."""
        df = 2.0 + F.softplus(raw[..., 0])
        sigma = F.softplus(raw[..., 2]).clamp_min(_EPS)
        return df, raw[..., 1], sigma

    def nll(self, params: torch.Tensor, target: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        df, loc, sigma = params.unbind(-1)
        z = (target / scale - loc) / sigma
        log_p = (
            torch.lgamma((df + 1) / 2)
            - torch.lgamma(df / 2)
            - 0.5 * torch.log(df * math.pi)
            - torch.log(sigma * scale)
            - (df + 1) / 2 * torch.log1p(z * z / df)
        )
        return -log_p

    def sample(
        self, params: torch.Tensor, scale: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        df, loc, sigma = params.unbind(-1)
        return self._sample(df, loc, sigma, scale, generator)

    def draw(
        self, raw: torch.Tensor, scale: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        # The arguments straight from the head's columns: stacking them into (N, 3) and
        # reading them back at stride 3 cost ~2% of a sampling step. Same values, same bits.
        return self._sample(*self._arguments(raw), scale, generator)

    @staticmethod
    def _sample(
        df: torch.Tensor,
        loc: torch.Tensor,
        sigma: torch.Tensor,
        scale: torch.Tensor,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        x = torch.randn(df.shape, generator=generator, dtype=df.dtype, device=df.device)
        # chi2(df) = Gamma(df/2, rate 1/2); clamped like torch.distributions.Gamma.
        chi2 = (_standard_gamma(0.5 * df, generator) * 2.0).clamp_min_(_TINY)
        return scale * (loc + sigma * x * torch.rsqrt(chi2 / df))


class Gaussian(Likelihood):
    """Normal: ``loc``, ``sigma = softplus`` (no eps clamp, as GluonTS); y = s * N."""

    name = "gaussian"
    num_args = 2

    def domain_map(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.stack((raw[..., 0], F.softplus(raw[..., 1])), dim=-1)

    def nll(self, params: torch.Tensor, target: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        loc, sigma = params.unbind(-1)
        z = (target / scale - loc) / sigma
        return 0.5 * z * z + torch.log(sigma * scale) + 0.5 * math.log(2 * math.pi)

    def sample(
        self, params: torch.Tensor, scale: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        loc, sigma = params.unbind(-1)
        x = torch.randn(loc.shape, generator=generator, dtype=loc.dtype, device=loc.device)
        return scale * (loc + sigma * x)


class NegativeBinomial(Likelihood):
    """Negative binomial: ``r = softplus``, ``logits + log s``; counts via Poisson(Gamma)."""

    name = "negative-binomial"
    num_args = 2

    def domain_map(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.stack((F.softplus(raw[..., 0]), raw[..., 1]), dim=-1)

    def nll(self, params: torch.Tensor, target: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        r, logits = params.unbind(-1)
        logits = logits + torch.log(scale)
        # log NB(k; r, p) with p = sigmoid(logits), as torch.distributions.NegativeBinomial.
        log_unnorm = r * F.logsigmoid(-logits) + target * F.logsigmoid(logits)
        log_norm = torch.lgamma(r + target) - torch.lgamma(1.0 + target) - torch.lgamma(r)
        return -(log_unnorm + log_norm)

    def sample(
        self, params: torch.Tensor, scale: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        r, logits = params.unbind(-1)
        rate = _standard_gamma(r, generator) * torch.exp(logits + torch.log(scale))
        return torch.poisson(rate, generator=generator)


class Beta(Likelihood):
    """Beta on (0, 1): two concentrations ``softplus + eps``.

    Unscaled (a departure from GluonTS's generic affine scaling): targets of a beta model are
    proportions in (0, 1), and stretching the support by the series scale would put samples
    outside it. Missing points are imputed with 0.5, GluonTS's value in support.
    """

    name = "beta"
    num_args = 2
    value_in_support = 0.5
    scaled = False

    def domain_map(self, raw: torch.Tensor) -> torch.Tensor:
        return F.softplus(raw) + _EPS

    def nll(self, params: torch.Tensor, target: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        a, b = params.unbind(-1)
        y = target.clamp(_EPS, 1 - _EPS)
        log_p = (
            (a - 1) * torch.log(y)
            + (b - 1) * torch.log1p(-y)
            - (torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b))
        )
        return -log_p

    def sample(
        self, params: torch.Tensor, scale: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        a, b = params.unbind(-1)
        x = _standard_gamma(a, generator)
        y = _standard_gamma(b, generator)
        return (x / (x + y).clamp_min(_TINY)).clamp(0.0, 1.0)


class DeterministicL1(Likelihood):
    """A point forecast: one head, trained with L1 loss; every sample path is the same value."""

    name = "deterministic-L1"
    num_args = 1

    def domain_map(self, raw: torch.Tensor) -> torch.Tensor:
        return raw

    def nll(self, params: torch.Tensor, target: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        # L1 in scaled units, so series of any magnitude weigh alike (like the other losses).
        return (target / scale - params[..., 0]).abs()

    def held_out_loss(
        self, params: torch.Tensor, target: torch.Tensor, scale: torch.Tensor
    ) -> torch.Tensor:
        # Not a density: the scaled L1 is in units of each scaling's own scale, so two
        # scalings' losses compare only in the target's units.
        return scale * self.nll(params, target, scale)

    def sample(
        self, params: torch.Tensor, scale: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        return scale * params[..., 0]


_REGISTRY: dict[str, type[Likelihood]] = {
    cls.name: cls for cls in (StudentT, Gaussian, NegativeBinomial, Beta, DeterministicL1)
}


def get_likelihood(name: str) -> Likelihood:
    """The likelihood called ``name`` (SageMaker's spelling, e.g. ``"student-T"``).

    Raises:
        ConfigError: for an unknown name.
    """
    try:
        return _REGISTRY[name]()
    except KeyError:
        raise ConfigError(f"likelihood must be one of {sorted(_REGISTRY)}, got {name!r}") from None
