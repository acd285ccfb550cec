"""NCSN++ / DDPM++ / DDPM: every option combination, validation, bfloat16 and remat."""

import itertools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sde_jax.compat import load_checkpoint, model_from_config
from sde_jax.experiment.build import build_model
from sde_jax.models import DDPM, NCSNpp

FIXTURES = pathlib.Path(__file__).parents[1] / "fixtures" / "score_sde_parity"
SMALL = {"nf": 8, "ch_mult": (1, 2), "num_res_blocks": 1, "attn_resolutions": (8,), "dropout": 0.0}
DDPM_SMALL = {**SMALL, "nf": 32}  # DDPM's GroupNorms have 32 groups
X = jnp.linspace(0.0, 1.0, 2 * 16 * 16 * 3).reshape(2, 16, 16, 3)


def _shapes(model, x=X, labels=None):
    labels = jnp.array([0.5, 3.0]) if labels is None else labels

    def init_and_apply():
        variables = model.init(jax.random.key(0), x, labels, train=False)
        return variables, model.apply(variables, x, labels, train=False)

    return jax.eval_shape(init_and_apply)


COMBINATIONS = list(
    itertools.product(
        ("ddpm", "biggan"),
        ("none", "output_skip", "residual"),
        ("none", "input_skip", "residual"),
        ("sum", "cat"),
    )
)


@pytest.mark.parametrize(("resblock", "progressive", "progressive_input", "combine"), COMBINATIONS)
def test_every_option_combination_builds_and_keeps_the_image_shape(
    resblock, progressive, progressive_input, combine
):
    # The remaining binary options alternate across the grid so each meets every setting.
    i = COMBINATIONS.index((resblock, progressive, progressive_input, combine))
    model = NCSNpp(
        **SMALL,
        resblock_type=resblock,
        progressive=progressive,
        progressive_input=progressive_input,
        progressive_combine=combine,
        fir=i % 2 == 0,
        embedding_type=("fourier", "positional")[i // 2 % 2],
        resamp_with_conv=i % 3 != 0,
        conditional=i % 5 != 0,
        skip_rescale=i % 7 != 0,
        centered=i % 2 == 1,
    )
    variables, out = _shapes(model)
    assert set(variables) == {"params"}
    assert out.shape == X.shape and out.dtype == jnp.float32


@pytest.mark.parametrize(
    ("field", "value", "choices"),
    [
        ("resblock_type", "resnet", "'ddpm', 'biggan'"),
        ("progressive", "input_skip", "'none', 'output_skip', 'residual'"),
        ("progressive_input", "output_skip", "'none', 'input_skip', 'residual'"),
        ("progressive_combine", "mean", "'sum', 'cat'"),
        ("embedding_type", "learned", "'fourier', 'positional'"),
        ("nonlinearity", "gelu", "'swish', 'relu', 'lrelu', 'elu'"),
    ],
)
def test_invalid_choices_raise_at_construction_naming_field_value_and_choices(
    field, value, choices
):
    with pytest.raises(ValueError, match=f"{field} must be one of \\[{choices}\\], got '{value}'"):
        NCSNpp(**SMALL, **{field: value})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("nf", 2),
        ("ch_mult", ()),
        ("num_res_blocks", -1),
        ("dropout", 1.5),
        ("dtype", jnp.int32),
        ("fourier_scale", 0.0),
    ],
)
def test_invalid_numbers_raise_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        NCSNpp(**{**SMALL, field: value})
    if field != "fourier_scale":
        with pytest.raises(ValueError, match=field):
            DDPM(**{**DDPM_SMALL, field: value})


def test_image_size_must_fit_the_resolutions():
    model = NCSNpp(**{**SMALL, "ch_mult": (1, 2, 2, 2)})
    with pytest.raises(ValueError, match="divisible"):
        _shapes(model, x=jnp.zeros((2, 12, 12, 3)))


