"""UniPC against the truth: the closed-form Gaussian flow map, and the paper's update rules."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gaussians import Gaussian, flow_map_error, order_slopes

from sde_jax import VESDE, VPSDE, CosineVPSDE, grids, sampling
from sde_jax.steppers import DPMSolverPP2M
from sde_jax.steppers.unipc import UniPC, phi_terms

DATA4 = Gaussian.random(4, seed=1)

# (sde, (order, variant, corrector), measured order, step counts): p + 1 with UniC, p without.
# Uncorrected UniP-3 on VE is not here: the first (DDIM) step's O(h^2) error floors it from 64
# steps on (slopes 4.2, 4.9, 2.6, 1.4 over 16 .. 256); the corrector removes it.
CASES = [
    (VPSDE(), (2, "bh2", True), 3, [16, 32, 64]),
    (VESDE(), (2, "bh2", True), 3, [16, 32, 64]),
    (CosineVPSDE(), (2, "bh2", True), 3, [16, 32, 64]),
    (VPSDE(), (3, "bh2", True), 4, [32, 64, 128]),
    (VESDE(), (3, "bh2", True), 4, [32, 64, 128]),
    (CosineVPSDE(), (3, "bh1", True), 4, [32, 64, 128]),
    (CosineVPSDE(), (2, "bh1", False), 2, [16, 32, 64]),
]


@pytest.mark.parametrize(
    ("sde", "args", "measured", "counts"),
    CASES,
    ids=[f"{type(c[0]).__name__}-{c[1]}" for c in CASES],
)
def test_unipc_converges_at_p_plus_one_with_the_corrector_and_p_without(
    sde, args, measured, counts
):
    stepper = UniPC(sde, *args)
    assert stepper.order == args[0] and stepper.nfe_per_step == 1
    with jax.enable_x64(True):
        errors = [flow_map_error(sde, stepper, grids.log_snr_grid(sde, n, 0.1)) for n in counts]
    slopes = order_slopes(errors, counts)
    assert abs(slopes[-1] - measured) < 0.3, (errors, slopes)


# --- The paper's update rules written out, for a linear (Gaussian) data prediction ----------


def _g1(z):
    return (np.exp(z) - 1 - z) / z


def _g2(z):
    return (np.exp(z) - 1 - z - z**2 / 2) / z**2


def _hand_unipc(sde, grid, x, variant, order):
    """Three steps of UniPC from Zhao et al. 2023, data prediction, B(h) of ``variant``.

    x~ are predictions, x corrected points; step 1 corrects with UniC-1 (rho = 1/2) and
    predicts with UniP-2 (rho = 1/2); step 2 corrects with UniC-2 (R_2 rho = b_2) and predicts
    with UniP-2, or with UniP-3 (R_2 rho = b_2 on the two previous nodes) for ``order=3``.
    """
    t = [float(v) for v in grid]
    lam = [float(sde.log_snr(v)) for v in t]
    m = [float(sde.mean_coeff(v)) for v in t]
    s = [float(sde.marginal_std(v)) for v in t]
    score = DATA4.score_fn(sde)

    def denoise(x, i):
        return np.asarray((x + s[i] ** 2 * score(x, jnp.full(x.shape[0], t[i]))) / m[i])

    def big_b(h):
        return -h if variant == "bh1" else np.expm1(-h)

    h1, h2, h3 = lam[1] - lam[0], lam[2] - lam[1], lam[3] - lam[2]
    d0 = denoise(x, 0)
    # Step 0: DDIM.
    xp1 = s[1] / s[0] * x - m[1] * np.expm1(-h1) * d0
    # Step 1: UniC-1 at t1, UniP-2 to t2.
    d1 = denoise(xp1, 1)
    x1 = s[1] / s[0] * x - m[1] * (np.expm1(-h1) * d0 + big_b(h1) * 0.5 * (d1 - d0))
    r = (lam[0] - lam[1]) / h2
    xp2 = s[2] / s[1] * x1 - m[2] * (np.expm1(-h2) * d1 + big_b(h2) * 0.5 * (d0 - d1) / r)
    # Step 2: UniC-2 at t2 (nodes r, 1), then UniP to t3.
    d2 = denoise(xp2, 2)
    b1 = _g1(-h2) / big_b(h2)
    b2 = 2 * _g2(-h2) / big_b(h2)
    rho1 = (b1 - b2) / (1 - r)
    rho2 = b1 - rho1
    corr = rho1 * (d0 - d1) / r + rho2 * (d2 - d1)
    x2 = s[2] / s[1] * x1 - m[2] * (np.expm1(-h2) * d1 + big_b(h2) * corr)
    ra, rb = (lam[1] - lam[2]) / h3, (lam[0] - lam[2]) / h3
    if order == 2:
        pred = 0.5 * (d1 - d2) / ra
    else:
        c1, c2 = _g1(-h3) / big_b(h3), 2 * _g2(-h3) / big_b(h3)
        # [[1, 1], [ra, rb]] rho = [c1, c2]
        rho_b = (c2 - ra * c1) / (rb - ra)
        rho_a = c1 - rho_b
        pred = rho_a * (d1 - d2) / ra + rho_b * (d0 - d2) / rb
    return s[3] / s[2] * x2 - m[3] * (np.expm1(-h3) * d2 + big_b(h3) * pred)


@pytest.mark.parametrize(
    ("sde", "variant", "order"),
    [(VPSDE(), "bh2", 2), (VESDE(), "bh1", 3), (CosineVPSDE(), "bh2", 3)],
    ids=["vp-bh2-p2", "ve-bh1-p3", "cosine-bh2-p3"],
)
def test_unipc_reproduces_the_papers_update_rules(sde, variant, order):
    with jax.enable_x64(True):
        grid = grids.log_snr_grid(sde, 3, 0.1)
        x = np.asarray(jax.random.normal(jax.random.key(1), (8, 4), jnp.float64))
        stepper = UniPC(sde, order, variant)
        out = sampling.run_steps(
            jax.random.key(0), DATA4.score_fn(sde), stepper, stepper.init(jnp.asarray(x)), grid
        )
        np.testing.assert_allclose(out.x, _hand_unipc(sde, grid, x, variant, order), atol=1e-10)


def test_phi_terms_match_their_closed_forms_on_both_sides_of_the_series_switch():
    with jax.enable_x64(True):
        for z in [-3.0, -1.0001, -0.9999, -0.3, -1e-3]:
            got = phi_terms(jnp.asarray(z, jnp.float64), 2)
            exact = [_g1(z), _g2(z)] if abs(z) > 0.1 else [z / 2 + z**2 / 6, z / 6 + z**2 / 24]
            np.testing.assert_allclose(got, exact, rtol=1e-9 if abs(z) > 0.1 else 1e-5)


def test_order_one_without_corrector_is_ddim_and_bh2_order_two_is_dpm_solver_pp_2m():
    """The paper (sec. 3.2): DDIM is UniP-1, and UniP-2 with B(h) = e^h - 1 and rho = 1/2 is
    DPM-Solver++(2M); with B(h) = h it is a different second-order rule."""
    sde, score = VPSDE(), DATA4.score_fn(VPSDE())
    with jax.enable_x64(True):
        grid = grids.log_snr_grid(sde, 6, 1e-3)
        x = jax.random.normal(jax.random.key(2), (8, 4), jnp.float64)

        def run(stepper):
            return sampling.run_steps(jax.random.key(0), score, stepper, stepper.init(x), grid).x

        ddim = x
        for t, t_next in itertools.pairwise(grid):
            m, s = sde.mean_coeff(t), sde.marginal_std(t)
            d = (ddim + s**2 * score(ddim, jnp.full(8, t))) / m
            eps = (ddim - m * d) / s
            ddim = sde.mean_coeff(t_next) * d + sde.marginal_std(t_next) * eps
        np.testing.assert_allclose(run(UniPC(sde, 1, corrector=False)), ddim, atol=1e-12)
        dpm = run(DPMSolverPP2M(sde))
        np.testing.assert_allclose(run(UniPC(sde, 2, "bh2", corrector=False)), dpm, atol=1e-12)
        assert np.max(np.abs(run(UniPC(sde, 2, "bh1", corrector=False)) - dpm)) > 1e-4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"order": 4}, r"order must be an integer in \[1, 3\], got 4"),
        ({"order": True}, r"order must be an integer in \[1, 3\], got True"),
        ({"variant": "bh3"}, r"variant must be one of \['bh1', 'bh2'\], got 'bh3'"),
    ],
)
def test_unipc_rejects_bad_arguments_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UniPC(VPSDE(), **kwargs)
    with pytest.raises(TypeError, match="corrector must be a bool"):
        UniPC(VPSDE(), corrector="yes")
    with pytest.raises(TypeError, match="sde must be"):
        UniPC("vp")
