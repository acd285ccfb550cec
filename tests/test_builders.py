import math

import jax
import numpy as np
import pytest
from gaussians import DATA, DIM, check_gaussian_samples

from configs import default
from sde_jax import EDMSDE, VESDE, VPSDE, CosineVPSDE, SubVPSDE, grids, ode, sampling, steppers
from sde_jax.experiment import build


@pytest.mark.parametrize(
    ("name", "cls"), [("vesde", VESDE), ("vpsde", VPSDE), ("subvpsde", SubVPSDE)]
)
def test_build_sde(name, cls):
    section = default.get_default_config().sde
    section.name = name
    section.sigma_max = 90.0
    section.beta_max = 10.0
    sde = build.build_sde(section)
    assert isinstance(sde, cls)
    if cls is VESDE:
        assert (sde.sigma_min, sde.sigma_max) == (0.01, 90.0)
    else:
        assert (sde.beta_min, sde.beta_max) == (0.1, 10.0)


def test_build_new_sdes_from_their_own_fields():
    section = default.get_default_config().sde
    section.name, section.sigma_min, section.sigma_max = "edmsde", 0.002, 80.0
    assert build.build_sde(section) == EDMSDE(sigma_min=0.002, sigma_max=80.0)
    section.name = "cosinevpsde"  # no offset / t_max in the section: the defaults
    assert build.build_sde(section) == CosineVPSDE()


def test_unknown_sde_lists_the_valid_names():
    section = default.get_default_config().sde
    section.name = "cosine"
    with pytest.raises(
        ValueError,
        match=r"sde.name must be one of \['cosinevpsde', 'edmsde', 'subvpsde', 'vesde', 'vpsde'\]",
    ):
        build.build_sde(section)


# --------------------------------------------------------------------------------------------
# The sampling section: every method name, its stepper, its default grid and its keys.

EPS = 1e-3


def _hand_built(sde, num_steps):
    """What each method name must build: (stepper, default grid) written out by hand."""
    log_snr = grids.log_snr_grid(sde, num_steps, EPS)
    karras = grids.karras_grid(sde, num_steps, EPS, rho=7.0)
    return {
        "pc": (
            steppers.PredictorCorrector(
                steppers.ReverseDiffusion(sde), steppers.Langevin(sde, 0.16, 1)
            ),
            grids.uniform_grid(sde, num_steps, EPS),
        ),
        "euler": (steppers.ProbabilityFlow(sde, ode.EULER), karras),
        "heun": (steppers.ProbabilityFlow(sde, ode.HEUN), karras),
        "rk4": (steppers.ProbabilityFlow(sde, ode.RK4), karras),
        "ddim": (steppers.DDIM(sde, eta=0.0), log_snr),
        "dpm_solver++": (steppers.DPMSolverPP2M(sde), log_snr),
        "dpm_solver++_3m": (steppers.DPMSolverPP3M(sde), log_snr),
        "dpm_solver++_2s": (steppers.DPMSolverPP2S(sde), log_snr),
        "dpm_solver++_3s": (steppers.DPMSolverPP3S(sde), log_snr),
        "dpm_solver++_2m_sde": (steppers.DPMSolverPP2MSDE(sde, eta=1.0), log_snr),
        "dpm_solver++_3m_sde": (steppers.DPMSolverPP3MSDE(sde, eta=1.0), log_snr),
        "unipc": (steppers.UniPC(sde, order=3, variant="bh2"), log_snr),
        "deis": (steppers.DEIS(sde, order=3), log_snr),
        "ipndm": (steppers.IPNDM(sde), log_snr),
        "edm_heun": (steppers.EDMHeun(sde), karras),
        "edm": (steppers.EDMStochastic(sde, num_steps), karras),
    }


def test_every_fixed_grid_method_builds_its_stepper_on_its_default_grid():
    sde = VPSDE()
    expected = _hand_built(sde, 25)
    assert set(expected) == set(build.METHODS) - {"ode"}
    for method, (stepper, grid) in expected.items():
        sampler = build.get_sampler(sde, {"method": method, "num_steps": 25}, (4, 3))
        assert sampler.stepper == stepper, method
        np.testing.assert_allclose(sampler.grid, grid, rtol=1e-6, err_msg=method)
        final = sampling.NoiseFreeMean() if method == "pc" else sampling.TweedieDenoising()
        assert sampler.final_step == final, method


def test_method_keys_reach_the_steppers_and_a_named_grid_wins():
    sde = VESDE()

    def stepper(**section):
        return build.get_sampler(sde, {"num_steps": 8, **section}, (4, 3)).stepper

    assert stepper(method="ddim", eta=0.5) == steppers.DDIM(sde, eta=0.5)
    assert stepper(method="dpm_solver++_2m_sde", eta=0.3, s_noise=0.9) == (
        steppers.DPMSolverPP2MSDE(sde, eta=0.3, s_noise=0.9)
    )
    assert stepper(method="unipc", order=2, variant="bh1") == steppers.UniPC(sde, 2, "bh1")
    assert stepper(method="deis", order=2) == steppers.DEIS(sde, order=2)
    churned = stepper(method="edm", s_churn=40.0, s_tmin=0.05, s_tmax=50.0, s_noise=1.003)
    assert churned == steppers.EDMStochastic(sde, 8, 40.0, 0.05, 50.0, 1.003)
    assert stepper(method="edm").s_tmax == math.inf
    grid = build.get_sampler(sde, {"method": "edm_heun", "grid": "log_snr"}, (4, 3)).grid
    np.testing.assert_allclose(grid, grids.log_snr_grid(sde, 1000, sde.default_eps), rtol=1e-6)
    with pytest.raises(ValueError, match="order"):
        stepper(method="unipc", order=7)
    with pytest.raises(ValueError, match="variant"):
        stepper(method="unipc", variant="bh3")


@pytest.mark.parametrize(
    ("method", "num_steps"),
    [
        ("ddim", 60),
        ("dpm_solver++_3m", 15),
        ("dpm_solver++_2s", 20),
        ("dpm_solver++_3s", 7),
        ("dpm_solver++_2m_sde", 40),
        ("dpm_solver++_3m_sde", 40),
        ("unipc", 12),
        ("deis", 15),
        ("ipndm", 25),
        ("edm_heun", 40),
        ("edm", 60),
    ],
)
def test_new_methods_by_name_sample_gaussian_data(method, num_steps):
    """Through the config path on each method's default grid: 2% of bias at 15-120 evaluations."""
    sde = VESDE() if method.startswith("edm") else VPSDE()
    section = {"method": method, "num_steps": num_steps}
    if method == "edm":
        section |= {"s_churn": 10.0}
    sampler = build.get_sampler(sde, section, (512, DIM))
    out = jax.jit(lambda k: sampler(k, DATA.score_fn(sde)))(jax.random.key(3))
    check_gaussian_samples(out.x, bias=0.02)
