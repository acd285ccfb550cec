import dataclasses
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


# --------------------------------------------------------------------------------------------
# Defaults live once: configs/default.py sets every key the builder reads.


class _Recording(dict):
    """A config section that records the keys read from it (``[key]`` and ``get``)."""

    def __init__(self, values, prefix, seen):
        super().__init__(values)
        self.prefix, self.seen = prefix, seen

    def __getitem__(self, key):
        self.seen.add(self.prefix + key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.seen.add(self.prefix + key)
        return super().get(key, default)


def _recording_config(seen):
    config = default.get_default_config().to_dict()
    sections = {k: _Recording(v, f"{k}.", seen) for k, v in config.items() if isinstance(v, dict)}
    return _Recording(sections, "", seen)


def test_every_key_the_builder_reads_is_set_by_the_default_config():
    seen = set()
    config = _recording_config(seen)
    build.build_sde(config["sde"])
    build.build_model_from_config(config)
    build.build_optimizer(config["optim"])
    build.check_image_size(config)
    build.score_kwargs(config)
    build.get_sampler(VESDE(), dict(config["sampling"]), (1, 2))
    flat = {
        f"{section}.{key}"
        for section, values in default.get_default_config().to_dict().items()
        if isinstance(values, dict)
        for key in values
    }
    read = {k for k in seen if "." in k}
    assert read - flat == set()
    assert {"optim.beta1", "optim.beta2", "optim.eps", "model.scale_by_sigma"} <= read


def test_sampling_defaults_are_the_default_configs_section():
    assert default.get_default_config().sampling.to_dict() == build.DEFAULTS


def test_values_for_older_configs_equal_the_default_config():
    config = default.get_default_config()
    for key, value in build.OLDER_CONFIG_DEFAULTS.items():
        section, name = key.split(".")
        assert config[section][name] == value, key


def test_optimizer_reads_beta2_and_older_configs_keep_0999():
    optim = default.get_default_config().optim
    optim.warmup, optim.grad_clip = 0, None
    grads = {"w": np.ones(3, np.float32)}
    params = {"w": np.zeros(3, np.float32)}

    def second_moment(section):
        tx = build.build_optimizer(section)
        state = tx.init(params)
        _, state = tx.update(grads, state, params)
        return float(state[0].nu["w"][0])

    assert second_moment(optim) == pytest.approx(1 - 0.999)
    older = {k: v for k, v in optim.to_dict().items() if k != "beta2"}
    assert second_moment(older) == pytest.approx(1 - 0.999)
    optim.beta2 = 0.99
    assert second_moment(optim) == pytest.approx(1 - 0.99)


# --------------------------------------------------------------------------------------------
# The networks take no SDE parameter; the builder gives the score wrapper its options.


def test_build_model_ignores_the_sde_keys_and_score_kwargs_reads_them():
    config = default.get_default_config()
    config.model.nf, config.model.ch_mult, config.model.num_res_blocks = 8, (1, 2), 1
    model = build.build_model_from_config(config)
    fields = {f.name for f in dataclasses.fields(model)}
    assert not fields & {"sigma_min", "sigma_max", "num_scales", "scale_by_sigma"}
    config.training.continuous, config.sde.num_scales = False, 2000
    assert build.score_kwargs(config) == {
        "continuous": False,
        "num_scales": 2000,
        "scale_by_sigma": True,
    }
    config.model.scale_by_sigma = False
    assert build.score_kwargs(config)["scale_by_sigma"] is False


@pytest.mark.parametrize(
    ("name", "expected"),
    [("ncsnpp", True), ("ddpm", False), ("ncsnv2_64", True), ("ncsn", False)],
)
def test_a_section_without_scale_by_sigma_keeps_the_architectures_old_default(name, expected):
    assert build.scale_by_sigma({"name": name}) is expected
    with pytest.raises(ValueError, match=r"model\.name must be one of"):
        build.scale_by_sigma({"name": "unet9000"})
