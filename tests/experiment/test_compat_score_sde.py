"""Parity with the original score_sde code: its checkpoints, configs and network outputs."""

import json
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import serialization

from sde_jax.compat import load_checkpoint, model_from_config, score_kwargs
from sde_jax.models import DDPM, NCSNpp, divide_by_sigma
from sde_jax.sdes import VESDE, VPSDE

FIXTURES = pathlib.Path(__file__).parents[1] / "fixtures" / "score_sde_parity"
NAMES = ["ncsnpp_ve", "ddpmpp_vp"]
SDES = {"ncsnpp_ve": VESDE(sigma_min=0.01, sigma_max=50.0), "ddpmpp_vp": VPSDE(0.1, 20.0)}


def _fixture(name):
    data = np.load(FIXTURES / f"{name}.npz")
    return {k: data[k] for k in data.files}


def _config(fx):
    return json.loads(str(fx["config_json"]))["config"]


@pytest.fixture(scope="module", params=NAMES)
def parity(request):
    name = request.param
    fx = _fixture(name)
    ckpt = load_checkpoint(FIXTURES / f"{name}.msgpack")
    model = model_from_config(_config(fx))
    # The fixtures hold the original's outputs, divided by sigma where its config sets
    # model.scale_by_sigma: compare them after the score wrapper's division.
    kwargs = score_kwargs(_config(fx))
    scale = kwargs["scale_by_sigma"]
    network = divide_by_sigma(SDES[name], model.apply, kwargs["continuous"], kwargs["num_scales"])
    network = network if scale else model.apply
    apply = jax.jit(lambda p, x, labels: network({"params": p}, x, labels, train=False))
    return name, fx, ckpt, model, apply


def _shapes(tree):
    return jax.tree_util.tree_map(lambda a: tuple(a.shape), tree)


def test_parameter_tree_equals_the_original(parity):
    # Same names (flax auto-names of the original modules) and shapes, no key mapping.
    _, fx, ckpt, model, _ = parity
    x = jnp.zeros((1, *fx["x"].shape[1:]))
    init = jax.eval_shape(lambda: model.init(jax.random.key(0), x, jnp.ones((1,)), train=False))
    assert _shapes(init["params"]) == _shapes(ckpt["params_ema"])
    assert _shapes(ckpt["params"]) == _shapes(ckpt["params_ema"])


def test_output_from_params_ema_matches(parity):
    name, fx, ckpt, _, apply = parity
    out = np.asarray(apply(ckpt["params_ema"], fx["x"], fx["labels"]))
    ref = fx["output_from_params_ema"]
    if name == "ncsnpp_ve":
        # Outputs are divided by sigma and span four decades: compare before the division,
        # and per sample relative to its own scale (tolerances from the fixture README).
        sigma = fx["labels"][:, None, None, None]
        np.testing.assert_allclose(out * sigma, ref * sigma, rtol=1e-4, atol=1e-5)
        deviation = np.abs(out - ref).max(axis=(1, 2, 3)) / np.abs(ref).max(axis=(1, 2, 3))
        assert np.all(deviation <= 1e-5), deviation
    else:
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_loader_keeps_target_and_ema_apart(parity):
    _, fx, ckpt, _, apply = parity
    out = np.asarray(apply(ckpt["params"], fx["x"], fx["labels"]))
    np.testing.assert_allclose(out, fx["output_from_target"], rtol=1e-4, atol=1e-8)
    assert ckpt["step"] == 100
    raw = serialization.msgpack_restore((FIXTURES / f"{parity[0]}.msgpack").read_bytes())
    leaf = ("Conv_0", "kernel")
    np.testing.assert_array_equal(
        ckpt["params_ema"][leaf[0]][leaf[1]], raw["params_ema"][leaf[0]][leaf[1]]
    )
    np.testing.assert_array_equal(
        ckpt["params"][leaf[0]][leaf[1]], raw["optimizer"]["target"][leaf[0]][leaf[1]]
    )


