"""EDM's samplers (steppers.edm) against the truth: the closed-form Gaussian flow map, the
paper's update rules written out by hand for a linear model, and Gaussian data in distribution.
"""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gaussians import (
    DATA,
    DIM,
    BrownianSDE,
    Gaussian,
    check_gaussian_samples,
    order_slopes,
)

from sde_jax import (
    EDMSDE,
    VESDE,
    VPSDE,
    CosineVPSDE,
    SubVPSDE,
    grids,
    ode,
    predictions,
    sampling,
    steppers,
)
from sde_jax.steppers.edm import EDMHeun, EDMStochastic

SDES = [VPSDE(), VESDE(), CosineVPSDE(), EDMSDE()]
SDE_IDS = ["vp", "ve", "cosine_vp", "edm"]
SMALL = Gaussian.random(4, seed=1)  # flow_map_error's default data


LENGTH = 64  # every grid is padded to LENGTH steps, so each stepper compiles once


def sigma_root_grid(sde, num_steps, sigma_end=0.5, rho=7.0):
    """T, then uniform in sigma^(1/rho) down to sigma_end (as the Karras grid, ending early)."""
    s_hi, s_lo = float(sde.sigma(sde.T)) ** (1 / rho), sigma_end ** (1 / rho)
    sigmas = jnp.linspace(s_hi, s_lo, num_steps + 1, dtype=jnp.float64) ** rho
    return sde.t_of_sigma(sigmas).at[0].set(sde.T)


def padded(grid):
    """``grid`` followed by copies of its last time: the extra steps have length 0 (and leave
    x unchanged up to rounding), so grids of any step count up to LENGTH share one compile."""
    return jnp.concatenate([grid, jnp.full(LENGTH + 1 - grid.shape[0], grid[-1], grid.dtype)])


@functools.cache
def compiled_run(stepper):
    """``run(x, grid)``: ``stepper`` over ``grid`` on SMALL's score, compiled once per stepper."""

    def run(x, grid):
        score_fn = SMALL.score_fn(stepper.sde)
        state = sampling.run_steps(jax.random.key(0), score_fn, stepper, stepper.init(x), grid)
        return state.x

    return jax.jit(run)


def flow_error(stepper, grid, start_std=1.0, batch=16):
    """Max error against the exact Gaussian flow map from grid[0] to grid[-1] (float64)."""
    sde = stepper.sde
    x = start_std * jax.random.normal(jax.random.key(2), (batch, SMALL.mean.size), jnp.float64)
    out = compiled_run(stepper)(x, padded(grid))
    return float(jnp.max(jnp.abs(out - SMALL.flow_map(sde, x, grid[0], grid[-1]))))


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_edm_heun_converges_at_order_2(sde):
    stepper = EDMHeun(sde)
    assert (stepper.order, stepper.nfe_per_step) == (2, 2)
    counts = [16, 32, 64]
    with jax.enable_x64(True):
        errors = [flow_error(stepper, sigma_root_grid(sde, n)) for n in counts]
    slopes = order_slopes(errors, counts)
    assert abs(slopes[-1] - 2) < 0.3, (errors, slopes)


# ------------------------------------------------------------------------- the rule by hand


def hand_heun_coefficient(data, sigma, sigma_next):
    """Algorithm 1, lines 4-7, for the linear denoiser of Gaussian data, per eigendirection.

    D(x; sigma) = mu + k (x - mu) with k = lam / (lam + sigma^2), so in y = x - mu:
    d = (1 - k) y / sigma; y_E = y + h d; d' = (1 - k') y_E / sigma'; y_next = y + h (d + d')/2,
    with h = sigma' - sigma: y_next = A y with the A returned here.
    """
    h = sigma_next - sigma
    k, k_next = data.eigs / (data.eigs + sigma**2), data.eigs / (data.eigs + sigma_next**2)
    euler = 1.0 + h * (1.0 - k) / sigma
    return 1.0 + 0.5 * h * ((1.0 - k) / sigma + (1.0 - k_next) / sigma_next * euler)


def hand_heun_steps(sde, data, x, times):
    """Consecutive steps in x_hat = x / m(t) (EDM's x for VE and EDM, where m = 1)."""
    rot, mu = data.rotation, data.mean
    for t, t_next in itertools.pairwise(times):
        m, m_next = float(sde.mean_coeff(t)), float(sde.mean_coeff(t_next))
        coeff = hand_heun_coefficient(data, float(sde.sigma(t)), float(sde.sigma(t_next)))
        y = (x / m - mu) @ rot
        x = m_next * (mu + (coeff * y) @ rot.T)
    return x


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_edm_heun_two_steps_equal_algorithm_1_by_hand(sde):
    """From T to sigma = 3 to sigma = 0.7 (the convergence test's compiled run, padded)."""
    times = np.asarray([sde.T, float(sde.t_of_sigma(3.0)), float(sde.t_of_sigma(0.7))])
    with jax.enable_x64(True):
        x = sde.prior_std * jax.random.normal(jax.random.key(1), (16, 4), jnp.float64)
        out = compiled_run(EDMHeun(sde))(x, padded(jnp.asarray(times)))
        expected = hand_heun_steps(sde, SMALL, np.asarray(x), times)
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-10)


