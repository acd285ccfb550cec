"""Every experiment config: schema keys, the paper's settings, and that its parts build.

Full-size networks are only traced (``jax.eval_shape``); smoke variants really initialize and
run one forward pass on CPU.
"""

import importlib
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from configs import default
from sde_jax.experiment.build import build_model_from_config, build_sde, get_sampler

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[2] / "configs"
NOT_EXPERIMENTS = {"__init__", "default", "families"}
NAMES = sorted(
    str(path.relative_to(CONFIG_DIR).with_suffix(""))
    for path in CONFIG_DIR.rglob("*.py")
    if path.stem not in NOT_EXPERIMENTS
)
VARIANTS = ("", "smoke")

# Exact counts of the original score_sde networks (../shared/reference/param_counts.md):
# (parameter count, number of parameter leaves).
PARAM_COUNTS = {
    "ve/cifar10_ncsnpp_continuous": (62_758_915, 571),
    "ve/cifar10_ncsnpp_deep_continuous": (107_587_075, 963),
    "vp/cifar10_ddpmpp_continuous": (61_804_419, 564),
    "vp/cifar10_ddpmpp_deep_continuous": (106_632_579, 956),
    "subvp/cifar10_ddpmpp_deep_continuous": (106_632_579, 956),
    "vp/ddpm/cifar10": (35_218_947, 308),
    "ve/celebahq_256_ncsnpp_continuous": (65_574_549, 645),
    "ve/ncsn/cifar10": (34_428_675, None),
    "ve/ncsn/cifar10_124": (44_828_931, None),
    "ve/ncsn/celeba_1245": (57_384_195, None),
    "ve/ncsnv2/cifar10": (33_970_563, None),
    "ve/ncsnv2/bedroom": (83_445_379, None),
    "vp/ddpm/cifar10_unconditional": (32_329_347, None),
    "vp/ddpm/church": (111_569_923, None),
}
# Leaf counts (None above) are not in the reference table; the parameter count is.


def get(name: str, variant: str = "") -> ml_collections.ConfigDict:
    return importlib.import_module("configs." + name.replace("/", ".")).get_config(variant)


def flat(config, prefix: str = "") -> dict:
    """Dotted key -> value for every leaf of a (nested) ConfigDict."""
    out = {}
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def model_of(config):
    """The network of a full config, as training builds it."""
    return build_model_from_config(config)


def example_input(config, batch: int = 1):
    size, channels = config.data.image_size, config.data.num_channels
    x = jnp.zeros((batch, size, size, channels))
    if config.model.name == "ncsnpp" and config.model.embedding_type == "fourier":
        labels = jnp.full((batch,), 1.0)  # a noise level sigma
    else:
        labels = jnp.full((batch,), 5.0)  # 999 t or a step index
    return x, labels


def test_every_experiment_is_found():
    assert len(NAMES) == 41  # the original's 39 experiment files, quickstart, the classifier
    assert "quickstart" in NAMES and "vp/ddpm/cifar10" in NAMES


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", NAMES)
def test_keys_are_the_schema(name, variant):
    config = get(name, variant)
    assert isinstance(config, ml_collections.ConfigDict)
    values = flat(config)
    assert set(values) == set(flat(default.get_default_config()))
    for key, value in values.items():
        assert value is None or isinstance(value, bool | int | float | str | tuple), key
        assert not (isinstance(value, int | float) and value == -1), f"-1 sentinel in {key}"


@pytest.mark.parametrize("name", NAMES)
def test_docstring_starts_with_the_command(name):
    module = importlib.import_module("configs." + name.replace("/", "."))
    assert module.__doc__.startswith(f"sde-jax train --config=configs/{name}.py --workdir=")


# ml_collections loads config files with importlib's deprecated load_module().
@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")
def test_config_flag_passes_the_variant_after_the_colon():
    """``--config=path.py:smoke`` (ml_collections config_flags) calls ``get_config('smoke')``."""
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, flag_values=flag_values)
    path = CONFIG_DIR / "ve" / "cifar10_ncsnpp_continuous.py"
    flag_values(["sde-jax", f"--config={path}:smoke"])
    assert flat(flag_values.config) == flat(get("ve/cifar10_ncsnpp_continuous", "smoke"))
    flag_values(["sde-jax", f"--config={path}"])
    assert flat(flag_values.config) == flat(get("ve/cifar10_ncsnpp_continuous"))


