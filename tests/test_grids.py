"""Time grids of every SDE: decreasing from T to eps, uniform in their own variable."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gaussians import BrownianSDE

from sde_jax import EDMSDE, VESDE, VPSDE, CosineVPSDE, SubVPSDE, grids

SDES = [VPSDE(), SubVPSDE(), VESDE(), CosineVPSDE(), EDMSDE()]
IDS = ["vp", "subvp", "ve", "cosine", "edm"]


@pytest.mark.parametrize("name", sorted(grids.GRIDS))
@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_every_grid_of_every_sde_decreases_from_T_to_eps(sde, name):
    eps = sde.default_eps
    grid = np.asarray(grids.GRIDS[name](sde, 12, eps))
    assert grid.shape == (13,) and grid.dtype == np.float32
    assert grid[0] == np.float32(sde.T) and grid[-1] == np.float32(eps)
    assert np.all(np.diff(grid) < 0), grid


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_log_snr_grid_is_uniform_in_lambda(sde):
    eps = sde.default_eps
    with jax.enable_x64(True):  # the grid is built in float32; lambda is read in float64
        grid = grids.log_snr_grid(sde, 10, eps)
        lam = np.asarray(sde.log_snr(jnp.asarray(grid, jnp.float64)))
        ends = [float(sde.log_snr(jnp.float64(v))) for v in (sde.T, eps)]
    np.testing.assert_allclose(lam, np.linspace(*ends, 11), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rho", [7.0, 3.0])
@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_karras_grid_is_uniform_in_sigma_to_the_one_over_rho(sde, rho):
    eps = sde.default_eps
    with jax.enable_x64(True):
        grid = grids.karras_grid(sde, 10, eps, rho=rho)
        root = np.asarray(sde.sigma(jnp.asarray(grid, jnp.float64))) ** (1 / rho)
        hi, lo = (float(sde.sigma(jnp.float64(v))) ** (1 / rho) for v in (sde.T, eps))
    # VE resolves t near eps only to float32's ~1e-3 relative: sigma is right to ~1e-6.
    np.testing.assert_allclose(root, hi + np.linspace(0, 1, 11) * (lo - hi), rtol=2e-5)


def test_karras_grid_for_ve_is_edms_formula_in_t():
    ve = VESDE()
    karras = grids.karras_grid(ve, 10, 1e-5, rho=7.0)
    sigmas = np.asarray(ve.sigma(karras), np.float64)
    hi, lo = 50.0 ** (1 / 7), float(ve.sigma(1e-5)) ** (1 / 7)
    np.testing.assert_allclose(sigmas, (hi + np.linspace(0, 1, 11) * (lo - hi)) ** 7, rtol=1e-4)
    # EDM's own SDE: t is sigma, so the grid is eq. 5 itself.
    edm = EDMSDE()
    hi, lo = 80.0 ** (1 / 7), 0.002 ** (1 / 7)
    np.testing.assert_allclose(
        grids.karras_grid(edm, 18, 0.002), (hi + np.linspace(0, 1, 19) * (lo - hi)) ** 7, rtol=2e-6
    )


def test_uniform_and_quadratic_grids():
    vp, edm = VPSDE(), EDMSDE()
    np.testing.assert_allclose(
        grids.uniform_grid(vp, 10, 1e-3), np.linspace(1.0, 1e-3, 11), rtol=1e-6
    )
    quadratic = np.asarray(grids.quadratic_grid(edm, 10, 0.002), np.float64)
    np.testing.assert_allclose(
        np.sqrt(quadratic), np.linspace(np.sqrt(80.0), np.sqrt(0.002), 11), rtol=1e-6
    )


def test_bad_arguments_raise_naming_them():
    vp = VPSDE()
    with pytest.raises(ValueError, match=r"eps must be a number in \(0, 1.0\), got 0.0"):
        grids.uniform_grid(vp, 10, 0.0)
    with pytest.raises(ValueError, match=r"eps must be a number in \(0, 80.0\), got 90"):
        grids.log_snr_grid(EDMSDE(), 10, 90)
    with pytest.raises(ValueError, match="num_steps must be an integer >= 1, got 0"):
        grids.quadratic_grid(vp, 0, 1e-3)
    with pytest.raises(ValueError, match=r"rho must be a number in \(0, inf\], got -1.0"):
        grids.karras_grid(vp, 10, 1e-3, rho=-1.0)
    for grid in (grids.log_snr_grid, grids.karras_grid):
        with pytest.raises(ValueError, match=r"needs the inverse .*BrownianSDE"):
            grid(BrownianSDE(), 10, 1e-3)
    np.testing.assert_allclose(grids.uniform_grid(BrownianSDE(), 2, 0.5), [1.0, 0.75, 0.5])
