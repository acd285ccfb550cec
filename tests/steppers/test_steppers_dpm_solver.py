"""The DPM-Solver++ family and DDIM against the truth: Gaussian data, whose flow map is exact.

The hand-written updates below follow the papers' equations in lambda, h and r (with alpha = m
and sigma = s), not the module's code: the exponential integral of a polynomial interpolant of
the data prediction D in lambda (Lu et al. 2022, DPM-Solver++, Algorithms 1 and 2), DDIM's
eq. 12 and DDPM's posterior (Ho et al. 2020, eq. 7).
"""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gaussians import DATA, DIM, Gaussian, check_gaussian_samples, order_slopes

from sde_jax import grids, sampling
from sde_jax.sdes import VESDE, VPSDE, CosineVPSDE
from sde_jax.steppers.dpm_solver import (
    DDIM,
    DPMSolverPP2M,
    DPMSolverPP2MSDE,
    DPMSolverPP2S,
    DPMSolverPP3M,
    DPMSolverPP3MSDE,
    DPMSolverPP3S,
)

DATA4 = Gaussian.random(4, seed=1)
# The test programs are small and run once: LLVM's optimizations would cost more than they save.
_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
SDES = [VPSDE(), VESDE(), CosineVPSDE()]
SDE_IDS = ["vp", "ve", "cosine"]
ALL = [DDIM, DPMSolverPP2M, DPMSolverPP3M, DPMSolverPP2S, DPMSolverPP3S]
ALL += [DPMSolverPP2MSDE, DPMSolverPP3MSDE, functools.partial(DDIM, eta=1.0)]


# --------------------------------------------------------------------------------------------
# Convergence order on the exact flow map.


def _run_padded(stepper, score_fn, x, times, active):
    """Runs the steps (times[i], times[i+1]) where ``active[i]``; a fixed length, one compile."""

    def body(state, inputs):
        t, t_next, on = inputs
        new = stepper.step(jax.random.key(0), score_fn, state, t, t_next)
        return jax.tree.map(lambda a, b: jnp.where(on, a, b), new, state), None

    state, _ = jax.lax.scan(body, stepper.init(x), (times[:-1], times[1:], active))
    return state.x


@functools.cache
def _flow_problem(sde, counts):
    """Padded log-SNR grids for each step count, the start x and the exact flow map's end.

    The grids run from T to sigma = 0.5 (t = 0.14 for VP, 0.46 for VE, 0.29 for cosine VP):
    the same noise level for every SDE, before the low-noise end where the errors of the first
    (lower-order) steps of the multistep solvers take over. Steps past a grid's count (of zero
    length) are computed and discarded, so every count runs in one compiled call.
    """
    t_end = float(sde.t_of_sigma(0.5))
    longest = max(counts)

    def problem():
        times = [
            jnp.pad(grids.log_snr_grid(sde, n, t_end), (0, longest - n), mode="edge")
            for n in counts
        ]
        active = jnp.arange(longest)[None] < jnp.asarray(counts)[:, None]
        x = jax.random.normal(jax.random.key(0), (16, 4), jnp.float64)
        return jnp.stack(times), active, x, DATA4.flow_map(sde, x, sde.T, t_end)

    return _jit(problem)()


def _flow_errors(sde, stepper, counts):
    """Max error against the exact flow map for each step count (float64)."""
    times, active, x, exact = _flow_problem(sde, tuple(counts))
    run = jax.vmap(functools.partial(_run_padded, stepper, DATA4.score_fn(sde), x))
    out = _jit(run)(times, active)
    return [float(e) for e in jnp.max(jnp.abs(out - exact), axis=(1, 2))]


DETERMINISTIC = [
    (DDIM, 1, [16, 32, 64]),
    (DPMSolverPP2M, 2, [16, 32, 64]),
    (DPMSolverPP3M, 3, [16, 32, 64]),
    (DPMSolverPP2S, 2, [8, 16, 32]),
    (DPMSolverPP3S, 3, [16, 32, 64]),
]


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
@pytest.mark.parametrize(
    ("make", "order", "counts"), DETERMINISTIC, ids=["ddim", "2m", "3m", "2s", "3s"]
)
def test_deterministic_solvers_converge_at_their_order(sde, make, order, counts):
    stepper = make(sde)
    assert stepper.order == order
    with jax.enable_x64(True):
        errors = _flow_errors(sde, stepper, counts)
    slopes = order_slopes(errors, counts)
    assert abs(slopes[-1] - order) < 0.3, (errors, slopes)