@pytest.mark.parametrize("name", NAMES)
def test_command_line_can_pick_any_fast_solver_and_set_its_keys(name):
    """Every sampling key of the builder is in each config, with the type the command line's
    ``--config.sampling.KEY=VALUE`` gives it: a locked ConfigDict (what ml_collections' flags
    override) accepts exactly those assignments and refuses new keys."""
    from sde_jax import grids, steppers
    from sde_jax.experiment import build

    config = get(name)
    assert set(build.DEFAULTS) <= set(config.sampling), set(build.DEFAULTS) - set(config.sampling)
    config.lock()
    section = config.sampling
    section.method, section.order, section.variant = "unipc", 2, "bh1"
    section.grid, section.num_steps = "karras", 10
    sde = build_sde(config.sde)
    sampler = get_sampler(sde, section, (2, 8, 8, config.data.num_channels))
    assert sampler.stepper == steppers.UniPC(sde, 2, "bh1")
    eps = section.eps or sde.default_eps
    np.testing.assert_allclose(sampler.grid, grids.karras_grid(sde, 10, eps), rtol=1e-6)
    section.method, section.s_churn, section.s_tmax = "edm", 40.0, 50.0
    assert get_sampler(sde, section, (2, 8, 8, 1)).stepper.s_churn == 40.0
    with pytest.raises(AttributeError):
        section.churn = 1.0


