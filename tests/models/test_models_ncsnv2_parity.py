"""NCSNv2-64 and NCSN forward passes against the original's formulas, written out here.

The reference below follows the definitions of the original score_sde code and the papers
(NCSN, Song & Ermon 2019, eq. 6 for instance norm++; NCSNv2, Song & Ermon 2020, for the
1/sigma output scaling), reading the parameters by the original's names. It shares no code
with ``sde_jax.models``: plain lax convolutions and windows.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sde_jax.models import NCSN, NCSNv2, divide_by_sigma
from sde_jax.sdes import VESDE

NF, SIZE, SCALES = 8, 16, 6
SIGMA_MIN, SIGMA_MAX = 0.01, 5.0


def conv(p, x, dilation=1):
    y = jax.lax.conv_general_dilated(
        x,
        p["kernel"],
        (1, 1),
        "SAME",
        rhs_dilation=(dilation, dilation),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    return y + p["bias"] if "bias" in p else y


def inorm_plus(p, x, y):
    """gamma * ((x - mu) / s + alpha (mu - m) / v) + beta (eq. 6); rows of y if conditional."""
    mu = x.mean(axis=(1, 2), keepdims=True)
    s = jnp.sqrt(((x - mu) ** 2).mean(axis=(1, 2), keepdims=True) + 1e-5)
    m = mu.mean(axis=-1, keepdims=True)
    v = jnp.sqrt(((mu - m) ** 2).mean(axis=-1, keepdims=True) + 1e-5)
    if y is None:
        gamma, alpha, beta = p["gamma"], p["alpha"], p["beta"]
    else:
        rows = p["Embed_0"]["embedding"][y][:, None, None, :]
        gamma, alpha, beta = jnp.split(rows, 3, axis=-1)
    return gamma * ((x - mu) / s + alpha * (mu - m) / v) + beta


def mean_pool(z):
    """2x2 mean pooling, stride 2."""
    return (z[:, ::2, ::2] + z[:, 1::2, ::2] + z[:, ::2, 1::2] + z[:, 1::2, 1::2]) / 4


def window(x, reducer, init):
    return jax.lax.reduce_window(x, init, reducer, (1, 5, 5, 1), (1, 1, 1, 1), "SAME")


class Net:
    """The reference network over a parameter tree; ``y`` None for NCSNv2."""

    def __init__(self, params, y):
        self.params, self.y = params, y
        self.norm_name = "InstanceNorm2dPlus" if y is None else "ConditionalInstanceNorm2dPlus"
        self.prefix = "" if y is None else "Cond"

    def norm(self, p, i, x):
        return inorm_plus(p[f"{self.norm_name}_{i}"], x, self.y)

    def residual(self, p, x, out, down, dilation):
        h = jax.nn.elu(self.norm(p, 0, x))
        if down:
            h = jax.nn.elu(self.norm(p, 1, conv(p["Conv_0"], h, dilation)))
            if dilation > 1:
                return conv(p["Conv_1"], h, dilation) + conv(p["Conv_2"], x, dilation)
            h = mean_pool(conv(p["ConvMeanPool_0"]["Conv_0"], h))
            return h + mean_pool(conv(p["ConvMeanPool_1"]["Conv_0"], x))
        n = 0
        shortcut = x
        if x.shape[-1] != out:
            shortcut, n = conv(p["Conv_0"], x, dilation), 1
        h = conv(p[f"Conv_{n}"], h, dilation)
        h = jax.nn.elu(self.norm(p, 1, h))
        return conv(p[f"Conv_{n + 1}"], h, dilation) + shortcut

    def rcu(self, p, x, blocks):
        for b in range(blocks):
            res = x
            for s in range(2):
                if self.y is not None:
                    x = self.norm(p, 2 * b + s, x)
                x = conv(p[f"Conv_{2 * b + s}"], jax.nn.elu(x))
            x = x + res
        return x

    def crp(self, p, x):
        x = jax.nn.elu(x)
        path = x
        for s in range(2):
            if self.y is None:
                path = window(path, jax.lax.max, -jnp.inf)
            else:  # average over the 5x5 window, zero padding counted
                path = window(self.norm(p, s, path), jax.lax.add, 0.0) / 25.0
            path = conv(p[f"Conv_{s}"], path)
            x = x + path
        return x

    def refine(self, p, xs, shape, start, end):
        c = self.prefix
        hs = [self.rcu(p[f"{c}RCUBlock_{i}"], x, 2) for i, x in enumerate(xs)]
        h = hs[0]
        if not start:
            q = p[f"{c}MSFBlock_0"]
            h = 0.0
            for i, x in enumerate(hs):
                x = x if self.y is None else self.norm(q, i, x)
                z = conv(q[f"Conv_{i}"], x)
                h = h + jax.image.resize(z, (z.shape[0], *shape, z.shape[-1]), "bilinear")
        h = self.crp(p[f"{c}CRPBlock_0"], h)
        return self.rcu(p[f"{c}RCUBlock_{len(xs)}"], h, 3 if end else 1)

    def __call__(self, x):
        p, c = self.params, self.prefix
        block = "ResidualBlock" if self.y is None else "ConditionalResidualBlock"
        h = conv(p["Conv_0"], 2 * x - 1)
        plan = [(NF, 0, 1), (NF, 0, 1), (2 * NF, 1, 1), (2 * NF, 0, 1)]
        plan += [(2 * NF, 1, 2), (2 * NF, 0, 2), (2 * NF, 1, 4), (2 * NF, 0, 4)]
        layers = []
        for i, (out, down, dilation) in enumerate(plan):
            h = self.residual(p[f"{block}_{i}"], h, out, down, dilation)
            if i % 2:
                layers.append(h)
        ref = None
        for j, i in enumerate(reversed(range(4))):  # RefineBlock_0 takes the deepest layer
            xs = [layers[i]] if ref is None else [layers[i], ref]
            shape = layers[i].shape[1:3]
            ref = self.refine(p[f"{c}RefineBlock_{j}"], xs, shape, ref is None, i == 0)
        h = jax.nn.elu(self.norm(p, 0, ref))
        return conv(p["Conv_1"], h)


@pytest.fixture(scope="module")
def inputs():
    x = jax.random.uniform(jax.random.key(1), (3, SIZE, SIZE, 3))
    return x, jnp.array([0, 2, 5])


def random_params(model, x, labels):
    """Random parameters of the model's tree (shapes from eval_shape; no init is run)."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, labels, train=False))
    rng = np.random.default_rng(0)

    def draw(path, leaf):
        name = jax.tree_util.keystr(path[-1:])
        noise = rng.standard_normal(leaf.shape).astype(np.float32)
        if "kernel" in name:
            return noise / np.sqrt(np.prod(leaf.shape[:-1]))
        scale = name.strip("[]'") in ("gamma", "alpha", "embedding")
        return (1.0 if scale else 0.0) + 0.1 * noise

    return jax.tree_util.tree_map_with_path(draw, shapes["params"])