# --------------------------------------------------------------------------------------------
# The update rules, written out by hand from the papers for a linear (Gaussian) model.

TIMES = [1.0, 0.55, 0.3, 0.12]  # uneven steps, so the step ratios r matter


def _denoiser(sde, x, t):
    """E[x_0 | x_t] of DATA4 in closed form: mu + C m (m^2 C + s^2)^-1 (x - m mu)."""
    m, s = float(sde.mean_coeff(t)), float(sde.marginal_std(t))
    rot, eigs, mu = DATA4.rotation, DATA4.eigs, DATA4.mean
    gain = (rot * (eigs * m / (m**2 * eigs + s**2))) @ rot.T
    return mu + (np.asarray(x) - m * mu) @ gain.T


def _geometry(sde, t):
    """alpha = m, sigma = s and lambda = log(alpha / sigma) at t, as Python floats."""
    m, s = float(sde.mean_coeff(t)), float(sde.marginal_std(t))
    return m, s, math.log(m / s)


def _weights(h, a=1.0):
    """a * int_0^h e^{-a (h - u)} u^k / k! du for k = 0, 1, 2 (closed form)."""
    e = 1 - math.exp(-a * h)
    return e, h - e / a, h**2 / 2 - h / a + e / a**2


def _stepper_outputs(stepper, sde, times, x):
    """(x, x_mean) after each step of ``stepper`` over ``times``, with key i for step i."""

    def run():
        state, outs = stepper.init(x), []
        for i, (t, t_next) in enumerate(itertools.pairwise(times)):
            key = jax.random.key(i)
            state = stepper.step(key, DATA4.score_fn(sde), state, jnp.float64(t), t_next)
            outs.append((state.x, state.x_mean))
        return outs

    return [(np.asarray(a), np.asarray(b)) for a, b in _jit(run)()]


def _noise(i, x):
    return np.asarray(jax.random.normal(jax.random.key(i), x.shape, jnp.float64))


def _hand_multistep(sde, times, x, eta, order, second, third_weight=1.0):
    """Exponential integrator of the multistep polynomial interpolant of D in lambda.

    Step i: x' = (s'/s) e^{-eta h} x + m' (W0 D + W1 P' + W2 P'') with the weights of
    ``_weights(h, 1 + eta)`` and P the interpolant (degree < order) through the last D's, then
    the noise s' sqrt(1 - e^{-2 eta h}) z. ``second``: 'midpoint' (the 2M rule of Algorithm 2,
    W1 P' replaced by (W0 / 2) h P') or 'taylor'. ``third_weight`` scales W2.
    """
    outs, lams, ds = [], [], []
    for i, (t, t_next) in enumerate(itertools.pairwise(times)):
        (_, s, lam), (m1, s1, lam1) = _geometry(sde, t), _geometry(sde, t_next)
        h = lam1 - lam
        lams, ds = [lam, *lams][:3], [_denoiser(sde, x, t), *ds][:3]
        w0, w1, w2 = _weights(h, 1 + eta)
        mean = (s1 / s) * math.exp(-eta * h) * x + m1 * w0 * ds[0]
        k = min(len(ds), order)
        if k >= 2:
            slope = (ds[0] - ds[1]) / (lams[0] - lams[1])  # f[l0, l1]
            if k == 2:
                mean += m1 * (w0 / 2 * h if second == "midpoint" else w1) * slope
            else:
                curv = (slope - (ds[1] - ds[2]) / (lams[1] - lams[2])) / (lams[0] - lams[2])
                d_prime = slope + (lams[0] - lams[1]) * curv  # P'(l0)
                mean += m1 * (w1 * d_prime + third_weight * w2 * 2 * curv)  # P'' = 2 f[l0,l1,l2]
        x = mean + s1 * math.sqrt(1 - math.exp(-2 * eta * h)) * _noise(i, x)
        outs.append((x, mean))
    return outs