def test_paths_listing_module_scopes_match(parity):
    name, _, ckpt, _, _ = parity
    text = (FIXTURES / f"{name}.paths.txt").read_text()
    scopes = text.split("top-level module scopes")[1].splitlines()[1:]
    expected = {
        line.split(":")[0].strip(): int(line.split(":")[1]) for line in scopes if ":" in line
    }
    counts = {
        k: sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(v))
        for k, v in ckpt["params_ema"].items()
    }
    assert counts == expected


def _tiny_state(step, as_arrays):
    params = {
        "Conv_0": {"kernel": np.ones((1, 1, 1, 2), np.float32), "bias": np.zeros(2, np.float32)}
    }
    ema = jax.tree_util.tree_map(lambda a: a + 1, params)
    wrap = np.asarray if as_arrays else (lambda v: v)
    return {
        "step": wrap(step),
        "optimizer": {"target": params, "state": {"step": wrap(step), "param_states": {}}},
        "lr": wrap(2e-4),
        "model_state": {},
        "ema_rate": wrap(0.999),
        "params_ema": ema,
        "rng": np.array([0, 42], np.uint32),
    }


@pytest.mark.parametrize("as_arrays", [False, True])
def test_loader_accepts_scalar_arrays_and_directories(tmp_path, as_arrays):
    for step in (5, 26):
        state = _tiny_state(step, as_arrays)
        (tmp_path / f"checkpoint_{step}").write_bytes(serialization.msgpack_serialize(state))
    loaded = load_checkpoint(tmp_path)  # the latest checkpoint_<n>
    assert loaded["step"] == 26 and isinstance(loaded["step"], int)
    assert set(loaded) == {"params", "params_ema", "step"}
    np.testing.assert_array_equal(loaded["params_ema"]["Conv_0"]["kernel"], 2.0)
    np.testing.assert_array_equal(loaded["params"]["Conv_0"]["kernel"], 1.0)


def test_loader_rejects_other_files(tmp_path):
    path = tmp_path / "not_a_checkpoint"
    path.write_bytes(serialization.msgpack_serialize({"params": {"w": np.ones(2)}}))
    with pytest.raises(ValueError, match="params_ema"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "empty_dir_missing")


def test_model_from_config_accepts_configdict_and_lowercases_options():
    cfg = _config(_fixture("ncsnpp_ve"))
    cfg["model"]["resblock_type"] = "BigGAN"
    model = model_from_config(ml_collections.ConfigDict(cfg))
    assert isinstance(model, NCSNpp)
    assert model.resblock_type == "biggan"
    assert model.fir_kernel == (1, 3, 3, 1) and model.ch_mult == (1, 2, 2)
    assert model.centered is False and score_kwargs(cfg)["scale_by_sigma"] is True
    assert score_kwargs({"model": {"name": "ncsnpp"}})["scale_by_sigma"] is True  # its default
    cfg["model"]["name"] = "ddpm"
    with pytest.raises(ValueError, match="multiple of 32"):
        model_from_config(cfg)  # the DDPM baseline's GroupNorms have 32 groups
    cfg["model"]["nf"] = 32
    assert isinstance(model_from_config(cfg), DDPM)


def test_model_from_config_rejects_invalid_settings():
    cfg = _config(_fixture("ncsnpp_ve"))
    cfg["training"]["continuous"] = False
    with pytest.raises(ValueError, match="fourier"):
        model_from_config(cfg)
    cfg = _config(_fixture("ncsnpp_ve"))
    cfg["model"]["name"] = "unet9000"
    with pytest.raises(ValueError, match=r"model\.name"):
        model_from_config(cfg)
    cfg = _config(_fixture("ncsnpp_ve"))
    cfg["model"]["progressive"] = "sideways"
    with pytest.raises(ValueError, match="progressive must be one of"):
        model_from_config(cfg)
    with pytest.raises(ValueError, match="data"):
        model_from_config({"model": cfg["model"]})
