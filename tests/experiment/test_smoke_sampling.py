"""Every shipped config's ``:smoke`` variant samples finite values (issue 17, item 2).

Config files are enumerated from ``configs/`` (new ones are covered without editing this
file). Each config's sampler runs with the exact score of N(0, I) data, one compile per
distinct (SDE, sampling, image shape); one config per network family also samples with its
untrained tiny network. Training a few steps of each family is
tests/experiment/test_smoke_configs.py.
"""

import importlib
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sde_jax import data
from sde_jax.experiment import build
from sde_jax.sdes import batch_times, expand_to
from sde_jax.training.step import network_score_fn

ROOT = pathlib.Path(__file__).resolve().parents[2]
SKIP = {"default", "families", "__init__"}


def _config_names() -> list[str]:
    names = []
    for path in sorted((ROOT / "configs").rglob("*.py")):
        if path.stem in SKIP:
            continue
        names.append(".".join(path.relative_to(ROOT).with_suffix("").parts))
    return names


def _smoke(name: str):
    module = importlib.import_module(name)
    try:
        return module.get_config("smoke")
    except ValueError:  # a config without a smoke variant (none is shipped so today)
        pytest.fail(f"{name} has no :smoke variant")


def _groups(key_fn) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for name in _config_names():
        config = _smoke(name)
        if config.training.task != "score":
            continue
        groups.setdefault(key_fn(config), []).append(name)
    return groups


def _sampler_key(config) -> str:
    return json.dumps(
        [
            json.loads(config.sde.to_json()),
            json.loads(config.sampling.to_json()),
            config.data.num_channels,
        ],
        sort_keys=True,
    )


SAMPLER_GROUPS = _groups(_sampler_key)


def test_enumerates_the_vp_discrete_smoke_configs():
    names = {n for group in SAMPLER_GROUPS.values() for n in group}
    assert {"configs.vp.cifar10_ddpmpp", "configs.vp.cifar10_ncsnpp"} <= names


@pytest.mark.parametrize("key", list(SAMPLER_GROUPS), ids=lambda k: SAMPLER_GROUPS[k][0])
def test_smoke_sampler_is_finite_with_the_exact_gaussian_score(key):
    config = _smoke(SAMPLER_GROUPS[key][0])
    sde = build.build_sde(config.sde)
    # The sampler's validity depends on its grid, not on the image size: 4x4 compiles faster.
    sampler = build.get_sampler(sde, config.sampling, (1, 4, 4, config.data.num_channels))

    def score_fn(x, t):  # N(0, I) data: x_t ~ N(0, m^2 + s^2)
        t = batch_times(x, t)
        return -x / expand_to(sde.mean_coeff(t) ** 2 + sde.marginal_std(t) ** 2, x)

    out = jax.jit(lambda key: sampler(key, score_fn))(jax.random.key(0))
    assert bool(out.success), SAMPLER_GROUPS[key]
    assert np.isfinite(np.asarray(out.x)).all(), SAMPLER_GROUPS[key]


NETWORK_GROUPS = _groups(lambda c: c.model.name)


def _random_params(model, shape):
    """Parameters of the network's shapes, N(0, 0.05^2): no compiled init (it costs ~15 s)."""
    abstract = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros(shape), jnp.ones(shape[:1]), train=False)
    )["params"]
    leaves, tree = jax.tree.flatten(abstract)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    return tree.unflatten(
        [0.05 * jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, leaves, strict=True)]
    )


@pytest.mark.parametrize("model", list(NETWORK_GROUPS))
def test_one_smoke_config_per_network_samples_finite_values(model):
    config = _smoke(NETWORK_GROUPS[model][0])
    sde = build.build_sde(config.sde)
    network = build.build_model_from_config(config)
    shape = (2, *data.image_shape(config.data))
    params = _random_params(network, shape)
    sampler = build.get_sampler(sde, config.sampling, shape)
    kwargs = build.score_kwargs(config)
    draw = jax.jit(lambda key, p: sampler(key, network_score_fn(network, sde, p, **kwargs)))
    out = draw(jax.random.key(1), params)
    assert bool(out.success), NETWORK_GROUPS[model][0]
    assert np.isfinite(np.asarray(out.x)).all()
    assert float(jnp.std(out.x)) > 0  # not a constant image