MULTISTEP_RULES = [
    (DPMSolverPP2M, dict(eta=0.0, order=2, second="midpoint")),
    (DPMSolverPP3M, dict(eta=0.0, order=3, second="midpoint")),
    (
        functools.partial(DPMSolverPP3M, variant="reference"),
        dict(eta=0.0, order=3, second="midpoint", third_weight=0.5),
    ),
    (DPMSolverPP2MSDE, dict(eta=1.0, order=2, second="midpoint")),
    (
        functools.partial(DPMSolverPP2MSDE, eta=0.5, solver_type="heun"),
        dict(eta=0.5, order=2, second="taylor"),
    ),
    (DPMSolverPP3MSDE, dict(eta=1.0, order=3, second="taylor")),
    (
        functools.partial(DPMSolverPP3MSDE, eta=0.0, variant="reference"),
        dict(eta=0.0, order=3, second="taylor", third_weight=0.5),
    ),
    (functools.partial(DDIM, eta=0.0), dict(eta=0.0, order=1, second="midpoint")),
]


@pytest.mark.parametrize(
    ("make", "rule"),
    MULTISTEP_RULES,
    ids=["2m", "3m", "3m_reference", "2m_sde", "2m_sde_heun", "3m_sde", "3m_sde_reference", "ddim"],
)
def test_multistep_updates_match_the_hand_written_rules(make, rule):
    sde = VPSDE()
    with jax.enable_x64(True):
        x = np.asarray(jax.random.normal(jax.random.key(1), (3, 4), jnp.float64))
        got = _stepper_outputs(make(sde), sde, TIMES, jnp.asarray(x))
        want = _hand_multistep(sde, TIMES, x, **rule)
    for (x_got, mean_got), (x_want, mean_want) in zip(got, want, strict=True):
        np.testing.assert_allclose(mean_got, mean_want, rtol=0, atol=1e-10)
        np.testing.assert_allclose(x_got, x_want, rtol=0, atol=1e-10)


def _hand_singlestep(sde, times, x, fractions):
    """DPM-Solver++(2S) (Algorithm 1) or DPM-Solver-3 in data prediction, two steps.

    With phi_1(z) = 1 - e^{-z} and phi_2(z) = 1 - phi_1(z)/z, alpha = m, sigma = s:
    2S: u = sigma_u/sigma x + alpha_u phi_1(r h) D, x' = sigma'/sigma x + alpha' phi_1(h)
    ((1 - 1/(2r)) D + 1/(2r) D_u). 3S: u1 as u with r1; u2 = sigma_u2/sigma x + alpha_u2
    phi_1(r2 h) D + (r2/r1) alpha_u2 phi_2(r2 h) (D_u1 - D); x' = sigma'/sigma x + alpha'
    phi_1(h) D + (1/r2) alpha' phi_2(h) (D_u2 - D).
    """

    def phi_1(z):
        return 1 - math.exp(-z)

    def phi_2(z):
        return 1 - phi_1(z) / z

    outs = []
    for t, t_next in itertools.pairwise(times):
        (_, s, lam), (m1, s1, lam1) = _geometry(sde, t), _geometry(sde, t_next)
        h, d = lam1 - lam, _denoiser(sde, x, t)
        us = [float(sde.t_of_log_snr(lam + r * h)) for r in fractions]
        (mu1, su1, _), r1 = _geometry(sde, us[0]), fractions[0]
        x_u1 = su1 / s * x + mu1 * phi_1(r1 * h) * d
        d_u1 = _denoiser(sde, x_u1, us[0])
        if len(fractions) == 1:
            x = s1 / s * x + m1 * phi_1(h) * ((1 - 1 / (2 * r1)) * d + d_u1 / (2 * r1))
        else:
            (mu2, su2, _), r2 = _geometry(sde, us[1]), fractions[1]
            x_u2 = su2 / s * x + mu2 * phi_1(r2 * h) * d
            x_u2 += r2 / r1 * mu2 * phi_2(r2 * h) * (d_u1 - d)
            d_u2 = _denoiser(sde, x_u2, us[1])
            x = s1 / s * x + m1 * phi_1(h) * d + m1 * phi_2(h) * (d_u2 - d) / r2
        outs.append(x)
    return outs