def test_ncsnv2_64_matches_the_formulas_and_divides_by_sigma(inputs):
    x, labels = inputs
    model = NCSNv2(NF, 64)
    params = random_params(model, x, labels)
    # The original's 1/sigma is the score wrapper's scale_by_sigma: compare after it.
    sde = VESDE(sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX)
    apply = divide_by_sigma(sde, model.apply, continuous=False, num_scales=SCALES)
    out = apply({"params": params}, x, labels, train=False)
    sigmas = np.exp(np.linspace(np.log(SIGMA_MAX), np.log(SIGMA_MIN), SCALES))
    expected = Net(params, None)(x) / sigmas[np.asarray(labels)][:, None, None, None]
    np.testing.assert_allclose(out, expected, rtol=2e-4, atol=1e-5 * float(jnp.abs(expected).max()))


def test_ncsn_matches_the_formulas_with_label_conditioned_norms(inputs):
    x, labels = inputs
    model = NCSN(NF, 64, num_scales=SCALES)
    params = random_params(model, x, labels)
    out = model.apply({"params": params}, x, labels, train=False)
    expected = Net(params, labels)(x)
    np.testing.assert_allclose(out, expected, rtol=2e-4, atol=1e-5 * float(jnp.abs(expected).max()))
    # The labels matter: other rows of the embeddings give another output.
    other = model.apply({"params": params}, x, jnp.array([1, 3, 4]), train=False)
    assert float(jnp.abs(other - out).max()) > 1e-3 * float(jnp.abs(out).max())
