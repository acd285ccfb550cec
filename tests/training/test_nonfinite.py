"""Samplers never return NaN with success=True, and writers refuse non-finite samples."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sde_jax import grids, images, sampling, sdes, steppers
from sde_jax.steppers.validity import min_discrete_steps

VP = sdes.VPSDE()
SUBVP = sdes.SubVPSDE()
SHAPE = (4, 8)


def _gaussian_score(sde):
    def score_fn(x, t):  # N(0, I) data
        t = sdes.batch_times(x, t)
        return -x / sdes.expand_to(sde.mean_coeff(t) ** 2 + sde.marginal_std(t) ** 2, x)

    return score_fn


def _stepper(name, sde):
    return {
        "reverse_diffusion": steppers.ReverseDiffusion(sde),
        "ancestral_sampling": steppers.AncestralSampling(sde),
        "langevin": steppers.PredictorCorrector(
            steppers.EulerMaruyama(sde), steppers.Langevin(sde)
        ),
    }[name]


NAMES = ["reverse_diffusion", "ancestral_sampling", "langevin"]


@pytest.mark.parametrize("name", NAMES)
def test_vp_discrete_steps_below_beta_max_fail_before_compiling(name):
    grid = grids.uniform_grid(VP, 5, eps=1e-3)
    with pytest.raises(ValueError, match=r"num_steps=5 .*beta_i = .* >= 1.*num_steps >= 20"):
        sampling.FixedGridSampler(VP, _stepper(name, VP), grid, SHAPE)


@pytest.mark.parametrize("name", NAMES)
def test_vp_discrete_steps_at_the_smallest_valid_count_are_finite(name):
    # beta_max (T - eps) / N = 20 * 0.999 / 20 < 1: the first count where every beta_i < 1.
    needed = min_discrete_steps(VP.beta_max, 1.0 - 1e-3)
    assert needed == 20
    with pytest.raises(ValueError):
        sampling.FixedGridSampler(
            VP, _stepper(name, VP), grids.uniform_grid(VP, 19, eps=1e-3), SHAPE
        )
    grid = grids.uniform_grid(VP, needed, eps=1e-3)
    out = sampling.sample(
        jax.random.key(0), _gaussian_score(VP), _stepper(name, VP), grid, SHAPE, sde=VP
    )
    assert bool(out.success) and np.isfinite(np.asarray(out.x)).all()


def test_subvp_langevin_is_checked_and_its_exact_ancestral_step_is_not():
    grid = grids.uniform_grid(SUBVP, 5, eps=1e-3)
    with pytest.raises(ValueError, match="Langevin on SubVPSDE"):
        sampling.FixedGridSampler(SUBVP, _stepper("langevin", SUBVP), grid, SHAPE)
    stepper = steppers.AncestralSampling(SUBVP)  # exact Gaussian posterior: any N works
    out = sampling.sample(
        jax.random.key(1), _gaussian_score(SUBVP), stepper, grid, SHAPE, sde=SUBVP
    )
    assert bool(out.success) and np.isfinite(np.asarray(out.x)).all()


def test_fixed_grid_reports_non_finite_samples():
    grid = grids.uniform_grid(VP, 4, eps=1e-3)

    def bad_score(x, t):
        return jnp.where(jnp.arange(x.shape[1]) == 3, jnp.nan, -x)

    stepper = steppers.EulerMaruyama(VP)
    out = sampling.sample(jax.random.key(2), bad_score, stepper, grid, SHAPE, sde=VP)
    assert not bool(out.success)
    good = sampling.sample(jax.random.key(2), lambda x, t: -x, stepper, grid, SHAPE, sde=VP)
    assert bool(good.success)


def test_writers_refuse_non_finite_samples_naming_count_sampler_and_step():
    x = np.zeros((2, 4, 4, 3), np.float32)
    x[0, 0, 0, :2] = np.nan
    x[1, 1, 1, 0] = np.inf
    label = images.sampler_label("pc", "ancestral_sampling", "none")
    with pytest.raises(
        images.NonFiniteSamplesError,
        match=r"out.png: 3 of 96 .*pc \(ancestral_sampling \+ none\) at step 7",
    ):
        images.check_finite(x, "out.png", sampler=label, step=7)
    with pytest.raises(images.NonFiniteSamplesError):
        images.image_grid(x)  # no black tiles
    images.check_finite(np.nan_to_num(x, posinf=0.0), "out.png", sampler=label, step=7)
