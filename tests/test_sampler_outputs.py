"""No behaviour change: today's samplers reproduce what they returned before issue 14.

``tests/fixtures/sampler_outputs.npz`` holds the samples and NFE of every configured sampler
before the solver-core redesign (``tests/record_sampler_outputs.py``: a 3-D Gaussian's exact
score, batch 4, key 0, float32). Both the config builder (``build.get_sampler``) and the
objects API built by hand (``sampling.sample``, ``sampling.sample_adaptive``) must return them
for the same key: the same NFE exactly and the same samples to float32 rounding (they were
bit-for-bit when the API moved; the closed-form log-SNR grid and time variables that replace
bisection may move them at rounding level).
"""

import jax
import numpy as np
import pytest
from gaussians import Gaussian
from record_sampler_outputs import FILE, SDES, SHAPE, cases, run_case

import sde_jax
from sde_jax import grids, ode, sampling, steppers
from sde_jax.experiment import build

RECORDED = np.load(FILE)
RTOL, ATOL = 1e-5, 1e-6
EPS = {"vp": 1e-3, "subvp": 1e-3, "ve": 1e-5}
"""The default eps of each SDE, written out so that the hand-built cases state everything."""


def check_recorded(name, x, nfe):
    assert nfe == int(RECORDED[f"{name}/nfe"]), (name, nfe)
    np.testing.assert_allclose(x, RECORDED[f"{name}/x"], rtol=RTOL, atol=ATOL, err_msg=name)


@pytest.mark.parametrize(("name", "sde_name", "config"), list(cases()), ids=lambda v: str(v))
def test_config_builder_reproduces_the_recorded_samples(name, sde_name, config):
    x, nfe = run_case(sde_name, config, get_sampler=build.get_sampler)
    check_recorded(name, x, nfe)


def test_the_facade_get_sampler_is_the_builder():
    assert sde_jax.get_sampler is build.get_sampler
    config = {"method": "heun", "num_steps": 12, "grid": "uniform"}
    forwarded = sde_jax.get_sampler(SDES["vp"], config, SHAPE)
    built = build.get_sampler(SDES["vp"], config, SHAPE)
    assert type(forwarded) is type(built) is sampling.FixedGridSampler
    assert forwarded.stepper == built.stepper == steppers.ProbabilityFlow(SDES["vp"], ode.HEUN)
    assert forwarded.final_step == built.final_step == sampling.TweedieDenoising()
    np.testing.assert_array_equal(forwarded.grid, built.grid)
    check_recorded("vp/heun", *run_case("vp", config))


def pc(predictor, corrector=None):
    def stepper(sde):
        return steppers.PredictorCorrector(
            predictor(sde), steppers.NoCorrector() if corrector is None else corrector(sde)
        )

    return stepper


HAND_BUILT = {
    # name: (stepper of an SDE, grid of an SDE and eps, final step)
    "pc_rd_langevin": (
        pc(steppers.ReverseDiffusion, lambda sde: steppers.Langevin(sde, snr=0.16, n_steps=1)),
        lambda sde, eps: grids.uniform_grid(sde, 40, eps),
        sampling.NoiseFreeMean(),
    ),
    "pc_em_none": (
        pc(steppers.EulerMaruyama),
        lambda sde, eps: grids.uniform_grid(sde, 40, eps),
        sampling.NoiseFreeMean(),
    ),
    "pc_rd_none_no_denoise": (
        pc(steppers.ReverseDiffusion),
        lambda sde, eps: grids.uniform_grid(sde, 40, eps),
        sampling.NoDenoising(),
    ),
    "heun": (
        lambda sde: steppers.ProbabilityFlow(sde, ode.HEUN),
        lambda sde, eps: grids.uniform_grid(sde, 12, eps),
        sampling.TweedieDenoising(),
    ),
    "rk4": (
        lambda sde: steppers.ProbabilityFlow(sde, ode.RK4),
        lambda sde, eps: grids.uniform_grid(sde, 6, eps),
        sampling.NoDenoising(),
    ),
    "dpm_solver++_log_snr": (
        steppers.DPMSolverPP2M,
        lambda sde, eps: grids.log_snr_grid(sde, 12, eps),
        sampling.TweedieDenoising(),
    ),
}


def score_fn(sde):
    return Gaussian.random(SHAPE[1], seed=3).score_fn(sde)


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("case", list(HAND_BUILT))
def test_objects_api_reproduces_the_recorded_samples(case, sde_name):
    sde, eps = SDES[sde_name], EPS[sde_name]
    make_stepper, make_grid, final_step = HAND_BUILT[case]
    stepper, grid = make_stepper(sde), make_grid(sde, eps)
    out = jax.jit(
        lambda key: sampling.sample(
            key, score_fn(sde), stepper, grid, SHAPE, sde=sde, final_step=final_step
        )
    )(jax.random.key(0))
    check_recorded(f"{sde_name}/{case}", np.asarray(out.x), int(out.nfe))


def test_objects_api_reproduces_heun_on_the_karras_grid():
    sde = SDES["ve"]
    grid = grids.karras_grid(sde, 12, EPS["ve"], rho=7.0)
    stepper = steppers.ProbabilityFlow(sde, ode.HEUN)
    out = jax.jit(
        lambda key: sampling.sample(
            key,
            score_fn(sde),
            stepper,
            grid,
            SHAPE,
            sde=sde,
            final_step=sampling.TweedieDenoising(),
        )
    )(jax.random.key(0))
    check_recorded("ve/heun_karras", np.asarray(out.x), int(out.nfe))


@pytest.mark.parametrize("sde_name", list(SDES))
def test_adaptive_objects_api_reproduces_the_recorded_samples(sde_name):
    sde = SDES[sde_name]
    out = jax.jit(
        lambda key: sampling.sample_adaptive(
            key, score_fn(sde), SHAPE, sde=sde, eps=EPS[sde_name], rtol=1e-4, atol=1e-4
        )
    )(jax.random.key(0))
    assert bool(out.success)
    check_recorded(f"{sde_name}/ode", np.asarray(out.x), int(out.nfe))