def test_heun_step_to_sigma_zero_is_euler_and_returns_the_denoiser():
    """Algorithm 1, line 8: to sigma' = 0 the step is Euler's, x + (0 - sigma) d = D(x; sigma)."""
    sde = EDMSDE()
    with jax.enable_x64(True):
        x = 3.0 * jax.random.normal(jax.random.key(2), (16, 4), jnp.float64)
        score_fn = SMALL.score_fn(sde)
        t, t_next = jnp.asarray(1.5), jnp.asarray(0.0)

        def last_step(x):
            return EDMHeun(sde).step(None, score_fn, EDMHeun(sde).init(x), t, t_next).x

        denoised = predictions.from_score_fn(sde, score_fn, "x0")(x, t)
        np.testing.assert_allclose(last_step(x), denoised, rtol=1e-12, atol=1e-12)
        grad = jax.grad(lambda x: jnp.sum(last_step(x)))(x)
    assert np.all(np.isfinite(grad))


def test_edm_heun_against_heun_in_t_on_the_karras_grid():
    """Same Karras grid (to eps), same evaluations (18 and 36), prior starts, 4-D Gaussian.

    Measured (error of Heun in t / error of EDM's Heun): VE about 2.9 and 2.5 (EDM's is
    better, as the issue says; 3.3 and 2.8 on the 32-D DATA); EDM's SDE 1 (t is sigma and m =
    1: the same method); VP about 0.14 and 0.17: on VP, Heun in t is MORE accurate for these
    Gaussians, whose VP trajectories are nearly straight in t (variances near 1 keep
    m^2 lam + s^2 near 1), while the scaled ones curve where sigma^2 is near the variances.
    """
    ratios = {}
    with jax.enable_x64(True):
        for sde, nfes in ((VESDE(), (18, 36)), (VPSDE(), (18, 36)), (EDMSDE(), (18,))):
            in_t = steppers.ProbabilityFlow(sde, ode.HEUN)
            for nfe in nfes:
                grid = grids.karras_grid(sde, nfe // 2, sde.default_eps)
                errors = [flow_error(s, grid, sde.prior_std) for s in (EDMHeun(sde), in_t)]
                ratios[type(sde).__name__, nfe] = errors[1] / errors[0]
    print("Heun-in-t error / EDMHeun error:", ratios)
    assert ratios["VESDE", 18] > 2.0 and ratios["VESDE", 36] > 2.0, ratios
    assert ratios["EDMSDE", 18] == pytest.approx(1.0, rel=1e-6), ratios
    assert ratios["VPSDE", 18] < 0.5 and ratios["VPSDE", 36] < 0.5, ratios


# ------------------------------------------------------------------------- the stochastic sampler


def sample_fn(sde, stepper, num_steps, shape, dtype=jnp.float32):
    grid = grids.karras_grid(sde, num_steps, sde.default_eps)
    sampler = sampling.FixedGridSampler(sde, stepper, grid, shape, dtype=dtype)
    return sampler


@pytest.mark.parametrize(
    ("sde", "churn"),
    [(VESDE(), dict(s_churn=40.0, s_tmin=0.05, s_tmax=1.0)), (VPSDE(), dict(s_churn=10.0))],
    ids=["ve_table5_like", "vp_churn_beyond_T"],
)
def test_stochastic_sampler_matches_gaussian_data(sde, churn):
    num_steps = 64
    stochastic = sample_fn(sde, EDMStochastic(sde, num_steps, **churn), num_steps, (512, DIM))
    score_fn = DATA.score_fn(sde)
    x = jax.jit(lambda k: stochastic(k, score_fn).x)(jax.random.key(3))
    check_gaussian_samples(x, DATA, bias=0.03)


def test_stochastic_sampler_without_churn_equals_edm_heun():
    """s_churn = 0: bit for bit; sigma outside [s_tmin, s_tmax] on every step: to rounding
    (gamma = 0 is then known only at run time: another compiled program); with churn: not."""
    sde, num_steps = VPSDE(), 12
    score_fn = DATA.score_fn(sde)
    steppers_ = {
        "heun": EDMHeun(sde),
        "s_churn_0": EDMStochastic(sde, num_steps),
        "outside": EDMStochastic(sde, num_steps, s_churn=50.0, s_tmin=1e6, s_tmax=1e7),
        "churned": EDMStochastic(sde, num_steps, s_churn=5.0),
    }
    x = {}
    for name, stepper in steppers_.items():
        sampler = sample_fn(sde, stepper, num_steps, (16, DIM))
        x[name] = np.asarray(jax.jit(lambda k, s=sampler: s(k, score_fn).x)(jax.random.key(4)))
    np.testing.assert_array_equal(x["s_churn_0"], x["heun"])
    np.testing.assert_allclose(x["outside"], x["heun"], rtol=1e-5, atol=1e-5)
    assert np.max(np.abs(x["churned"] - x["heun"])) > 0.05


@pytest.mark.parametrize(
    ("sde", "t"),
    [(VPSDE(), 1.0), (CosineVPSDE(), 0.9946), (VESDE(), 0.6), (EDMSDE(), 10.0)],
    ids=["vp_at_T", "cosine_vp_at_T", "ve", "edm"],
)
def test_one_churned_step_equals_algorithm_2_by_hand(sde, t):
    """Noise of variance (sigma_hat^2 - sigma^2) S_noise^2 added to x / m, then Heun from
    sigma_hat (at t_hat = sigma^-1(sigma_hat), past T for the first two cases) to sigma'."""
    num_steps, s_churn, s_noise = 10, 3.0, 1.007
    with jax.enable_x64(True):
        sigma = float(sde.sigma(t))
        t_next = float(sde.t_of_sigma(0.6 * sigma))
        gamma = min(s_churn / num_steps, math.sqrt(2) - 1)
        sigma_hat = (1 + gamma) * sigma
        t_hat = float(sde.t_of_sigma(sigma_hat))
        assert t_hat > t and math.isclose(float(sde.sigma(t_hat)), sigma_hat, rel_tol=1e-12)
        key = jax.random.key(5)
        x = float(sde.prior_std) * np.asarray(jax.random.normal(jax.random.key(6), (4, 4)))
        z = np.asarray(jax.random.normal(key, x.shape, jnp.float64))  # the stepper's draw
        x_hat = x / float(sde.mean_coeff(t)) + math.sqrt(sigma_hat**2 - sigma**2) * s_noise * z
        expected = hand_heun_steps(
            sde, SMALL, float(sde.mean_coeff(t_hat)) * x_hat, [t_hat, t_next]
        )
        stepper = EDMStochastic(sde, num_steps, s_churn=s_churn, s_noise=s_noise)
        step = jax.jit(lambda *args: stepper.step(key, SMALL.score_fn(sde), *args))
        out = step(stepper.init(jnp.asarray(x)), jnp.asarray(t), jnp.asarray(t_next))
    np.testing.assert_allclose(out.x, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE(), VESDE(), CosineVPSDE(), EDMSDE()])
