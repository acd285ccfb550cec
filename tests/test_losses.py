"""The training losses against truth on Gaussian data, whose perturbed scores are closed form.

For data N(mu, C) (C = U diag(lam) U^T) and a linear SDE, p_t = N(m mu, Sigma_t) with
Sigma_t = m^2 C + s^2 I. For a score a * grad log p_t, Tweedie's formula E[z | x_t] =
-s grad log p_t(x_t) gives

    E|s * score + z|^2 = D - (2a - a^2) s^2 tr(Sigma_t^{-1}),
    s^2 tr(Sigma_t^{-1}) = sum_k s^2 / (m^2 lam_k + s^2),

so the exact score (a = 1) attains the minimum D - s^2 tr(Sigma_t^{-1}) at every t, and any
other a pays (a - 1)^2 s^2 tr(Sigma_t^{-1}) more. The continuous losses average this over t
(scipy quad here, in float64 from the paper's formulas), the discrete ones over the N indices.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from sde_jax import VESDE, VPSDE, SubVPSDE
from sde_jax.losses import (
    ddpm_loss,
    dsm_loss,
    get_loss_fn,
    importance_normalizer,
    sample_importance_times,
    smld_loss,
)
from tests.gaussians import Gaussian

SDES = [VPSDE(), SubVPSDE(), VESDE()]
IDS = ["vp", "subvp", "ve"]
EPS = 1e-5
N = 1000
DIM = 4
GAUSS = Gaussian.random(DIM, seed=0)
BATCH = 1 << 15

# (likelihood_weighting, importance_sampling)
WEIGHTINGS = {"sigma2": (False, False), "likelihood": (True, False), "likelihood_is": (True, True)}


def coefficients(sde, t):
    """m(t), s(t), g(t)^2 written out from the paper, float64 numpy."""
    t = np.asarray(t, np.float64)
    if isinstance(sde, VESDE):
        ratio = sde.sigma_max / sde.sigma_min
        sigma = sde.sigma_min * ratio**t
        return np.ones_like(t), sigma, sigma**2 * 2 * np.log(ratio)
    b0, b1 = sde.beta_min, sde.beta_max
    big_b, beta = b0 * t + 0.5 * t**2 * (b1 - b0), b0 + t * (b1 - b0)
    if isinstance(sde, VPSDE):
        return np.exp(-big_b / 2), np.sqrt(-np.expm1(-big_b)), beta
    return np.exp(-big_b / 2), -np.expm1(-big_b), -beta * np.expm1(-2 * big_b)


def trace_term(m, s):
    """s^2 tr(Sigma_t^{-1}) for the test Gaussian."""
    m, s = np.asarray(m)[..., None], np.asarray(s)[..., None]
    return np.sum(s**2 / (m**2 * GAUSS.eigs + s**2), axis=-1)


def reduction(reduce_mean):
    return 1.0 / DIM if reduce_mean else 0.5


def analytic_dsm(sde, scale, likelihood_weighting, reduce_mean):
    """E over t ~ U(eps, 1) of the expected per-example loss of ``scale`` * exact score."""

    def integrand(log_t):
        t = math.exp(log_t)
        m, s, g2 = coefficients(sde, t)
        value = DIM - (2 * scale - scale**2) * trace_term(m, s)
        weight = g2 / s**2 if likelihood_weighting else 1.0
        return float(weight * value) * t

    # In log t: the likelihood-weighted integrand is ~1/t near eps for VP and sub-VP.
    value, _ = integrate.quad(integrand, math.log(EPS), 0.0, limit=200, epsabs=0, epsrel=1e-10)
    return reduction(reduce_mean) * value / (1 - EPS)


def scaled_score(score_fn, scale):
    return lambda x, t: scale * score_fn(x, t)


def mean_and_se(per_example):
    values = np.asarray(per_example, np.float64)
    return values.mean(), values.std(ddof=1) / math.sqrt(values.size)


class TableSDE:
    """m(t), s(t) from discrete tables at index round(t (N - 1)), for Gaussian.score_fn."""

    def __init__(self, means, stds):
        self.means, self.stds = jnp.asarray(means), jnp.asarray(stds)

    def _index(self, t):
        return jnp.round(t * (len(self.stds) - 1)).astype(jnp.int32)

    def mean_coeff(self, t):
        return self.means[self._index(t)]

    def marginal_std(self, t):
        return self.stds[self._index(t)]


def smld_tables(sde):
    sigmas = np.exp(np.linspace(np.log(sde.sigma_min), np.log(sde.sigma_max), N))
    return np.ones(N), sigmas


def ddpm_tables(sde):
    alphas_cumprod = np.cumprod(1 - np.linspace(sde.beta_min / N, sde.beta_max / N, N))
    return np.sqrt(alphas_cumprod), np.sqrt(1 - alphas_cumprod)


DISCRETE = {
    "smld": (smld_loss, VESDE(), smld_tables, False),
    "ddpm": (ddpm_loss, VPSDE(), ddpm_tables, True),
}


@pytest.fixture(scope="module")
def data():
    return GAUSS.sample(jax.random.key(1), BATCH).astype(jnp.float32)


# ----------------------------------------------------------------------------- minimum


@pytest.mark.parametrize("weighting", list(WEIGHTINGS))
@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_dsm_of_exact_score_attains_analytic_minimum(sde, weighting, data):
    """The Monte Carlo loss of the exact score matches the integrated DSM constant."""
    likelihood, importance = WEIGHTINGS[weighting]
    reduce_mean = isinstance(sde, VPSDE)
    key, exact = jax.random.key(2), GAUSS.score_fn(sde)
    kwargs = dict(
        reduce_mean=reduce_mean, likelihood_weighting=likelihood, importance_sampling=importance
    )
    out = dsm_loss(key, sde, exact, data, **kwargs)
    assert out.per_example.shape == (BATCH,)
    np.testing.assert_allclose(out.loss, jnp.mean(out.per_example), rtol=1e-6)
    mean, se = mean_and_se(out.per_example)
    assert abs(mean - analytic_dsm(sde, 1.0, likelihood, reduce_mean)) < 4 * se

    # A perturbed score costs (a - 1)^2 s^2 tr(Sigma^-1) more; common random numbers make the
    # excess precise.
    worse = dsm_loss(key, sde, scaled_score(exact, 1.1), data, **kwargs)
    excess, excess_se = mean_and_se(worse.per_example - out.per_example)
    expected_excess = analytic_dsm(sde, 1.1, likelihood, reduce_mean) - analytic_dsm(
        sde, 1.0, likelihood, reduce_mean
    )
    assert excess > 10 * excess_se
    assert abs(excess - expected_excess) < 4 * excess_se


@pytest.mark.parametrize("name", list(DISCRETE))
def test_discrete_loss_of_exact_score_attains_analytic_minimum(name, data):
    """SMLD / DDPM: the constant is the average over the N indices of D - s_i^2 tr(Sigma_i^-1)."""
    loss, sde, tables, reduce_mean = DISCRETE[name]
    means, stds = tables(sde)
    exact = GAUSS.score_fn(TableSDE(means, stds))
    key, rho = jax.random.key(3), reduction(reduce_mean)
    out = loss(key, sde, exact, data, reduce_mean=reduce_mean)
    mean, se = mean_and_se(out.per_example)
    assert abs(mean - rho * np.mean(DIM - trace_term(means, stds))) < 4 * se

    worse = loss(key, sde, scaled_score(exact, 1.1), data, reduce_mean=reduce_mean)
    excess, excess_se = mean_and_se(worse.per_example - out.per_example)
    assert excess > 10 * excess_se
    assert abs(excess - rho * 0.1**2 * np.mean(trace_term(means, stds))) < 4 * excess_se


# ----------------------------------------------------------------------------- gradients


def affine_score(score_fn, theta):
    """(I + M) score + b with theta = (M.ravel(), b): the exact score at theta = 0."""
    matrix = jnp.eye(DIM) + theta[: DIM * DIM].reshape(DIM, DIM)
    return lambda x, t: score_fn(x, t) @ matrix.T + theta[DIM * DIM :]


def mean_gradient(loss_of_score, score_fn, theta):
    """Mean and standard error over the batch of the per-example gradients (one fixed key)."""
    jac = jax.jacfwd(lambda th: loss_of_score(affine_score(score_fn, th)).per_example)(theta)
    jac = np.asarray(jac, np.float64)
    return jac.mean(0), jac.std(0, ddof=1) / math.sqrt(jac.shape[0])


GRADIENT_CASES = {
    f"{sde_id}-{weighting}": (sde, weighting)
    for sde, sde_id in zip(SDES, IDS, strict=True)
    for weighting in ("sigma2", "likelihood_is")
}


def gradient_case(name):
    if name in DISCRETE:
        loss, sde, tables, reduce_mean = DISCRETE[name]
        score_fn = GAUSS.score_fn(TableSDE(*tables(sde)))
        return lambda key, s, x: loss(key, sde, s, x, reduce_mean=reduce_mean), score_fn
    sde, weighting = GRADIENT_CASES[name]
    likelihood, importance = WEIGHTINGS[weighting]
    loss = get_loss_fn(sde, likelihood_weighting=likelihood, importance_sampling=importance)
    return loss, GAUSS.score_fn(sde)


def analytic_gradient_away(name, delta):
    """d E[loss] / d(M, b) at (delta I, 0): 2 rho delta E_t[w(t) s^2 Sigma_t^{-1}] and 0.

    From E[z s^T] = -s E[score score^T] = -s Sigma_t^{-1} (Tweedie), per eigendirection k of C.
    """
    if name in DISCRETE:
        _, sde, tables, reduce_mean = DISCRETE[name]
        means, stds = tables(sde)
        eigs = np.mean(
            stds[:, None] ** 2 / (means[:, None] ** 2 * GAUSS.eigs + stds[:, None] ** 2), 0
        )
    else:
        sde, weighting = GRADIENT_CASES[name]
        likelihood, reduce_mean = WEIGHTINGS[weighting][0], False

        def integrand(log_t, lam):
            t = math.exp(log_t)
            m, s, g2 = coefficients(sde, t)
            weight = g2 / s**2 if likelihood else 1.0
            return float(weight * s**2 / (m**2 * lam + s**2)) * t

        eigs = np.array(
            [
                integrate.quad(integrand, math.log(EPS), 0.0, args=(lam,), limit=200)[0]
                for lam in GAUSS.eigs
            ]
        ) / (1 - EPS)
    matrix = 2 * reduction(reduce_mean) * delta * (GAUSS.rotation * eigs) @ GAUSS.rotation.T
    return np.concatenate([matrix.ravel(), np.zeros(DIM)])


@pytest.mark.parametrize("name", list(GRADIENT_CASES) + list(DISCRETE))
def test_gradient_vanishes_at_exact_score(name, data):
    """d E[loss] / d(M, b) is zero at the exact score and matches the closed form at (0.1 I, 0)."""
    loss, score_fn = gradient_case(name)

    def loss_of_score(s):
        return loss(jax.random.key(4), s, data)

    optimum = jnp.zeros(DIM * DIM + DIM)
    grad, se = mean_gradient(loss_of_score, score_fn, optimum)
    assert np.all(np.abs(grad) < 5 * se), np.abs(grad) / se
    away = optimum.at[: DIM * DIM].set(0.1 * jnp.eye(DIM).ravel())
    grad_away, se_away = mean_gradient(loss_of_score, score_fn, away)
    expected = analytic_gradient_away(name, 0.1)
    assert np.all(np.abs(grad_away - expected) < 5 * se_away), (
        np.abs(grad_away - expected) / se_away
    )
    # Measured 0.04-0.11: the optimum gradient is noise, an order below the signal away.
    assert np.linalg.norm(grad) < 0.2 * np.linalg.norm(expected)


# ----------------------------------------------------------------------------- importance sampling


def quad_cdf(sde, t):
    """CDF of q(t) ~ g^2 / s^2 on [eps, 1] by quadrature of the paper's coefficients."""

    def density(log_t):
        _, s, g2 = coefficients(sde, math.exp(log_t))
        return float(g2 / s**2) * math.exp(log_t)

    total = integrate.quad(density, math.log(EPS), 0.0, limit=200, epsrel=1e-10)[0]
    part = integrate.quad(density, math.log(EPS), math.log(t), limit=200, epsrel=1e-10)[0]
    return part / total, total


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_importance_times_follow_proposal(sde):
    """Empirical CDF within the DKW band (failure probability 1e-4) at several times."""
    n = 100_000
    t = np.asarray(sample_importance_times(jax.random.key(5), sde, n, eps=EPS))
    assert t.min() >= EPS and t.max() <= 1.0
    band = math.sqrt(math.log(2 / 1e-4) / (2 * n))
    for point in [1e-4, 1e-3, 1e-2, 0.1, 0.5, 0.9]:
        cdf, total = quad_cdf(sde, point)
        assert abs(np.mean(t <= point) - cdf) < band, point
    np.testing.assert_allclose(importance_normalizer(sde, EPS), total, rtol=1e-7)


