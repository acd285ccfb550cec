"""DEIS-tAB and iPNDM against the truth: the Gaussian flow map, and the published rules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gaussians import Gaussian, flow_map_error, order_slopes
from scipy import integrate

from sde_jax import VESDE, VPSDE, CosineVPSDE, grids, sampling
from sde_jax.steppers.deis import DEIS, IPNDM

DATA4 = Gaussian.random(4, seed=1)

# (stepper, measured order, step counts) on log-SNR grids ending at t = 0.1.
CASES = [
    (DEIS(VPSDE(), 3), 3, [32, 64, 128]),
    (DEIS(VESDE(), 3), 3, [32, 64, 128]),
    (DEIS(CosineVPSDE(), 3), 3, [32, 64, 128]),
    (IPNDM(VPSDE()), 2, [16, 32, 64]),
    (IPNDM(VESDE()), 2, [16, 32, 64]),
    (IPNDM(CosineVPSDE()), 2, [16, 32, 64]),
]


@pytest.mark.parametrize(
    ("stepper", "order", "counts"),
    CASES,
    ids=[f"{type(c[0]).__name__}{c[1]}-{type(c[0].sde).__name__}" for c in CASES],
)
def test_deis_and_ipndm_converge_at_their_order(stepper, order, counts):
    """iPNDM's fixed 4-step weights assume equal steps in sigma: on a log-SNR grid it
    measures order 2 (slopes 2.16, 2.04, 2.01 over 16 .. 128 on VP), its declared order."""
    assert stepper.order == order and stepper.nfe_per_step == 1
    sde = stepper.sde
    with jax.enable_x64(True):
        errors = [flow_map_error(sde, stepper, grids.log_snr_grid(sde, n, 0.1)) for n in counts]
    slopes = order_slopes(errors, counts)
    assert abs(slopes[-1] - order) < 0.3, (errors, slopes)


def _vp_sigma_and_derivative(sde, t):
    integrated = sde.beta_min * t + 0.5 * (sde.beta_max - sde.beta_min) * t**2
    sigma = np.sqrt(np.expm1(integrated))
    return sigma, (sde.beta_min + (sde.beta_max - sde.beta_min) * t) * np.exp(integrated) / (
        2 * sigma
    )


def _lagrange(nodes, j, tau):
    return np.prod([(tau - u) / (nodes[j] - u) for k, u in enumerate(nodes) if k != j])


def test_deis_reproduces_the_tab_rule_with_exact_integrals():
    """Three steps of DEIS-tAB order 3 on VP (DEIS eq. 14): x' = (m'/m) x + sum_j C_j eps_j,
    C_j = m' int_t^t' sigma'(tau) L_j(tau) dtau, the integrals by scipy's adaptive quadrature
    of the closed-form sigma'(t) = beta(t) e^{B(t)} / (2 sigma(t))."""
    sde = VPSDE()
    score = DATA4.score_fn(sde)
    with jax.enable_x64(True):
        grid = np.asarray(grids.log_snr_grid(sde, 3, 0.1))
        x0 = np.asarray(jax.random.normal(jax.random.key(1), (8, 4), jnp.float64))
        stepper = DEIS(sde, 3)
        out = sampling.run_steps(
            jax.random.key(0), score, stepper, stepper.init(jnp.asarray(x0)), jnp.asarray(grid)
        )
        x, eps_list = x0, []
        for i in range(3):
            t, t_next = grid[i], grid[i + 1]
            s = float(sde.marginal_std(t))
            eps_list.insert(0, np.asarray(-s * score(jnp.asarray(x), jnp.full(8, t))))
            nodes = grid[i::-1][:3]
            m, m_next = float(sde.mean_coeff(t)), float(sde.mean_coeff(t_next))
            coefficients = [
                m_next
                * integrate.quad(
                    lambda tau, j=j, nodes=nodes: (
                        _vp_sigma_and_derivative(sde, tau)[1] * _lagrange(nodes, j, tau)
                    ),
                    t,
                    t_next,
                    epsabs=1e-14,
                    epsrel=1e-13,
                )[0]
                for j in range(len(nodes))
            ]
            x = m_next / m * x + sum(c * e for c, e in zip(coefficients, eps_list, strict=False))
        np.testing.assert_allclose(out.x, x, atol=1e-10)


def test_ipndm_reproduces_k_diffusions_rule_and_deis_order_one_is_ddim():
    """iPNDM's first two steps (weights 1, then 3/2, -1/2) on VE, where m = 1 and
    x' = x + (sigma' - sigma) * eps_AB as k-diffusion's sample_ipndm; DEIS(order=1) is DDIM."""
    sde = VESDE()
    score = DATA4.score_fn(sde)
    with jax.enable_x64(True):
        grid = grids.log_snr_grid(sde, 2, 0.1)
        x0 = jax.random.normal(jax.random.key(3), (8, 4), jnp.float64) * sde.sigma_max

        def run(stepper):
            state = stepper.init(x0)
            return sampling.run_steps(jax.random.key(0), score, stepper, state, grid).x

        sig = [float(sde.sigma(t)) for t in grid]
        e0 = -sig[0] * score(x0, jnp.full(8, grid[0]))
        x1 = x0 + (sig[1] - sig[0]) * e0
        e1 = -sig[1] * score(x1, jnp.full(8, grid[1]))
        x2 = x1 + (sig[2] - sig[1]) * (1.5 * e1 - 0.5 * e0)
        np.testing.assert_allclose(run(IPNDM(sde)), x2, atol=1e-10)
        e1_ddim = -sig[1] * score(x1, jnp.full(8, grid[1]))
        np.testing.assert_allclose(run(DEIS(sde, 1)), x1 + (sig[2] - sig[1]) * e1_ddim, atol=1e-10)


def test_deis_and_ipndm_reject_bad_arguments_naming_them():
    for order in (0, 5, True):
        with pytest.raises(ValueError, match=rf"order must be an integer in \[1, 4\], got {order}"):
            DEIS(VPSDE(), order)
    with pytest.raises(ValueError, match="quadrature_points must be an integer >= 1, got 0"):
        DEIS(VPSDE(), 3, quadrature_points=0)
    for make in (DEIS, IPNDM):
        with pytest.raises(TypeError, match="sde must be"):
            make("vp")
