"""NCSNv2 and NCSN (v1) RefineNets: shapes, instance norm++, division by sigma, validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sde_jax.experiment.build import build_model
from sde_jax.models.ncsnv2 import NCSN, NCSNv2
from sde_jax.models.normalization import ConditionalInstanceNorm2dPlus, InstanceNorm2dPlus
from sde_jax.models.score import divide_by_sigma, label_sigmas
from sde_jax.sdes import VESDE


@pytest.mark.parametrize(("variant", "size"), [(64, 16), (128, 32), (256, 64)])
def test_ncsnv2_variants_keep_the_image_shape(variant, size):
    model = NCSNv2(nf=8, variant=variant)
    x, labels = jnp.zeros((2, size, size, 3)), jnp.array([0, 9])

    def init_and_apply():
        variables = model.init(jax.random.key(0), x, labels, train=False)
        return variables, model.apply(variables, x, labels, train=False)

    variables, out = jax.eval_shape(init_and_apply)
    assert out.shape == x.shape
    names = set(variables["params"])
    stages = {64: 4, 128: 5, 256: 6}[variant]
    assert {f"RefineBlock_{i}" for i in range(stages)} <= names
    assert f"ResidualBlock_{2 * stages - 1}" in names and "InstanceNorm2dPlus_0" in names


def test_ncsnv2_output_is_the_network_divided_by_sigma_of_the_label():
    # The division is the score wrapper's (scale_by_sigma), over the SDE's SMLD table.
    model = NCSNv2(nf=4)
    sde = VESDE(sigma_min=0.1, sigma_max=10.0)
    x = jax.random.uniform(jax.random.key(0), (1, 8, 8, 3))
    params = model.init(jax.random.key(1), x, jnp.array([0]), train=False)
    scaled_apply = divide_by_sigma(sde, model.apply, continuous=False, num_scales=5)
    batch = jnp.tile(x, (5, 1, 1, 1))

    @jax.jit
    def apply(labels):
        return scaled_apply(params, batch, labels), model.apply(params, batch, labels)

    out, network = apply(jnp.arange(5))
    sigmas = label_sigmas(sde, jnp.arange(5), continuous=False, num_scales=5)
    np.testing.assert_allclose(sigmas, np.geomspace(10.0, 0.1, 5), rtol=1e-6)
    scaled = out * sigmas[:, None, None, None]
    # Against the network output of the same rows: rows of one batch differ by up to 2e-5
    # relative at near-zero entries on CPU (measured), with or without the division.
    np.testing.assert_allclose(scaled, network, rtol=1e-5)
    # The network itself does not read the labels (NCSNv2 is unconditional).
    np.testing.assert_array_equal(apply(jnp.zeros(5, jnp.int32))[1], network)


def test_instance_norm_plus_matches_its_definition():
    x = np.random.default_rng(0).standard_normal((2, 5, 5, 4)).astype(np.float32) * 3 + 1
    norm = InstanceNorm2dPlus()
    params = norm.init(jax.random.key(0), x)
    alpha, gamma, beta = (
        np.asarray(params["params"][k]).reshape(-1) for k in ["alpha", "gamma", "beta"]
    )
    mu = x.mean(axis=(1, 2))
    s = np.sqrt(x.var(axis=(1, 2)) + 1e-5)
    mu_plus = (mu - mu.mean(-1, keepdims=True)) / np.sqrt(mu.var(-1, keepdims=True) + 1e-5)
    ref = (
        gamma * ((x - mu[:, None, None]) / s[:, None, None] + alpha * mu_plus[:, None, None]) + beta
    )
    np.testing.assert_allclose(norm.apply(params, x), ref, rtol=1e-5, atol=1e-5)


def test_conditional_instance_norm_plus_selects_rows_of_its_embedding():
    x = np.random.default_rng(1).standard_normal((3, 4, 4, 2)).astype(np.float32)
    norm = ConditionalInstanceNorm2dPlus(num_classes=3)
    params = norm.init(jax.random.key(0), x, jnp.array([0, 1, 2]))
    table = params["params"]["Embed_0"]["embedding"]
    assert table.shape == (3, 6)
    np.testing.assert_array_equal(table[:, 4:], 0.0)  # beta starts at zero
    y = jnp.array([2, 2, 0])
    plain = InstanceNorm2dPlus()
    for i in range(3):
        row = table[y[i]]
        p = {
            "params": {
                "gamma": row[:2].reshape(1, 1, 1, 2),
                "alpha": row[2:4].reshape(1, 1, 1, 2),
                "beta": row[4:].reshape(1, 1, 1, 2),
            }
        }
        single = norm.apply(params, x, y)[i]
        # The per-example part equals unconditional instance norm++ with that row, given the
        # same batch statistics (they are per example).
        np.testing.assert_allclose(single, plain.apply(p, x)[i], rtol=1e-5, atol=1e-6)


def test_ncsn_is_conditioned_on_the_label_and_not_divided():
    model = NCSN(nf=4, num_scales=4)
    x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 3))
    params = model.init(jax.random.key(1), x, jnp.array([0, 1]), train=False)
    embeds = [p for path, p in jax.tree_util.tree_leaves_with_path(params) if "Embed" in str(path)]
    assert embeds and all(e.shape[0] == 4 for e in embeds)
    # Move the embeddings off their init so that different rows differ.
    perturbed = jax.tree_util.tree_map(
        lambda p: p + jax.random.normal(jax.random.key(2), p.shape) * 0.1, params
    )
    out = jax.jit(model.apply)(perturbed, jnp.tile(x[:1], (2, 1, 1, 1)), jnp.array([0, 3]))
    assert out.shape == x.shape and float(jnp.max(jnp.abs(out[0] - out[1]))) > 1e-4


def test_builder_names_and_validation():
    section = {"name": "ncsnv2_128", "nf": 8, "normalization": "InstanceNorm++", "num_scales": 232}
    model = build_model(section, centered=False)
    assert isinstance(model, NCSNv2) and model.variant == 128
    assert isinstance(build_model({"name": "ncsn", "nf": 8}, centered=True), NCSN)
    with pytest.raises(ValueError, match="remat"):
        build_model(section, centered=False, remat=True)
    with pytest.raises(ValueError, match="normalization must be one of"):
        NCSNv2(normalization="BatchNorm")
    with pytest.raises(ValueError, match="interpolation must be one of"):
        NCSN(interpolation="bicubic")
    with pytest.raises(ValueError, match="variant must be one of"):
        NCSNv2(variant=32)
