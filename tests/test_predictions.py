"""Predictions (score, eps, x0, v) and the EDM preconditioning against closed forms.

Truth: for x_t = m x0 + s eps built from known x0 and eps, the conversions must return those
x0 and eps; for Gaussian data N(mu, C) the denoiser must equal the posterior mean
E[x0 | x_t] = mu + m C (m^2 C + s^2 I)^{-1} (x_t - m mu), solved here with numpy; the
preconditioning must equal the formulas of Karras et al. (2022), table 1.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gaussians import Gaussian

from sde_jax import VESDE, VPSDE, SubVPSDE, predictions, steppers
from sde_jax.predictions import (
    EDMPreconditioning,
    VEPreconditioning,
    VPPreconditioning,
)

SDES = [VPSDE(), SubVPSDE(), VESDE()]
SDE_IDS = ["vp", "subvp", "ve"]
BATCH, DIM = 6, 3
DATA = Gaussian.random(DIM, seed=4)
SIGMAS = np.array([0.002, 0.05, 0.5, 1.0, 7.0, 80.0])


@pytest.fixture(autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


def noisy_batch(sde, seed=0):
    """Known x0, eps, t in [0.05, 1], and x_t = m x0 + s eps, with m, s shaped [batch, 1]."""
    rng = np.random.default_rng(seed)
    x0, eps = rng.standard_normal((2, BATCH, DIM))
    t = rng.uniform(0.05, 1.0, BATCH)
    m = np.asarray(sde.mean_coeff(jnp.asarray(t)))[:, None]
    s = np.asarray(sde.marginal_std(jnp.asarray(t)))[:, None]
    return x0, eps, t, m, s, m * x0 + s * eps


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_conversions_recover_the_x0_and_eps_that_made_x(sde):
    x0, eps, t, m, s, x = noisy_batch(sde)
    r = np.sqrt(m**2 + s**2)
    truth = {"score": -eps / s, "eps": eps, "x0": x0, "v": (m * eps - s * x0) / r}
    for source, value in truth.items():
        for target, expected in truth.items():
            got = predictions.convert(sde, x, t, value, source, target)
            np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)
    if isinstance(sde, VPSDE):  # r = 1: Salimans & Ho's v = alpha eps - sigma x0 as is
        np.testing.assert_allclose(truth["v"], m * eps - s * x0, rtol=1e-12)


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_array_conversions_round_trip(sde, prediction):
    *_, t, _, _, x = noisy_batch(sde, seed=1)
    score = np.random.default_rng(2).standard_normal(x.shape)
    to = getattr(predictions, f"{prediction}_from_score")
    back = getattr(predictions, f"score_from_{prediction}")
    np.testing.assert_allclose(back(sde, x, t, to(sde, x, t, score)), score, rtol=1e-10)
    np.testing.assert_allclose(to(sde, x, t, back(sde, x, t, score)), score, rtol=1e-10)


def posterior_mean(m, s, x):
    """E[x0 | x_t] for DATA: mu + m C (m^2 C + s^2 I)^{-1} (x - m mu); m, s [batch, 1]."""
    cov, eye = DATA.cov, np.eye(DIM)
    out = []
    for mi, si, xi in zip(m[:, 0], s[:, 0], x, strict=True):
        gain = mi * cov @ np.linalg.inv(mi**2 * cov + si**2 * eye)
        out.append(DATA.mean + gain @ (xi - mi * DATA.mean))
    return np.stack(out)


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
@pytest.mark.parametrize("prediction", ["score", "eps", "x0", "v"])
def test_function_wrappers_round_trip_the_gaussian_score(sde, prediction):
    *_, t, m, s, x = noisy_batch(sde, seed=3)
    score_fn = DATA.score_fn(sde)
    fn = predictions.from_score_fn(sde, score_fn, prediction)
    back = predictions.to_score_fn(sde, fn, prediction)
    np.testing.assert_allclose(back(x, t), score_fn(x, jnp.asarray(t)), rtol=1e-9, atol=1e-9)
    if prediction == "x0":  # the denoiser of the exact score is the posterior mean
        np.testing.assert_allclose(fn(x, t), posterior_mean(m, s, x), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(steppers.denoise(sde, score_fn, x, t), fn(x, t), rtol=1e-12)


def test_a_scalar_time_is_shared_by_the_batch():
    sde = VPSDE()
    x = np.random.default_rng(0).standard_normal((BATCH, DIM))
    denoiser = predictions.from_score_fn(sde, DATA.score_fn(sde), "x0")
    np.testing.assert_allclose(denoiser(x, 0.3), denoiser(x, jnp.full(BATCH, 0.3)))


def test_bad_arguments_name_themselves():
    sde, x = VPSDE(), jnp.zeros((BATCH, DIM))
    with pytest.raises(ValueError, match=r"prediction must be one of \['score', 'eps'.*'noise'"):
        predictions.to_score_fn(sde, lambda x, t: x, "noise")
    with pytest.raises(ValueError, match=r"target must be one of .*got 'data'"):
        predictions.convert(sde, x, 0.5, x, "eps", "data")
    with pytest.raises(ValueError, match=r"shape of x, \(6, 3\), got \(6, 2\)"):
        predictions.x0_from_score(sde, x, 0.5, jnp.zeros((BATCH, 2)))
    with pytest.raises(ValueError, match=r"t must have shape"):
        predictions.eps_from_score(sde, x, jnp.zeros(BATCH + 1), x)
    with pytest.raises(TypeError, match=r"sde must be an sde_jax.SDE, got 'vp'"):
        predictions.from_score_fn("vp", lambda x, t: x, "x0")
    with pytest.raises(TypeError, match=r"score_fn must be a function"):
        predictions.from_score_fn(sde, None, "x0")


# --- EDM preconditioning ---------------------------------------------------------------------


def table_1(name, sigma, sigma_data=0.5, beta_min=0.1, beta_d=19.9, big_m=1000):
    """Karras et al. (2022), table 1, written out: (c_skip, c_out, c_in, c_noise)."""
    one = np.ones_like(sigma)
    if name == "edm":
        total = sigma**2 + sigma_data**2
        return (
            sigma_data**2 / total,
            sigma * sigma_data / np.sqrt(total),
            1 / np.sqrt(total),
            np.log(sigma) / 4,
        )
    if name == "ve":
        return one, sigma, one, np.log(sigma / 2)
    t = (np.sqrt(beta_min**2 + 2 * beta_d * np.log(sigma**2 + 1)) - beta_min) / beta_d
    return one, -sigma, 1 / np.sqrt(sigma**2 + 1), (big_m - 1) * t


def sigma_of_c_noise(name, c_noise, beta_min=0.1, beta_d=19.9):
    """Inverts table 1's c_noise: what a test network knows of the noise level."""
    if name == "edm":
        return jnp.exp(4 * c_noise)
    if name == "ve":
        return 2 * jnp.exp(c_noise)
    t = c_noise / 999
    return jnp.sqrt(jnp.expm1(beta_min * t + 0.5 * beta_d * t**2))