def _hand_ddim(sde, times, x, eta):
    """DDIM's eq. 12 in alpha-bar (VP): x' = sqrt(ab') x0 + sqrt(1 - ab' - c^2) eps + c z with
    c = eta sqrt((1 - ab')/(1 - ab)) sqrt(1 - ab/ab')."""
    outs = []
    for i, (t, t_next) in enumerate(itertools.pairwise(times)):
        ab, ab1 = float(sde.mean_coeff(t)) ** 2, float(sde.mean_coeff(t_next)) ** 2
        x0 = _denoiser(sde, x, t)
        eps = (x - math.sqrt(ab) * x0) / math.sqrt(1 - ab)
        c = eta * math.sqrt((1 - ab1) / (1 - ab)) * math.sqrt(1 - ab / ab1)
        mean = math.sqrt(ab1) * x0 + math.sqrt(1 - ab1 - c**2) * eps
        x = mean + c * _noise(i, x)
        outs.append((x, mean))
    return outs


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=["vp", "ve"])
@pytest.mark.parametrize(
    ("make", "fractions"),
    [
        (DPMSolverPP2S, [0.5]),
        (functools.partial(DPMSolverPP2S, r=0.3), [0.3]),
        (DPMSolverPP3S, [1 / 3, 2 / 3]),
        (functools.partial(DPMSolverPP3S, r1=0.4, r2=0.7), [0.4, 0.7]),
    ],
    ids=["2s", "2s_r", "3s", "3s_r"],
)
def test_singlestep_updates_match_the_hand_written_rules(sde, make, fractions):
    times = [TIMES[0], TIMES[1], TIMES[2]] if isinstance(sde, VPSDE) else [1.0, 0.6, 0.35]
    with jax.enable_x64(True):
        x = np.asarray(jax.random.normal(jax.random.key(1), (3, 4), jnp.float64))
        got = _stepper_outputs(make(sde), sde, times, jnp.asarray(x))
        want = _hand_singlestep(sde, times, x, fractions)
    for (x_got, mean_got), x_want in zip(got, want, strict=True):
        np.testing.assert_allclose(x_got, x_want, rtol=0, atol=1e-10)
        np.testing.assert_array_equal(mean_got, x_got)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_is_eq_12_of_song_meng_ermon_for_vp(eta):
    sde = VPSDE()
    with jax.enable_x64(True):
        x = np.asarray(jax.random.normal(jax.random.key(1), (3, 4), jnp.float64))
        got = _stepper_outputs(DDIM(sde, eta=eta), sde, TIMES, jnp.asarray(x))
        want = _hand_ddim(sde, TIMES, x, eta)
    for (x_got, mean_got), (x_want, mean_want) in zip(got, want, strict=True):
        np.testing.assert_allclose(mean_got, mean_want, rtol=0, atol=1e-10)
        np.testing.assert_allclose(x_got, x_want, rtol=0, atol=1e-10)