def test_t_of_sigma_is_defined_beyond_the_horizon(sde):
    """sigma_hat up to (1 + (sqrt 2 - 1)) sigma(T): the inverse is finite and exact there."""
    with jax.enable_x64(True):
        sigma_hat = math.sqrt(2) * sde.sigma(jnp.asarray(sde.T))
        t_hat = sde.t_of_sigma(sigma_hat)
        assert float(t_hat) > sde.T
        assert np.isfinite(float(sde.mean_coeff(t_hat))) and float(sde.mean_coeff(t_hat)) > 0
        np.testing.assert_allclose(sde.sigma(t_hat), sigma_hat, rtol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (dict(num_steps=0), ValueError, r"num_steps must be an integer >= 1, got 0"),
        (dict(num_steps=2.0), ValueError, r"num_steps must be an integer >= 1, got 2.0"),
        (dict(s_churn=-1.0), ValueError, r"s_churn must be a number in \[0.0, inf\], got -1.0"),
        (dict(s_noise=-0.5), ValueError, r"s_noise must be a number in \[0.0, inf\], got -0.5"),
        (dict(s_tmin=2.0, s_tmax=1.0), ValueError, r"s_tmin must be <= s_tmax, got s_tmin=2.0"),
        (dict(s_churn="a"), TypeError, r"s_churn must be a real number, got 'a'"),
        (dict(s_tmin=math.inf), ValueError, r"s_tmin must be a finite number, got inf"),
        (dict(sde="vp"), TypeError, r"sde must be an sde_jax.SDE, got 'vp'"),
        (dict(sde=BrownianSDE()), ValueError, r"needs the inverse of the noise level .*Brownian"),
    ],
)
def test_stochastic_sampler_validates_its_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        EDMStochastic(**{"sde": VESDE(), "num_steps": 10, **kwargs})