PRECONDITIONINGS = {
    "edm": EDMPreconditioning(),
    "ve": VEPreconditioning(),
    "vp": VPPreconditioning(),
}


@pytest.mark.parametrize("name", ["edm", "ve", "vp"])
def test_scalings_are_karras_table_1(name):
    got = PRECONDITIONINGS[name].scalings(jnp.asarray(SIGMAS))
    for value, expected in zip(got, table_1(name, SIGMAS), strict=True):
        # 1e-10: the table's log(sigma^2 + 1) loses digits at sigma = 0.002; the code uses log1p.
        np.testing.assert_allclose(value, expected, rtol=1e-10)
    other = EDMPreconditioning(sigma_data=1.3).scalings(jnp.asarray(SIGMAS))
    np.testing.assert_allclose(np.stack(other), np.stack(table_1("edm", SIGMAS, 1.3)), rtol=1e-12)


def test_vp_preconditioning_gives_the_network_999_t_on_the_vp_sde():
    sde, t = VPSDE(), jnp.linspace(1e-5, 1.0, 7)
    sigma = sde.marginal_std(t) / sde.mean_coeff(t)
    np.testing.assert_allclose(VPPreconditioning().time_of_sigma(sigma), t, rtol=1e-9)
    np.testing.assert_allclose(VPPreconditioning().scalings(sigma).c_noise, 999 * t, rtol=1e-9)