@pytest.mark.parametrize("sde", SDES[:2], ids=IDS[:2])
def test_importance_sampling_is_unbiased_with_lower_variance(sde, data):
    """Same expected loss as uniform t with likelihood weighting, for a non-optimal score too."""
    score_fn = scaled_score(GAUSS.score_fn(sde), 1.1)
    outs = [
        dsm_loss(
            jax.random.key(6),
            sde,
            score_fn,
            data,
            likelihood_weighting=True,
            importance_sampling=imp,
        )
        for imp in (False, True)
    ]
    (uniform, uniform_se), (weighted, weighted_se) = map(mean_and_se, (o.per_example for o in outs))
    assert abs(uniform - weighted) < 4 * math.hypot(uniform_se, weighted_se)
    assert abs(weighted - analytic_dsm(sde, 1.1, True, False)) < 4 * weighted_se
    # Measured: about 150x (VP) and 200x (sub-VP) with the exact score.
    assert uniform_se**2 > 30 * weighted_se**2


def test_importance_sampling_for_ve_is_the_uniform_estimator(data):
    """g^2 / sigma^2 is constant for VE: the proposal is uniform and the weight is g^2."""
    sde = VESDE()
    score_fn = GAUSS.score_fn(sde)
    outs = [
        dsm_loss(
            jax.random.key(7),
            sde,
            score_fn,
            data,
            likelihood_weighting=True,
            importance_sampling=imp,
        )
        for imp in (False, True)
    ]
    np.testing.assert_allclose(outs[0].per_example, outs[1].per_example, rtol=2e-4)
