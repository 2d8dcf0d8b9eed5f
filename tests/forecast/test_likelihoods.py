"""The likelihoods: parameter domains, the loss against torch.distributions, sampling statistics.

Statistics come from N = 200,000 draws. Each tolerance is stated beside it as a multiple of
the estimator's standard error (SE), so a correct sampler passes with a wide margin while a
wrong scale, location or shape fails by far.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import distributions as D

from batchcast.errors import ConfigError
from batchcast.forecast import get_likelihood

ALL = ("student-T", "gaussian", "negative-binomial", "beta", "deterministic-L1")
N = 200_000
EPS32 = torch.finfo(torch.float32).eps


def _rows(values: list[float], n: int = N) -> torch.Tensor:
    """One parameter vector repeated over ``n`` rows: (n, num_args)."""
    return torch.tensor(values, dtype=torch.float32).expand(n, len(values)).contiguous()


def _draw(name: str, params: list[float], scale: float, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return get_likelihood(name).sample(_rows(params), torch.full((N,), scale), generator)


def _check_moments(
    draws: torch.Tensor, mean: float, variance: float, *, mean_tol: float, var_rel: float
) -> None:
    x = draws.double()
    assert torch.isfinite(x).all()
    assert abs(x.mean().item() - mean) < mean_tol, (x.mean().item(), mean)
    assert abs(x.var().item() / variance - 1) < var_rel, (x.var().item(), variance)


# ---------------------------------------------------------------------------------------------
# Registry


@pytest.mark.parametrize("name", ALL)
def test_get_likelihood(name: str) -> None:
    likelihood = get_likelihood(name)
    assert likelihood.name == name
    assert likelihood.num_args == {
        "student-T": 3, "gaussian": 2, "negative-binomial": 2, "beta": 2, "deterministic-L1": 1
    }[name]  # fmt: skip
    # DEEPAR_REFERENCE A.3: missing values are imputed with 0, or 0.5 for beta.
    assert likelihood.value_in_support == (0.5 if name == "beta" else 0.0)


@pytest.mark.parametrize("name", ["studentT", "Student-T", "poisson", ""])
def test_unknown_likelihood(name: str) -> None:
    with pytest.raises(ConfigError, match=f"likelihood.*got {name!r}"):
        get_likelihood(name)


# ---------------------------------------------------------------------------------------------
# domain_map

RAW = torch.linspace(-30.0, 30.0, 601)


def _raw(num_args: int) -> torch.Tensor:
    # every combination of extreme and ordinary values across the arguments, (601, k)
    return torch.stack([RAW.roll(17 * i) for i in range(num_args)], dim=-1)


def test_student_t_domain() -> None:
    raw = _raw(3)
    params = get_likelihood("student-T").domain_map(raw)
    assert params.shape == raw.shape
    df, loc, sigma = params.unbind(-1)
    # df = 2 + softplus: above 2 wherever float32 can tell (softplus(-30) is lost in 2 + x)
    assert (df >= 2).all()
    assert (df[raw[:, 0] >= -12] > 2).all()
    assert torch.equal(loc, raw[:, 1])
    assert (sigma > 0).all()
    torch.testing.assert_close(df, 2 + F.softplus(raw[:, 0]))
    # sigma = max(softplus, float32 eps): a very negative input still gives a usable scale
    tiny = get_likelihood("student-T").domain_map(torch.tensor([0.0, 0.0, -200.0]))
    assert tiny[2].item() == pytest.approx(EPS32)


def test_gaussian_domain() -> None:
    raw = _raw(2)
    loc, sigma = get_likelihood("gaussian").domain_map(raw).unbind(-1)
    assert torch.equal(loc, raw[:, 0])
    assert (sigma > 0).all()
    torch.testing.assert_close(sigma, F.softplus(raw[:, 1]))


def test_negative_binomial_domain() -> None:
    raw = _raw(2)
    r, logits = get_likelihood("negative-binomial").domain_map(raw).unbind(-1)
    assert (r > 0).all()
    assert torch.equal(logits, raw[:, 1])


def test_beta_domain() -> None:
    raw = torch.cat([_raw(2), torch.tensor([[-200.0, -200.0]])])
    params = get_likelihood("beta").domain_map(raw)
    assert (params > 0).all()


def test_deterministic_domain_is_identity() -> None:
    raw = _raw(1)
    assert torch.equal(get_likelihood("deterministic-L1").domain_map(raw), raw)


@pytest.mark.parametrize("name", ALL)
def test_domain_map_keeps_leading_dims(name: str) -> None:
    likelihood = get_likelihood(name)
    raw = torch.randn(2, 3, 5, likelihood.num_args, generator=torch.Generator().manual_seed(0))
    assert likelihood.domain_map(raw).shape == raw.shape


# ---------------------------------------------------------------------------------------------
# nll against torch.distributions (float64 so the comparison is tight)


def test_student_t_nll() -> None:
    g = torch.Generator().manual_seed(1)
    df = 2.1 + 20 * torch.rand(64, generator=g, dtype=torch.float64)
    loc = torch.randn(64, generator=g, dtype=torch.float64)
    sigma = 0.05 + 3 * torch.rand(64, generator=g, dtype=torch.float64)
    scale = 0.01 + 100 * torch.rand(64, generator=g, dtype=torch.float64)
    y = 50 * torch.randn(64, generator=g, dtype=torch.float64)
    nll = get_likelihood("student-T").nll(torch.stack((df, loc, sigma), -1), y, scale)
    expected = -D.StudentT(df, loc * scale, sigma * scale).log_prob(y)
    torch.testing.assert_close(nll, expected, rtol=1e-10, atol=1e-10)


def test_gaussian_nll() -> None:
    g = torch.Generator().manual_seed(2)
    loc = torch.randn(64, generator=g, dtype=torch.float64)
    sigma = 0.05 + 3 * torch.rand(64, generator=g, dtype=torch.float64)
    scale = 0.01 + 100 * torch.rand(64, generator=g, dtype=torch.float64)
    y = 50 * torch.randn(64, generator=g, dtype=torch.float64)
    nll = get_likelihood("gaussian").nll(torch.stack((loc, sigma), -1), y, scale)
    expected = -D.Normal(loc * scale, sigma * scale).log_prob(y)
    torch.testing.assert_close(nll, expected, rtol=1e-10, atol=1e-10)


def test_negative_binomial_nll() -> None:
    g = torch.Generator().manual_seed(3)
    r = 0.1 + 10 * torch.rand(64, generator=g, dtype=torch.float64)
    logits = 2 * torch.randn(64, generator=g, dtype=torch.float64)
    scale = 0.1 + 30 * torch.rand(64, generator=g, dtype=torch.float64)
    k = torch.randint(0, 200, (64,), generator=g).double()
    nll = get_likelihood("negative-binomial").nll(torch.stack((r, logits), -1), k, scale)
    expected = -D.NegativeBinomial(total_count=r, logits=logits + scale.log()).log_prob(k)
    torch.testing.assert_close(nll, expected, rtol=1e-10, atol=1e-10)


def test_beta_nll() -> None:
    g = torch.Generator().manual_seed(4)
    a = 0.2 + 10 * torch.rand(64, generator=g, dtype=torch.float64)
    b = 0.2 + 10 * torch.rand(64, generator=g, dtype=torch.float64)
    y = 0.01 + 0.98 * torch.rand(64, generator=g, dtype=torch.float64)
    scale = 1 + 100 * torch.rand(64, generator=g, dtype=torch.float64)  # beta is not scaled
    nll = get_likelihood("beta").nll(torch.stack((a, b), -1), y, scale)
    expected = -D.Beta(a, b).log_prob(y)
    torch.testing.assert_close(nll, expected, rtol=1e-10, atol=1e-10)


def test_deterministic_nll_is_l1_in_scaled_units() -> None:
    params = torch.tensor([[1.0], [-2.0], [0.5]], dtype=torch.float64)
    y = torch.tensor([4.0, -2.0, 0.0], dtype=torch.float64)
    scale = torch.tensor([2.0, 10.0, 4.0], dtype=torch.float64)
    # |4/2 - 1| = 1, |-2/10 + 2| = 1.8, |0/4 - 0.5| = 0.5
    expected = torch.tensor([1.0, 1.8, 0.5], dtype=torch.float64)
    torch.testing.assert_close(get_likelihood("deterministic-L1").nll(params, y, scale), expected)


# ---------------------------------------------------------------------------------------------
# Sampling statistics


def test_student_t_moments() -> None:
    df, loc, sigma, s = 10.0, 0.3, 0.7, 2.5
    mean, variance = s * loc, df / (df - 2) * sigma**2 * s**2  # 0.75, 3.828
    draws = _draw("student-T", [df, loc, sigma], s)
    # SE(mean) = sqrt(3.83 / N) = 0.0044 -> tolerance 0.03 (~7 SE); kurtosis 3 + 6/(df - 4)
    # = 4 -> SE(var)/var = sqrt(3 / N) = 0.0039 -> tolerance 3% (~8 SE).
    _check_moments(draws, mean, variance, mean_tol=0.03, var_rel=0.03)


def test_student_t_median_and_tail() -> None:
    # Heavier tails than the normal of the same variance: check P(|Y - loc| > 3 sigma) too.
    df, loc, sigma, s = 3.0, -1.0, 2.0, 1.0
    draws = _draw("student-T", [df, loc, sigma], s, seed=3).double()
    assert abs(draws.median().item() - loc) < 0.03  # SE(median) ~ 0.005
    tail = ((draws - loc).abs() > 3 * sigma).double().mean().item()
    # Student-T with 3 df has a closed-form CDF: F(t) = 1/2 + (t / (sqrt3 (1 + t^2/3))
    # + atan(t / sqrt3)) / pi; at t = 3: 1/2 + (sqrt3 / 4 + pi/3) / pi.
    expected = 2 * (1 - (0.5 + (math.sqrt(3) / 4 + math.pi / 3) / math.pi))  # 0.0577
    assert abs(tail - expected) < 0.003  # SE = sqrt(p(1-p)/N) = 0.0005


def test_gaussian_moments() -> None:
    loc, sigma, s = -1.2, 0.5, 3.0
    draws = _draw("gaussian", [loc, sigma], s)
    # SE(mean) = 1.5 / sqrt(N) = 0.0034 -> 0.02 (~6 SE); SE(var)/var = sqrt(2 / N) = 0.0032
    # -> 2% (~6 SE).
    _check_moments(draws, s * loc, (s * sigma) ** 2, mean_tol=0.02, var_rel=0.02)


def test_negative_binomial_moments() -> None:
    r, logits, s = 3.0, math.log(2.0), 1.5
    # logits + log s = log 3: mean r e^logits s = 9, variance mean (1 + e^logits s) = 36
    mean, variance = r * math.exp(logits) * s, r * math.exp(logits) * s * (1 + math.exp(logits) * s)
    draws = _draw("negative-binomial", [r, logits], s)
    assert (draws >= 0).all()
    assert torch.equal(draws, draws.round())  # counts
    # SE(mean) = 6 / sqrt(N) = 0.013 -> 0.08 (~6 SE); excess kurtosis ~2.7 -> SE(var)/var
    # ~ sqrt(4.7 / N) = 0.005 -> 4% (~8 SE).
    _check_moments(draws, mean, variance, mean_tol=0.08, var_rel=0.04)


def test_beta_moments_ignore_the_scale() -> None:
    a, b = 2.0, 5.0
    mean, variance = a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1))
    draws = _draw("beta", [a, b], 10.0)  # beta is unscaled: the scale must not matter
    assert (draws >= 0).all()
    assert (draws <= 1).all()
    # SE(mean) = sqrt(0.0255 / N) = 0.00036 -> 0.002 (~6 SE); SE(var)/var ~ 0.003 -> 2%.
    _check_moments(draws, mean, variance, mean_tol=0.002, var_rel=0.02)


def test_deterministic_draws_are_the_scaled_location() -> None:
    draws = _draw("deterministic-L1", [1.25], 4.0)
    assert torch.equal(draws, torch.full((N,), 5.0))


# ---------------------------------------------------------------------------------------------
# The generator

PARAMS = {
    "student-T": [4.0, 0.0, 1.0],
    "gaussian": [0.0, 1.0],
    "negative-binomial": [2.0, 1.0],
    "beta": [2.0, 2.0],
    "deterministic-L1": [1.0],
}


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_draws_different_seed_different(name: str) -> None:
    likelihood = get_likelihood(name)
    params, scale = _rows(PARAMS[name], 1000), torch.full((1000,), 2.0)

    def draw(seed: int) -> torch.Tensor:
        return likelihood.sample(params, scale, torch.Generator().manual_seed(seed))

    first = draw(7)
    assert first.shape == (1000,)
    assert first.numpy().tobytes() == draw(7).numpy().tobytes()
    if name == "deterministic-L1":
        assert torch.equal(draw(8), first)  # nothing random to differ
    else:
        other = draw(8)
        assert (other != first).float().mean() > 0.5
        assert first.unique().numel() > 20  # the rows are not one repeated draw


def test_student_t_consumes_randomness_like_torch_distributions() -> None:
    """A.11: normal first, then gamma: the same draws as StudentT(...).sample() * s."""
    df, loc, sigma, s = 5.0, 0.5, 1.5, 3.0
    torch.manual_seed(11)
    expected = D.StudentT(torch.full((500,), df), loc, sigma).sample() * s
    generator = torch.Generator().manual_seed(11)
    draws = get_likelihood("student-T").sample(
        _rows([df, loc, sigma], 500), torch.full((500,), s), generator
    )
    torch.testing.assert_close(draws, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("layout", ["rows", "argument-major"])
def test_draw_is_sample_of_domain_map_bit_for_bit(name: str, layout: str) -> None:
    """The sampler's per-step ``draw(raw)`` skips the stacked parameters for speed; its
    draws must be exactly ``sample(domain_map(raw))``, from raw head outputs laid out as
    the torch path's (rows) and the fused path's (a transposed argument-major buffer)."""
    likelihood = get_likelihood(name)
    n = 5000
    raw = torch.randn(likelihood.num_args, n, generator=torch.Generator().manual_seed(3)) * 4
    raw = raw.t() if layout == "argument-major" else raw.t().contiguous()
    scale = torch.rand(n, generator=torch.Generator().manual_seed(4)) * 100 + 0.5
    fast = likelihood.draw(raw, scale, torch.Generator().manual_seed(5))
    slow = likelihood.sample(likelihood.domain_map(raw), scale, torch.Generator().manual_seed(5))
    assert fast.numpy().tobytes() == slow.numpy().tobytes()
    if name != "deterministic-L1":
        assert fast.unique().numel() > n // 10  # draws, not one repeated value