def test_unknown_variant_raises():
    with pytest.raises(ValueError, match="variant"):
        get("ve/cifar10_ncsnpp_continuous", "tiny")


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", NAMES)
def test_sde_model_and_sampler_build(name, variant):
    config = get(name, variant)
    sde = build_sde(config.sde)
    model_of(config)
    shape = (2, config.data.image_size, config.data.image_size, config.data.num_channels)
    get_sampler(sde, config.sampling, shape)
    levels = len(config.model.ch_mult)
    assert config.data.image_size % 2 ** (levels - 1) == 0
    sizes = {config.data.image_size // 2**i for i in range(levels)}
    assert set(config.model.attn_resolutions) <= sizes


# The paper's settings (../shared/reference/score_sde_facts.md), per config.
VE = {"sde.name": "vesde", "sampling.predictor": "reverse_diffusion"}
VE |= {"sampling.corrector": "langevin", "data.centered": False, "training.reduce_mean": False}
VP = {"sampling.corrector": "none", "data.centered": True, "training.reduce_mean": True}
VP |= {"model.ema_rate": 0.9999}
VP_CONT = VP | {"sde.name": "vpsde", "sampling.predictor": "euler_maruyama"}
VP_DISC = VP | {"sde.name": "vpsde", "sampling.predictor": "ancestral_sampling"}
VP_DISC |= {"training.continuous": False}
SUBVP = VP_CONT | {"sde.name": "subvpsde"}
CIFAR = {"data.dataset": "cifar10", "data.image_size": 32, "training.batch_size": 128}
CIFAR |= {"sde.sigma_max": 50.0, "sampling.snr": 0.16, "sde.num_scales": 1000}
CIFAR |= {"sampling.num_steps": 1000}
NCSNPP_VE = VE | CIFAR | {"model.ema_rate": 0.999, "model.scale_by_sigma": True}
NCSNPP_VE |= {"model.fir": True, "model.progressive_input": "residual"}
DDPMPP = CIFAR | {"model.fir": False, "model.progressive_input": "none"}
DDPMPP |= {"model.embedding_type": "positional", "model.scale_by_sigma": False}
DDPM = {"model.name": "ddpm", "model.num_res_blocks": 2, "model.scale_by_sigma": False}
SHALLOW = {"model.num_res_blocks": 4, "training.n_iters": 1_300_001}
DEEP = {"model.num_res_blocks": 8, "training.n_iters": 950_001}
HIGH_RES = VE | {"sde.num_scales": 2000, "sampling.num_steps": 2000, "training.continuous": True}
HIGH_RES |= {"model.progressive": "output_skip", "model.progressive_input": "input_skip"}
RES_256 = HIGH_RES | {"data.image_size": 256, "sampling.snr": 0.075, "model.ema_rate": 0.999}
RES_256 |= {"training.batch_size": 64}
RES_1024 = HIGH_RES | {"data.image_size": 1024, "sampling.snr": 0.15, "sde.sigma_max": 1348.0}
RES_1024 |= {"data.dataset": "folder", "training.batch_size": 8, "model.ema_rate": 0.9999}
# The original's ve/ncsn, ve/ncsnv2 and vp/ddpm 256px files (their own optimizer settings).
ALD = {"sde.name": "vesde", "training.continuous": False, "data.centered": False}
ALD |= {"sampling.predictor": "none", "sampling.corrector": "ald", "model.nf": 128}
ALD |= {"model.nonlinearity": "elu", "optim.warmup": 0, "optim.grad_clip": 0.0}
ALD |= {"training.reduce_mean": False, "sde.sigma_min": 0.01}
NCSN1 = ALD | {"model.name": "ncsn", "model.scale_by_sigma": False, "optim.lr": 1e-3}
NCSN2 = ALD | {"model.scale_by_sigma": True, "optim.lr": 1e-4}
C10 = {"data.dataset": "cifar10", "data.image_size": 32}
C64 = {"data.dataset": "celeb_a", "data.image_size": 64}


def _ald(scales: int, sigma_max: float, steps: int, snr: float, ema: float) -> dict:
    return {"sde.num_scales": scales, "sampling.num_steps": scales, "sde.sigma_max": sigma_max} | {
        "sampling.n_steps_each": steps,
        "sampling.snr": snr,
        "model.ema_rate": ema,
    }


NCSN_EXPECTED = {
    "ve/ncsn/cifar10": NCSN1 | C10 | _ald(10, 1.0, 100, 0.316, 0.0),
    "ve/ncsn/cifar10_5": NCSN1 | C10 | _ald(10, 1.0, 100, 0.316, 0.999),
    "ve/ncsn/cifar10_124": NCSN1 | C10 | _ald(232, 50.0, 5, 0.176, 0.0),
    "ve/ncsn/cifar10_1245": NCSN1 | C10 | _ald(232, 50.0, 5, 0.176, 0.999),
    "ve/ncsn/celeba": NCSN1 | C64 | _ald(10, 1.0, 100, 0.316, 0.0),
    "ve/ncsn/celeba_5": NCSN1 | C64 | _ald(10, 1.0, 100, 0.316, 0.999),
    "ve/ncsn/celeba_124": NCSN1 | C64 | _ald(500, 90.0, 5, 0.128, 0.0),
    "ve/ncsn/celeba_1245": NCSN1 | C64 | _ald(500, 90.0, 5, 0.128, 0.999),
    "ve/ncsnv2/cifar10": NCSN2
    | C10
    | {"model.name": "ncsnv2_64"}
    | _ald(232, 50.0, 5, 0.176, 0.999),
    "ve/ncsnv2/celeba": NCSN2
    | C64
    | {"model.name": "ncsnv2_64"}
    | _ald(500, 90.0, 5, 0.128, 0.999),
    "ve/ncsnv2/bedroom": NCSN2
    | {"model.name": "ncsnv2_128", "data.dataset": "lsun/bedroom", "data.image_size": 128}
    | {"training.batch_size": 128}
    | _ald(1086, 190.0, 3, 0.095, 0.9999),
}
DDPM_256 = VP_DISC | DDPM | {"model.ch_mult": (1, 1, 2, 2, 4, 4), "data.image_size": 256}
DDPM_256 |= {"sde.num_scales": 1000, "sampling.num_steps": 1000, "optim.lr": 2e-5}
DDPM_256 |= {"training.batch_size": 64, "training.n_iters": 2_400_001}
EXPECTED = {
    "ve/cifar10_ncsnpp_continuous": NCSNPP_VE | SHALLOW | {"model.embedding_type": "fourier"},
    "ve/cifar10_ncsnpp_deep_continuous": NCSNPP_VE | DEEP | {"model.embedding_type": "fourier"},
    "ve/cifar10_ncsnpp": NCSNPP_VE
    | SHALLOW
    | {"training.continuous": False, "model.embedding_type": "positional"},
    "ve/celeba_ncsnpp": NCSNPP_VE
    | SHALLOW
    | {"training.continuous": False, "model.embedding_type": "positional"}
    | {"data.dataset": "celeb_a", "data.image_size": 64, "sde.sigma_max": 90.0}
    | {"sampling.snr": 0.17},
    "ve/bedroom_ncsnpp_continuous": RES_256
    | {"data.dataset": "lsun/bedroom", "sde.sigma_max": 378.0},
    "ve/church_ncsnpp_continuous": RES_256
    | {"data.dataset": "lsun/church_outdoor", "sde.sigma_max": 380.0},
    "ve/celebahq_256_ncsnpp_continuous": RES_256
    | {"data.dataset": "folder", "sde.sigma_max": 348.0},
    "ve/ffhq_256_ncsnpp_continuous": RES_256 | {"data.dataset": "folder", "sde.sigma_max": 348.0},
    "ve/ffhq_ncsnpp_continuous": RES_1024 | {"training.reduce_mean": True},
    "ve/celebahq_ncsnpp_continuous": RES_1024,
    "vp/cifar10_ddpmpp_continuous": VP_CONT | DDPMPP | SHALLOW,
    "vp/cifar10_ddpmpp_deep_continuous": VP_CONT | DDPMPP | DEEP,
    "vp/cifar10_ddpmpp": VP_DISC | DDPMPP | SHALLOW,
    "vp/cifar10_ncsnpp_continuous": VP_CONT | CIFAR | SHALLOW | {"model.fir": True},
    "vp/cifar10_ncsnpp_deep_continuous": VP_CONT | CIFAR | DEEP | {"model.fir": True},
    "vp/cifar10_ncsnpp": VP_DISC | CIFAR | SHALLOW | {"model.fir": True},
    "vp/ddpm/cifar10": VP_DISC | CIFAR | DDPM,
    "vp/ddpm/cifar10_continuous": VP_CONT | CIFAR | DDPM,
    "subvp/cifar10_ddpm_continuous": SUBVP | CIFAR | DDPM,
    "subvp/cifar10_ddpmpp_continuous": SUBVP | DDPMPP | SHALLOW,
    "subvp/cifar10_ddpmpp_deep_continuous": SUBVP | DDPMPP | DEEP,
    "subvp/cifar10_ncsnpp_continuous": SUBVP | CIFAR | SHALLOW | {"model.fir": True},
    "subvp/cifar10_ncsnpp_deep_continuous": SUBVP | CIFAR | DEEP | {"model.fir": True},
    **NCSN_EXPECTED,
    "ve/cifar10_ddpm": VE
    | CIFAR
    | DDPM
    | {"model.scale_by_sigma": True, "model.ema_rate": 0.999}
    | {"training.continuous": False},
    "vp/ddpm/cifar10_unconditional": VP_DISC | CIFAR | DDPM | {"model.conditional": False},
    "vp/ddpm/bedroom": DDPM_256 | {"data.dataset": "lsun/bedroom"},
    "vp/ddpm/church": DDPM_256 | {"data.dataset": "lsun/church_outdoor"},
    "vp/ddpm/celebahq": DDPM_256 | {"data.dataset": "folder"},
    # The noise-conditional classifier: the VE SDE of the CIFAR-10 NCSN++ run.
    "classifier/cifar10_wrn28_10": VE
    | {"data.dataset": "cifar10", "data.image_size": 32, "training.batch_size": 128}
    | {"sde.sigma_min": 0.01, "sde.sigma_max": 50.0, "training.eps": 1e-5}
    | {"training.task": "classifier", "model.name": "wideresnet", "model.num_classes": 10}
    | {"model.depth": 28, "model.widen_factor": 10, "model.fourier_scale": 16.0},
    "quickstart": VP_CONT
    | {"model.ema_rate": 0.995}
    | {"data.dataset": "digits", "data.image_size": 16, "data.num_channels": 1}
    | {"eval.enable_bpd": True, "data.random_flip": False},
}


def test_every_experiment_has_expectations():
    assert set(EXPECTED) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_paper_settings(name):
    values = flat(get(name))
    assert {key: values[key] for key in EXPECTED[name]} == EXPECTED[name]
    for key in ("optim.lr", "optim.warmup", "optim.grad_clip", "training.eps"):
        # The classifier's optimizer is ours (the original shipped no training code).
        if key in EXPECTED[name]:
            continue  # an experiment with its own optimizer settings (checked above)
        if name != "quickstart" and not name.startswith("classifier/"):
            assert values[key] == flat(default.get_default_config())[key], key


@pytest.mark.parametrize("name", [n for n in NAMES if n != "quickstart"])
def test_smoke_keeps_the_family(name):
    full, smoke = flat(get(name)), flat(get(name, "smoke"))
    changed = {k for k in full if full[k] != smoke[k]}
    shrunk = {"model.", "training.", "data.image_size", "eval.", "optim.warmup"}
    shrunk |= {"sampling.num_steps", "sampling.n_steps_each"}
    assert all(key.startswith(tuple(shrunk)) for key in changed), changed
    family = ("model.name", "model.embedding_type", "model.fir", "model.progressive")
    family += ("model.scale_by_sigma", "training.continuous", "training.reduce_mean")
    assert all(key not in changed for key in family), changed
    assert smoke["data.image_size"] == 16 and smoke["training.batch_size"] == 8
    assert smoke["model.num_res_blocks"] == 1 and smoke["model.dropout"] == 0.0


def test_1024_configs_use_sigma_max_1348_and_2000_steps():
    for name in ("ve/ffhq_ncsnpp_continuous", "ve/celebahq_ncsnpp_continuous"):
        config = get(name)
        assert config.data.image_size == 1024
        assert config.sde.sigma_max == 1348.0
        assert config.sde.num_scales == 2000 and config.sampling.num_steps == 2000


_FULL_SHAPES: dict = {}  # sub-VP and VP configs share their networks: trace each once


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
def test_full_size_parameter_count_equals_the_original(name):
    config = get(name)
    model = model_of(config)
    x, labels = example_input(config)
    if (model, x.shape) not in _FULL_SHAPES:
        init = lambda: model.init(jax.random.key(0), x, labels, train=False)  # noqa: E731
        _FULL_SHAPES[model, x.shape] = jax.eval_shape(init)
    shapes = _FULL_SHAPES[model, x.shape]
    assert set(shapes) == {"params"}
    leaves = jax.tree_util.tree_leaves(shapes["params"])
    count, n_leaves = PARAM_COUNTS[name]
    assert sum(int(np.prod(a.shape)) for a in leaves) == count
    assert n_leaves is None or len(leaves) == n_leaves


def test_1024_network_traces():
    config = get("ve/ffhq_ncsnpp_continuous")
    model = model_of(config)
    x, labels = example_input(config)
    out = jax.eval_shape(
        lambda: model.init_with_output(jax.random.key(0), x, labels, train=False)[0]
    )
    assert out.shape == x.shape


# Smoke networks that are the same module share one real initialization. Eager, with the
# RBG generator: compiling threefry for every parameter shape would double the test time.
_SMOKE_OUTPUTS: dict = {}


@pytest.mark.parametrize("name", NAMES)
def test_smoke_network_initializes_and_runs(name):
    config = get(name, "smoke")
    model = model_of(config)
    x, labels = example_input(config)
    key = (model, x.shape, float(labels[0]))
    if key not in _SMOKE_OUTPUTS:
        params = model.init(jax.random.key(0, impl="unsafe_rbg"), x, labels, train=False)
        count = sum(a.size for a in jax.tree_util.tree_leaves(params))
        _SMOKE_OUTPUTS[key] = (count, model.apply(params, x + 0.5, labels, train=False))
    count, out = _SMOKE_OUTPUTS[key]
    # NCSN v1 keeps its 500-row normalization embeddings (3.5M entries at nf 16).
    assert 0 < count < 4_000_000
    if config.training.task == "classifier":
        assert out.shape == (x.shape[0], config.model.num_classes)  # logits
    else:
        assert out.shape == x.shape
    assert bool(jnp.all(jnp.isfinite(out)))