def gaussian_network(name):
    """The F for which the preconditioned denoiser of DATA is exact, from (x_in, c_noise) only."""

    def network(x_in, c_noise):
        sigma = sigma_of_c_noise(name, c_noise)
        c_skip, c_out, c_in, _ = table_1(name, np.asarray(sigma))
        x_hat = x_in / c_in[:, None]
        # x_hat = x0 + sigma eps: the posterior mean with m = 1, s = sigma.
        ones = np.ones((len(sigma), 1))
        target = posterior_mean(ones, np.asarray(sigma)[:, None], np.asarray(x_hat))
        return (target - c_skip[:, None] * x_hat) / c_out[:, None]

    return network


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
@pytest.mark.parametrize("name", ["edm", "ve", "vp"])
def test_preconditioned_gaussian_network_is_the_posterior_mean(sde, name):
    *_, t, m, s, x = noisy_batch(sde, seed=5)
    network, precond = gaussian_network(name), PRECONDITIONINGS[name]
    denoiser = predictions.preconditioned_denoiser(sde, network, precond)
    np.testing.assert_allclose(denoiser(x, t), posterior_mean(m, s, x), rtol=1e-9, atol=1e-9)
    score_fn = predictions.preconditioned_score_fn(sde, network, precond)
    exact = DATA.score_fn(sde)(x, jnp.asarray(t))
    np.testing.assert_allclose(score_fn(x, t), exact, rtol=1e-8, atol=1e-8)


def test_preconditioned_score_fn_traces_under_jit():
    sde = VESDE()

    def network(x_in, c_noise):
        return jnp.tanh(x_in) * c_noise[:, None]

    score_fn = predictions.preconditioned_score_fn(sde, network, EDMPreconditioning())
    x, t = jnp.ones((BATCH, DIM)), jnp.linspace(0.1, 1.0, BATCH)
    np.testing.assert_allclose(jax.jit(score_fn)(x, t), score_fn(x, t), rtol=1e-12)
    static = jax.jit(lambda p, x: predictions.preconditioned_score_fn(sde, network, p)(x, t))
    np.testing.assert_allclose(static(VPPreconditioning(), x), static(VPPreconditioning(), x))


def test_preconditioning_choices_are_validated():
    assert predictions.get_preconditioning("edm", sigma_data=1.0) == EDMPreconditioning(1.0)
    assert predictions.get_preconditioning("vp") == VPPreconditioning()
    with pytest.raises(ValueError, match=r"one of \['edm', 've', 'vp'\], got 'iddpm'"):
        predictions.get_preconditioning("iddpm")
    with pytest.raises(ValueError, match=r"sigma_data must be finite and > 0, got -1"):
        EDMPreconditioning(sigma_data=-1)
    with pytest.raises(ValueError, match=r"beta_min must satisfy .*got beta_min=30"):
        VPPreconditioning(beta_min=30.0)
    with pytest.raises(ValueError, match=r"num_timesteps must be an integer >= 2, got 1.5"):
        VPPreconditioning(num_timesteps=1.5)
    with pytest.raises(TypeError, match=r"preconditioning must be an EDMPreconditioning"):
        predictions.preconditioned_denoiser(VPSDE(), lambda x, c: x, "edm")