@pytest.mark.parametrize("conditional", [True, False])
def test_ddpm_baseline_shapes(conditional):
    model = DDPM(**DDPM_SMALL, conditional=conditional)
    variables, out = _shapes(model, labels=jnp.array([3.0, 999.0]))
    assert out.shape == X.shape
    assert ("Dense_0" in variables["params"]) == conditional
    assert {"ResnetBlockDDPM_0", "AttnBlock_0", "Downsample_0", "Upsample_0"} <= set(
        variables["params"]
    )


def test_build_model_reads_a_section_and_ignores_unrelated_keys():
    section = {"name": "ncsnpp", **SMALL, "ch_mult": [1, 2], "ema_rate": 0.999, "beta_min": 0.1}
    model = build_model(section, centered=True, dtype=jnp.bfloat16, remat=True)
    assert model.ch_mult == (1, 2) and model.centered and model.remat
    assert model.dtype == jnp.bfloat16
    with pytest.raises(ValueError, match=r"model\.name must be one of"):
        build_model({"name": "nope"}, centered=True)


@pytest.fixture(scope="module")
def ddpmpp():
    fx = np.load(FIXTURES / "ddpmpp_vp.npz")
    config = json.loads(str(fx["config_json"]))["config"]
    params = load_checkpoint(FIXTURES / "ddpmpp_vp.msgpack")["params_ema"]
    return config, params, jnp.asarray(fx["x"]), jnp.asarray(fx["labels"])


def test_bfloat16_forward_keeps_float32_params_and_stays_close(ddpmpp):
    config, params, x, labels = ddpmpp
    ref = model_from_config(config).apply({"params": params}, x, labels, train=False)
    model = model_from_config(config, dtype=jnp.bfloat16)
    out = jax.jit(lambda p: model.apply({"params": p}, x, labels, train=False))(params)
    assert out.dtype == jnp.float32
    init = jax.eval_shape(lambda: model.init(jax.random.key(0), x, labels, train=False))
    assert {a.dtype for a in jax.tree_util.tree_leaves(init)} == {jnp.dtype(jnp.float32)}
    deviation = np.abs(out - ref).max(axis=(1, 2, 3)) / np.abs(ref).max(axis=(1, 2, 3))
    assert np.all(deviation < 0.05), deviation


@pytest.mark.parametrize(("resblock", "dropout"), [("biggan", 0.1), ("ddpm", 0.0)])
def test_remat_gives_identical_outputs_and_gradients(resblock, dropout):
    # Compiling gradients dominates the time on CPU: one resolution, no attention; dropout
    # (its RNG must pass through the rematerialized blocks) in one of the two cases.
    kwargs = {**SMALL, "ch_mult": (1,), "attn_resolutions": (), "dropout": dropout}
    plain = NCSNpp(**kwargs, resblock_type=resblock)
    remat = NCSNpp(**kwargs, resblock_type=resblock, remat=True)
    labels = jnp.array([0.5, 3.0])
    x = X[:, :8, :8]
    params = plain.init(jax.random.key(0), x, labels, train=False)["params"]
    params = jax.tree_util.tree_map(lambda p: p + 0.01, params)  # leave the 1e-10 init

    def loss(model):
        def f(p):
            rngs = {"dropout": jax.random.key(1)}
            out = model.apply({"params": p}, x, labels, train=True, rngs=rngs)
            return jnp.mean(out**2), out

        return jax.jit(jax.value_and_grad(f, has_aux=True))(params)

    (value_a, out_a), grad_a = loss(plain)
    (value_b, out_b), grad_b = loss(remat)
    assert jax.tree_util.tree_structure(grad_a) == jax.tree_util.tree_structure(grad_b)
    np.testing.assert_allclose(out_a, out_b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(value_a, value_b, rtol=1e-6)
    leaves = zip(jax.tree_util.tree_leaves(grad_a), jax.tree_util.tree_leaves(grad_b), strict=True)
    for a, b in leaves:
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_ddpm_remat_keeps_parameter_names():
    a = _shapes(DDPM(**DDPM_SMALL))[0]
    b = _shapes(DDPM(**DDPM_SMALL, remat=True))[0]
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
