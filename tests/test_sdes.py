"""The SDE library against closed forms, Monte Carlo, the DDPM/SMLD formulas and calculus.

Every SDE, the cosine VP and EDM SDEs included, also against its noise geometry written out
from the papers: the half log-SNR lambda = log(m/s), sigma = s/m and their inverses.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gaussians import BrownianSDE
from scipy import stats

import sde_jax
from sde_jax import (
    EDMSDE,
    VESDE,
    VPSDE,
    CosineVPSDE,
    SubVPSDE,
    probability_flow_drift,
    reverse_drift,
)
from sde_jax.sdes import check_log_snr_inverse

SDES = [VPSDE(), SubVPSDE(), VESDE(), CosineVPSDE(), EDMSDE()]
IDS = ["vp", "subvp", "ve", "cosine", "edm"]
FRACTIONS = np.array([1e-5, 1e-3, 0.05, 0.3, 0.7, 1.0])
"""Times as fractions of the horizon T (1 for VP, sub-VP, VE; 0.9946 cosine; 80 EDM)."""


def closed_form(sde, t):
    """Mean coefficient and std written out from the papers, in float64 numpy."""
    t = np.asarray(t, np.float64)
    if isinstance(sde, VESDE):
        return np.ones_like(t), 0.01 * (50.0 / 0.01) ** t
    if isinstance(sde, EDMSDE):  # Karras et al. 2022, table 1: sigma(t) = t, s(t) = 1
        return np.ones_like(t), t
    if isinstance(sde, CosineVPSDE):  # Nichol and Dhariwal 2021, eq. 17
        f = np.cos((t + 0.008) / 1.008 * np.pi / 2) ** 2
        alpha_bar = f / np.cos(0.008 / 1.008 * np.pi / 2) ** 2
        return np.sqrt(alpha_bar), np.sqrt(1 - alpha_bar)
    log_mean = -0.25 * t**2 * (20.0 - 0.1) - 0.5 * t * 0.1
    var_vp = 1.0 - np.exp(2.0 * log_mean)
    std = np.sqrt(var_vp) if isinstance(sde, VPSDE) else var_vp
    return np.exp(log_mean), std


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_marginal_prob_matches_closed_form(sde):
    t = (FRACTIONS * sde.T).astype(np.float32)
    x = np.random.default_rng(0).standard_normal((6, 4, 4, 3)).astype(np.float32)
    mean, std = sde.marginal_prob(jnp.asarray(x), jnp.asarray(t))
    m_ref, s_ref = closed_form(sde, t.astype(np.float64))
    np.testing.assert_allclose(std, s_ref, rtol=2e-6)
    # Cosine VP at T: m = cos(phi) ~ 0.008 with phi ~ pi/2 carries float32's absolute error.
    rtol = 2e-5 if isinstance(sde, CosineVPSDE) else 2e-6
    np.testing.assert_allclose(mean, m_ref[:, None, None, None] * x, rtol=rtol, atol=1e-7)


def simulate_forward(sde, x0, key, times, num_steps):
    """Euler-Maruyama on a fine grid from 0 to T; returns x at each of ``times``."""
    dt = sde.T / num_steps

    def step(x, inputs):
        t, k = inputs
        drift, diffusion = sde.sde(x, jnp.full((x.shape[0],), t))
        x = x + drift * dt + diffusion[:, None] * math.sqrt(dt) * jax.random.normal(k, x.shape)
        return x, x

    grid = jnp.arange(num_steps) * dt
    _, path = jax.lax.scan(step, x0, (grid, jax.random.split(key, num_steps)))
    idx = np.round(np.asarray(times) / dt).astype(int) - 1
    return path[idx]


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_marginals_match_monte_carlo_of_forward_sde(sde):
    n, dim, x0_value = 4096, 8, 1.5
    key0, key = jax.random.split(jax.random.key(0))
    x0 = jnp.full((n, dim), x0_value)
    if isinstance(sde, VESDE):
        # The VE marginal std sigma(t) counts N(0, sigma_min^2) already present at t = 0.
        x0 = x0 + sde.sigma_min * jax.random.normal(key0, x0.shape)
    times = [0.1 * sde.T, 0.5 * sde.T, sde.T]
    path = simulate_forward(sde, x0, key, times, num_steps=8000)
    for t, xt in zip(times, path, strict=True):
        m, s = closed_form(sde, t)
        samples = np.asarray(xt, np.float64).ravel()
        count = samples.size
        # Statistical error only; the scheme's O(dt) bias is about 0.2% here.
        assert abs(samples.mean() - m * x0_value) < 4 * s / math.sqrt(count), t
        assert abs(samples.var() / s**2 - 1) < 4 * math.sqrt(2 / count) + 3e-3, t


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_drift_and_diffusion_solve_moment_odes(sde):
    """d m/dt = f m and d s^2/dt = 2 f s^2 + g^2, differentiated with jax.grad in float64."""
    with jax.enable_x64(True):
        var = jax.vmap(jax.grad(lambda t: sde.marginal_std(t) ** 2))
        dmean = jax.vmap(jax.grad(sde.mean_coeff))
        t = jnp.linspace(0.01, 1.0, 25, dtype=jnp.float64) * sde.T
        f, g = sde.drift_coeff(t), sde.diffusion_coeff(t)
        np.testing.assert_allclose(var(t), 2 * f * sde.marginal_std(t) ** 2 + g**2, rtol=1e-10)
        np.testing.assert_allclose(dmean(t), f * sde.mean_coeff(t), rtol=1e-10)
        # sde() and marginal_prob() use the same coefficients.
        x = jnp.ones((25, 2), jnp.float64)
        drift, diffusion = sde.sde(x, t)
        np.testing.assert_allclose(drift[:, 0], f, rtol=1e-12)
        np.testing.assert_allclose(diffusion, g, rtol=1e-12)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_prior_logp_is_gaussian_log_density(sde):
    z = sde.prior_sampling(jax.random.key(1), (5, 3, 4))
    assert z.shape == (5, 3, 4) and z.dtype == jnp.float32
    ref = stats.norm.logpdf(np.asarray(z, np.float64), scale=sde.prior_std).sum(axis=(1, 2))
    np.testing.assert_allclose(sde.prior_logp(z), ref, rtol=1e-5)


def test_prior_samples_have_prior_std():
    z = VESDE().prior_sampling(jax.random.key(2), (20000,))
    assert abs(float(jnp.std(z)) / 50.0 - 1) < 0.03


def test_vp_discretize_is_the_ddpm_step():
    sde, n = VPSDE(), 1000
    betas = np.linspace(0.1 / n, 20.0 / n, n)  # Ho et al.'s schedule as the original builds it
    np.testing.assert_allclose(sde.discrete_betas(n), betas, rtol=1e-6)
    i = np.array([0, 1, 500, 999])
    t = jnp.asarray(i / (n - 1), jnp.float32)
    x = jax.random.normal(jax.random.key(3), (4, 7))
    z = jax.random.normal(jax.random.key(4), (4, 7))
    f, g = sde.discretize(x, t, 1.0 / n)
    expected = np.sqrt(1 - betas[i])[:, None] * x + np.sqrt(betas[i])[:, None] * z
    np.testing.assert_allclose(x + f + g[:, None] * z, expected, rtol=1e-5, atol=1e-6)


def test_ddpm_chain_converges_to_continuous_vp_marginal():
    """prod(1 - beta_i) -> m(1)^2 as N grows, with first-order error."""
    sde = VPSDE()
    with jax.enable_x64(True):
        errors = []
        for n in (250, 500, 1000, 2000):
            alpha_bar = np.prod(1 - np.asarray(sde.discrete_betas(n), np.float64))
            errors.append(abs(math.log(alpha_bar) - math.log(float(sde.mean_coeff(1.0)) ** 2)))
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    np.testing.assert_allclose(orders, 1.0, atol=0.1)


def test_ve_discretize_is_the_smld_step():
    sde, n = VESDE(), 1000
    sigmas = np.exp(np.linspace(np.log(0.01), np.log(50.0), n))  # ascending, index = time
    np.testing.assert_allclose(sde.discrete_sigmas(n), sigmas, rtol=1e-5)
    i = np.array([0, 1, 500, 999])
    t = jnp.asarray(i / (n - 1), jnp.float32)
    x = jax.random.normal(jax.random.key(5), (4, 3))
    f, g = sde.discretize(x, t, 1.0 / (n - 1))
    previous = np.where(i == 0, 0.0, sigmas[np.maximum(i - 1, 0)])
    np.testing.assert_array_equal(f, 0.0)
    np.testing.assert_allclose(g, np.sqrt(sigmas[i] ** 2 - previous**2), rtol=1e-4)


def test_subvp_discretize_is_euler_maruyama():
    sde = SubVPSDE()
    x = jax.random.normal(jax.random.key(6), (3, 5))
    t, dt = jnp.array([0.2, 0.5, 0.9]), 1e-3
    f, g = sde.discretize(x, t, dt)
    drift, diffusion = sde.sde(x, t)
    np.testing.assert_allclose(f, drift * dt, rtol=1e-6)
    np.testing.assert_allclose(g, diffusion * math.sqrt(dt), rtol=1e-6)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_reverse_and_probability_flow_drifts_on_gaussian_data(sde):
    """Data N(0, v0 I): p_t = N(0, v(t) I) with v = m^2 v0 + s^2, score -x / v(t).

    The probability-flow ODE moves x as sqrt(v(t)), so its velocity is x v'/(2v); the
    reverse SDE integrated backwards keeps the variance v(t) when its drift is
    x (v' + g^2) / (2v).
    """
    v0 = 0.7

    def variance(t):
        return sde.mean_coeff(t) ** 2 * v0 + sde.marginal_std(t) ** 2

    def score_fn(x, t):
        return -x / variance(t)[:, None]

    # float64: near t = 1 the VP velocity is a small difference of large terms.
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.key(7), (4, 6), jnp.float64)
        t = jnp.array([0.05, 0.2, 0.6, 1.0], jnp.float64) * sde.T
        dv = jax.vmap(jax.grad(variance))(t)
        v, g2 = variance(t), sde.diffusion_coeff(t) ** 2
        pf_velocity = probability_flow_drift(sde, score_fn, x, t)
        np.testing.assert_allclose(pf_velocity, x * (dv / (2 * v))[:, None], rtol=1e-9)
        reverse = reverse_drift(sde, score_fn, x, t)
        np.testing.assert_allclose(reverse, x * ((dv + g2) / (2 * v))[:, None], rtol=1e-9)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_float32_and_float64_stay_in_their_dtype(sde):
    for dtype in (jnp.float32, jnp.float64):
        with jax.enable_x64(dtype == jnp.float64):
            x = jnp.ones((2, 3), dtype)
            t = jnp.array([0.1, 0.9], dtype)
            outputs = [
                *sde.sde(x, t),
                *sde.marginal_prob(x, t),
                *sde.discretize(x, t, 0.01),
                sde.prior_logp(x),
                sde.prior_sampling(jax.random.key(0), (2, 3), dtype),
            ]
            assert all(o.dtype == dtype for o in outputs), [o.dtype for o in outputs]


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_jit_vmap_grad_and_pytree(sde):
    assert jax.tree_util.tree_leaves(sde) == []
    assert jax.tree_util.tree_unflatten(*reversed(jax.tree_util.tree_flatten(sde))) == sde
    x, t = jnp.ones((3, 2)), jnp.array([0.1, 0.5, 0.9])

    @jax.jit
    def mean(sde, x, t):
        return sde.marginal_prob(x, t)[0]

    np.testing.assert_allclose(mean(sde, x, t), sde.marginal_prob(x, t)[0], rtol=1e-6)
    batched = jax.vmap(lambda xs: sde.marginal_prob(xs, t)[1])(jnp.ones((4, 3, 2)))
    assert batched.shape == (4, 3)
    grads = jax.grad(lambda t: sde.marginal_prob(x, t)[1].sum())(t)
    assert grads.shape == (3,) and bool(jnp.all(jnp.isfinite(grads)))


def test_scalar_time_broadcasts_over_batch():
    sde = VPSDE()
    x = jnp.ones((3, 2))
    np.testing.assert_allclose(
        sde.marginal_prob(x, 0.4)[1], sde.marginal_prob(x, jnp.full(3, 0.4))[1]
    )


@pytest.mark.parametrize(
    ("make", "names"),
    [
        (lambda: VPSDE(beta_min=20.0, beta_max=0.1), ["beta_min", "beta_max", "20.0"]),
        (lambda: SubVPSDE(beta_min=1.0, beta_max=1.0), ["beta_min", "beta_max"]),
        (lambda: VPSDE(beta_min=-0.1), ["beta_min", "-0.1"]),
        (lambda: VESDE(sigma_min=0.0), ["sigma_min", "0.0", "> 0"]),
        (lambda: VESDE(sigma_min=-1.0), ["sigma_min"]),
        (lambda: VESDE(sigma_min=60.0, sigma_max=50.0), ["sigma_min", "sigma_max", "60.0"]),
        (lambda: VESDE(sigma_max=float("nan")), ["sigma_max", "finite"]),
    ],
)
def test_bad_parameters_raise_value_error_naming_them(make, names):
    with pytest.raises(ValueError) as info:
        make()
    for name in names:
        assert name in str(info.value)


def test_non_numeric_parameter_raises_type_error():
    with pytest.raises(TypeError, match="beta_max"):
        VPSDE(beta_max="20")


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_mismatched_batch_raises_before_tracing(sde):
    x, t = jnp.ones((4, 3)), jnp.ones((5,))
    for method in (sde.sde, sde.marginal_prob):
        with pytest.raises(ValueError, match=r"t must have shape .*\(4,\).*got shape \(5,\)"):
            method(x, t)
    with pytest.raises(ValueError, match="t must have shape"):
        sde.discretize(x, t, 0.1)


def test_bad_num_steps():
    with pytest.raises(ValueError, match="num_steps"):
        VPSDE().discrete_betas(1)
    with pytest.raises(ValueError, match="num_steps"):
        VESDE().discrete_sigmas(10.0)


def test_public_api_is_reexported():
    from sde_jax import sdes

    assert sde_jax.VPSDE is sdes.VPSDE and sde_jax.SubVPSDE is sdes.SubVPSDE
    assert sde_jax.VESDE is sdes.VESDE
    assert sde_jax.CosineVPSDE is sdes.CosineVPSDE and sde_jax.EDMSDE is sdes.EDMSDE
    assert sde_jax.SDE is sdes.SDE
    assert sde_jax.reverse_drift is sdes.reverse_drift


def test_several_simulated_devices():
    assert jax.device_count() == 8


def test_compiled_subvp_coefficients_equal_eager_on_large_batches():
    """Regression: XLA CPU (jaxlib 0.10) fused two expm1 of different arguments wrongly for
    >= 4096 elements; sde_jax sets XLA_FLAGS to avoid it (platform.apply_xla_cpu_workarounds)."""
    sde = SubVPSDE()
    t = jnp.linspace(1e-3, 1.0, 8192)
    z = jax.random.normal(jax.random.key(0), (8192, 4))

    def weighted(t, z):
        return sde.diffusion_coeff(t) ** 2 * jnp.sum(z * sde.marginal_std(t)[:, None], 1)

    np.testing.assert_allclose(jax.jit(weighted)(t, z), weighted(t, z), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- noise geometry


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_log_snr_and_sigma_match_closed_form(sde):
    """lambda = log(m/s) and sigma = s/m from the papers' m and s, in float64."""
    with jax.enable_x64(True):
        t = jnp.asarray(FRACTIONS * sde.T, jnp.float64)
        m_ref, s_ref = closed_form(sde, np.asarray(t))
        np.testing.assert_allclose(sde.log_snr(t), np.log(m_ref / s_ref), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(sde.sigma(t), s_ref / m_ref, rtol=1e-10)
        assert np.all(np.diff(np.asarray(sde.log_snr(t))) < 0)  # lambda decreases in t


def test_inverses_have_the_papers_closed_forms():
    with jax.enable_x64(True):
        sigma = jnp.array([0.002, 0.1, 3.0, 80.0], jnp.float64)
        np.testing.assert_allclose(EDMSDE().t_of_sigma(sigma), sigma, rtol=1e-15)
        np.testing.assert_allclose(EDMSDE().t_of_log_snr(-jnp.log(sigma)), sigma, rtol=1e-14)
        ve = VESDE()
        sigma = jnp.array([0.01, 0.5, 50.0], jnp.float64)
        np.testing.assert_allclose(
            ve.t_of_sigma(sigma), np.log(sigma / 0.01) / np.log(5000.0), rtol=1e-13, atol=1e-15
        )
        # VP: s/m = sqrt(e^B - 1), so B = log(1 + sigma^2) and t solves a quadratic.
        vp, b = VPSDE(), np.log1p(np.asarray(sigma) ** 2)
        root = (-0.1 + np.sqrt(0.1**2 + 2 * 19.9 * b)) / 19.9
        np.testing.assert_allclose(vp.t_of_sigma(sigma), root, rtol=1e-12)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_inverses_are_exact_in_float64(sde):
    with jax.enable_x64(True):
        t = jnp.asarray(np.geomspace(1e-5, 1.0, 25) * sde.T, jnp.float64)
        lam, sigma = sde.log_snr(t), sde.sigma(t)
        # VE's lambda is affine in t with a large offset: t near 0 carries its absolute error.
        np.testing.assert_allclose(sde.t_of_log_snr(lam), t, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(sde.t_of_sigma(sigma), t, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(sde.log_snr(sde.t_of_log_snr(lam)), lam, rtol=1e-12)
        np.testing.assert_allclose(sde.sigma(sde.t_of_sigma(sigma)), sigma, rtol=1e-12)
        np.testing.assert_allclose(sigma, jnp.exp(-lam), rtol=1e-13)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_inverses_keep_float32_precision_where_t_is_resolved(sde):
    t = jnp.asarray(np.geomspace(sde.default_eps, sde.T, 9), jnp.float32)
    assert sde.log_snr(t).dtype == jnp.float32 and sde.t_of_log_snr(sde.log_snr(t)).dtype == t.dtype
    # VE's sigma(eps) = sigma_min (1 + 1e-4): float32 resolves t there only to ~2e-3.
    rtol = 3e-3 if isinstance(sde, VESDE) else 2e-6
    np.testing.assert_allclose(sde.t_of_log_snr(sde.log_snr(t)), t, rtol=rtol)
    np.testing.assert_allclose(sde.t_of_sigma(sde.sigma(t)), t, rtol=rtol)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_importance_density_is_minus_twice_the_log_snr_slope(sde):
    """g^2 / s^2 = d/dt log(s^2/m^2) = -2 lambda'(t) for every linear SDE."""
    with jax.enable_x64(True):
        t = jnp.asarray(np.linspace(0.01, 1.0, 20) * sde.T, jnp.float64)
        slope = jax.vmap(jax.grad(sde.log_snr))(t)
        ratio = sde.diffusion_coeff(t) ** 2 / sde.marginal_std(t) ** 2
        np.testing.assert_allclose(-2 * slope, ratio, rtol=1e-10)


def posterior(sde, x_t, x0, t, t_next):
    """Mean and std of q(x_{t_next} | x_t, x0) from the joint Gaussian of (x_{t_next}, x_t)."""
    m, s = closed_form(sde, t)
    m_n, s_n = closed_form(sde, t_next)
    a, var_step = m / m_n, s**2 - (m / m_n) ** 2 * s_n**2  # x_t = a x_next + N(0, var_step)
    prior_mean, prior_var = m_n * x0, s_n**2
    gain = a * prior_var / (a**2 * prior_var + var_step)
    return prior_mean + gain * (x_t - a * prior_mean), np.sqrt(prior_var * (1 - a * gain))


@pytest.mark.parametrize(
    "sde", [SubVPSDE(), CosineVPSDE(), EDMSDE(), VESDE()], ids=["subvp", "cosine", "edm", "ve"]
)
def test_ancestral_step_is_the_gaussian_posterior(sde):
    """Given the score of a point mass at x0, the step draws from q(x_{t - dt} | x_t, x0).

    VE's own step (the original's SMLD formula) is that posterior too, away from its first
    table entry.
    """
    with jax.enable_x64(True):
        t = jnp.array([0.3, 0.6, 0.9], jnp.float64) * sde.T
        dt = 0.01 * sde.T
        x0 = np.array([[0.5, -1.0], [2.0, 0.1], [-0.3, 0.4]])
        x_t = np.array([[1.0, 0.2], [-0.5, 0.7], [0.3, -2.0]])
        m, s = closed_form(sde, np.asarray(t))
        score = -(x_t - m[:, None] * x0) / s[:, None] ** 2  # grad log p_{0t}(x_t | x0)
        mean, std = sde.ancestral_step(jnp.asarray(x_t), jnp.asarray(score), t, dt)
        ref_mean, ref_std = posterior(
            sde, x_t, x0, np.asarray(t)[:, None], np.asarray(t - dt)[:, None]
        )
        np.testing.assert_allclose(mean, ref_mean, rtol=1e-9)
        np.testing.assert_allclose(std, ref_std[:, 0], rtol=1e-9)


def test_vp_ancestral_step_keeps_the_ddpm_formula():
    sde, x, score = VPSDE(), jnp.ones((2, 3)), jnp.full((2, 3), -0.5)
    t, dt = jnp.array([0.2, 0.8]), 1e-3
    mean, std = sde.ancestral_step(x, score, t, dt)
    beta = (0.1 + np.asarray(t) * 19.9) * dt
    np.testing.assert_allclose(mean, ((1 - 0.5 * beta) / np.sqrt(1 - beta))[:, None] * x, rtol=1e-6)
    np.testing.assert_allclose(std, np.sqrt(beta), rtol=1e-6)


def test_new_sdes_horizon_prior_and_conventions():
    cosine, edm = CosineVPSDE(), EDMSDE()
    assert (cosine.T, cosine.prior_std, cosine.default_eps) == (0.9946, 1.0, 1e-3)
    assert (edm.T, edm.prior_std, edm.default_eps) == (80.0, 80.0, 0.002)
    assert (VPSDE().default_eps, SubVPSDE().default_eps, VESDE().default_eps) == (1e-3, 1e-3, 1e-5)
    # beta(t) = -d log alpha_bar / dt, finite at the horizon that stops short of t = 1.
    with jax.enable_x64(True):
        t = jnp.linspace(0.0, cosine.T, 9, dtype=jnp.float64)
        dlog = jax.vmap(jax.grad(lambda t: 2 * jnp.log(cosine.mean_coeff(t))))(t)
        np.testing.assert_allclose(cosine.beta(t), -dlog, rtol=1e-12)
    assert 300 < float(cosine.beta(cosine.T)) < 400 and float(cosine.mean_coeff(cosine.T)) < 0.01
    t = jnp.array([0.1, 0.5])
    np.testing.assert_allclose(edm.network_labels(t), t)
    np.testing.assert_allclose(cosine.network_labels(t), 999 * t)
    assert (edm.network_output, VESDE.network_output, cosine.network_output) == (
        "score",
        "score",
        "noise",
    )
    np.testing.assert_allclose(cosine.langevin_alpha(t, 0.01), 1.0)
    np.testing.assert_allclose(VPSDE().langevin_alpha(t, 0.01), 1 - (0.1 + 19.9 * t) * 0.01)


@pytest.mark.parametrize(
    ("make", "names"),
    [
        (lambda: CosineVPSDE(t_max=1.0), ["t_max", "1.0"]),
        (lambda: CosineVPSDE(offset=0.0), ["offset", "0.0"]),
        (lambda: EDMSDE(sigma_min=100.0), ["sigma_min", "sigma_max", "100.0"]),
        (lambda: EDMSDE(sigma_min=0.0), ["sigma_min", "0.0"]),
    ],
)
def test_bad_new_sde_parameters_raise_naming_them(make, names):
    with pytest.raises(ValueError) as info:
        make()
    for name in names:
        assert name in str(info.value)


def test_user_sde_gets_generic_geometry_and_a_clear_error_for_the_inverse():
    sde, t = BrownianSDE(), jnp.array([0.25, 1.0])
    np.testing.assert_allclose(sde.log_snr(t), -0.5 * np.log([0.25, 1.0]), rtol=1e-6)
    np.testing.assert_allclose(sde.sigma(t), [0.5, 1.0], rtol=1e-6)
    with pytest.raises(ValueError, match=r"log_snr_grid needs .*t_of_log_snr.*BrownianSDE"):
        check_log_snr_inverse(sde, "log_snr_grid")
    check_log_snr_inverse(VPSDE(), "log_snr_grid")