def test_ddim_eta_0_is_the_first_step_of_2m_and_eta_1_the_ddpm_posterior():
    sde, (t, t_next) = VPSDE(), (0.6, 0.45)
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.key(1), (3, 4), jnp.float64)
        first = [
            _stepper_outputs(make(sde), sde, [t, t_next], x)[0] for make in (DDIM, DPMSolverPP2M)
        ]
        # The same update; XLA may fuse the two programs' products differently (1 ulp).
        np.testing.assert_allclose(first[0][0], first[1][0], rtol=1e-14, atol=1e-16)
        # Ho et al. (2020), eq. 7: q(x' | x, x0) = N(mu, beta_tilde) with a = ab/ab', b = 1 - a.
        ab, ab1 = float(sde.mean_coeff(t)) ** 2, float(sde.mean_coeff(t_next)) ** 2
        a, x0 = ab / ab1, _denoiser(sde, x, t)
        mu = math.sqrt(ab1) * (1 - a) / (1 - ab) * x0 + math.sqrt(a) * (1 - ab1) / (1 - ab) * x
        beta_tilde = (1 - ab1) / (1 - ab) * (1 - a)
        x_next, x_mean = _stepper_outputs(DDIM(sde, eta=1.0), sde, [t, t_next], x)[0]
        z = _noise(0, x)
    np.testing.assert_allclose(x_mean, mu, rtol=0, atol=1e-12)
    np.testing.assert_allclose(x_next - x_mean, math.sqrt(beta_tilde) * z, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------
# The stochastic solvers in distribution; the transformations; validation.


@pytest.mark.parametrize(
    ("sde", "stepper", "grid", "bias"),
    [
        (VPSDE(), DPMSolverPP2MSDE(VPSDE()), grids.log_snr_grid(VPSDE(), 40, 1e-3), 0.03),
        (VESDE(), DPMSolverPP3MSDE(VESDE()), grids.log_snr_grid(VESDE(), 40, 1e-5), 0.03),
        # Ancestral sampling is first order with a large constant (variance ratio 0.80 at 40
        # steps, 0.96 at 200 on this grid): DDPM's regime of many steps.
        (VPSDE(), DDIM(VPSDE(), eta=1.0), grids.quadratic_grid(VPSDE(), 200, 1e-3), 0.06),
    ],
    ids=["2m_sde-vp", "3m_sde-ve", "ddim_eta1-vp"],
)
def test_stochastic_solvers_sample_the_data_distribution(sde, stepper, grid, bias):
    score_fn = DATA.score_fn(sde)
    run = _jit(lambda k: sampling.sample(k, score_fn, stepper, grid, (512, DIM), sde=sde).x)
    check_gaussian_samples(run(jax.random.key(3)), bias=bias)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: DPMSolverPP3M("vp"), r"sde must be an sde_jax.sdes.SDE.*'vp'"),
        (lambda: DDIM(VPSDE(), eta=-0.1), r"eta must be a number in \[0.0, 1.0\], got -0.1"),
        (lambda: DDIM(VPSDE(), eta=1.5), r"eta must be a number in \[0.0, 1.0\], got 1.5"),
        (
            lambda: DPMSolverPP2MSDE(VPSDE(), eta=-1.0),
            r"eta must be a number in \[0.0, inf\], got -1.0",
        ),
        (
            lambda: DPMSolverPP3MSDE(VPSDE(), s_noise=-1.0),
            r"s_noise must be a number in \[0.0, inf\], got -1.0",
        ),
        (
            lambda: DPMSolverPP2MSDE(VPSDE(), solver_type="rk"),
            r"solver_type must be one of \['heun', 'midpoint'\], got 'rk'",
        ),
        (lambda: DPMSolverPP2S(VPSDE(), r=1.0), r"r must be a number in \(0.0, 1.0\), got 1.0"),
        (lambda: DPMSolverPP2S(VPSDE(), r=True), r"r must be a number in \(0.0, 1.0\), got True"),
        (lambda: DPMSolverPP3S(VPSDE(), r1=0.0), r"r1 must be a number in \(0.0, 1.0\), got 0.0"),
        (lambda: DPMSolverPP3S(VPSDE(), r1=0.7, r2=0.5), r"r1 must be smaller than r2"),
        (
            lambda: DPMSolverPP3M(VPSDE(), variant="paper"),
            r"variant must be one of \['reference', 'taylor'\], got 'paper'",
        ),
    ],
)
def test_constructor_errors_name_the_argument(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


def test_orders_evaluations_and_the_inverse_log_snr_of_the_singlestep_solvers():
    from gaussians import BrownianSDE

    with pytest.raises(ValueError, match="DPMSolverPP2S needs the inverse of the log-SNR"):
        DPMSolverPP2S(BrownianSDE())
    assert DPMSolverPP3S(VPSDE(), r1=0.25, r2=0.5).order == 2
    assert DPMSolverPP3M(VPSDE(), variant="reference").order == 2
    orders = [(make(VPSDE()).order, make(VPSDE()).nfe_per_step) for make in ALL]
    assert orders == [(1, 1), (2, 1), (3, 1), (2, 2), (3, 3), (2, 1), (3, 1), (1, 1)]
