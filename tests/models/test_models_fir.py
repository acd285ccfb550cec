"""FIR resampling against its definition (upsample, pad, filter, downsample) in numpy, and
against the depthwise-convolution formulation it replaced."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import fir_depthwise
from sde_jax.models import fir


def np_upfirdn(x, k, up=1, down=1, pad0=0, pad1=0):
    """The definition, literally: zero insertion, padding, true convolution, subsampling."""
    n, h, w, c = x.shape
    z = np.zeros((n, h * up, w * up, c), np.float64)
    z[:, ::up, ::up] = x
    lo, hi = max(pad0, 0), max(pad1, 0)
    z = np.pad(z, ((0, 0), (lo, hi), (lo, hi), (0, 0)))
    z = z[:, max(-pad0, 0) : z.shape[1] - max(-pad1, 0), max(-pad0, 0) : z.shape[2] - max(-pad1, 0)]
    kh = k.shape[0]
    out_h, out_w = z.shape[1] - kh + 1, z.shape[2] - kh + 1
    out = np.zeros((n, out_h, out_w, c))
    for i in range(out_h):
        for j in range(out_w):
            window = z[:, i : i + kh, j : j + kh, :]
            # convolution: output[i] = sum_a input[i + a] * k[kh - 1 - a]
            out[:, i, j, :] = np.einsum("nabc,ab->nc", window, k[::-1, ::-1])
    return out[:, ::down, ::down]


def np_correlate(x, w, pad):
    """Cross-correlation of NHWC x with HWIO w after symmetric zero padding."""
    z = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    kh = w.shape[0]
    out_h, out_w = z.shape[1] - kh + 1, z.shape[2] - kh + 1
    out = np.zeros((x.shape[0], out_h, out_w, w.shape[-1]))
    for i in range(out_h):
        for j in range(out_w):
            out[:, i, j] = np.einsum("nabi,abio->no", z[:, i : i + kh, j : j + kh], w)
    return out


def np_zero_insert(x, factor):
    n, h, w, c = x.shape
    z = np.zeros((n, (h - 1) * factor + 1, (w - 1) * factor + 1, c))
    z[:, ::factor, ::factor] = x
    return z


KERNELS = [(1, 3, 3, 1), (1, 1), (1, 2, 1), (1, 4, 6, 4, 1)]


@pytest.fixture
def x():
    return np.random.default_rng(0).standard_normal((2, 6, 6, 3)).astype(np.float32)


def _kernel(k, gain=1.0):
    k = np.outer(k, k).astype(np.float64)
    return k / k.sum() * gain


@pytest.mark.parametrize("k", KERNELS)
def test_upsample_2d_matches_definition(x, k):
    p = len(k) - 2
    ref = np_upfirdn(x, _kernel(k, 4), up=2, pad0=(p + 1) // 2 + 1, pad1=p // 2)
    out = fir.upsample_2d(jnp.asarray(x), k)
    assert out.shape == (2, 12, 12, 3)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k", KERNELS)
def test_downsample_2d_matches_definition(x, k):
    p = len(k) - 2
    ref = np_upfirdn(x, _kernel(k), down=2, pad0=(p + 1) // 2, pad1=p // 2)
    out = fir.downsample_2d(jnp.asarray(x), k)
    assert out.shape == (2, 3, 3, 3)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


def test_upfirdn_crops_with_negative_padding(x):
    k = _kernel((1, 3, 3, 1))
    out = fir.upfirdn_2d(jnp.asarray(x), k.astype(np.float32), up=2, down=1, pad0=-1, pad1=2)
    np.testing.assert_allclose(out, np_upfirdn(x, k, up=2, pad0=-1, pad1=2), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k", [(1, 3, 3, 1), (1, 1)])
def test_upsample_conv_2d_is_transposed_conv_then_filter(x, k):
    w = np.random.default_rng(1).standard_normal((3, 3, 3, 5)).astype(np.float32)
    p = (len(k) - 2) - 2
    transposed = np_correlate(np_zero_insert(x, 2), w, pad=2)
    ref = np_upfirdn(transposed, _kernel(k, 4), pad0=(p + 1) // 2 + 1, pad1=p // 2 + 1)
    out = fir.upsample_conv_2d(jnp.asarray(x), jnp.asarray(w), k)
    assert out.shape == (2, 12, 12, 5)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("k", [(1, 3, 3, 1), (1, 1)])
def test_conv_downsample_2d_is_filter_then_strided_conv(x, k):
    w = np.random.default_rng(2).standard_normal((3, 3, 3, 5)).astype(np.float32)
    p = (len(k) - 2) + 2
    filtered = np_upfirdn(x, _kernel(k), pad0=(p + 1) // 2, pad1=p // 2)
    ref = np_correlate(filtered, w, pad=0)[:, ::2, ::2]
    out = fir.conv_downsample_2d(jnp.asarray(x), jnp.asarray(w), k)
    assert out.shape == (2, 3, 3, 5)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_box_kernel_reduces_to_nearest_and_average_pooling(x):
    xj = jnp.asarray(x)
    np.testing.assert_allclose(fir.upsample_2d(xj, (1, 1)), fir.naive_upsample_2d(xj), atol=1e-6)
    np.testing.assert_allclose(
        fir.downsample_2d(xj, (1, 1)), fir.naive_downsample_2d(xj), atol=1e-6
    )
    pooled = x.reshape(2, 3, 2, 3, 2, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(fir.naive_downsample_2d(xj), pooled, atol=1e-6)


def test_constant_images_stay_constant_away_from_borders():
    ones = jnp.ones((1, 8, 8, 2))
    up = fir.upsample_2d(ones, (1, 3, 3, 1))
    np.testing.assert_allclose(up[:, 2:-2, 2:-2], 1.0, rtol=1e-6)
    down = fir.downsample_2d(ones, (1, 3, 3, 1))
    np.testing.assert_allclose(down[:, 1:-1, 1:-1], 1.0, rtol=1e-6)


def test_fir_is_differentiable_and_jittable(x):
    f = jax.jit(
        lambda v: jnp.sum(fir.downsample_2d(fir.upsample_2d(v, (1, 3, 3, 1)), (1, 3, 3, 1)))
    )
    g = jax.grad(f)(jnp.asarray(x))
    assert g.shape == x.shape and bool(jnp.all(jnp.isfinite(g)))


def test_setup_kernel_rejects_bad_kernels():
    with pytest.raises(ValueError, match="fir_kernel"):
        fir.setup_kernel(np.ones((2, 3)))
    with pytest.raises(ValueError, match="fir_kernel"):
        fir.setup_kernel([1, -1])


def _conv_same(x, w):
    return jax.lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def test_fused_resampling_convs_equal_the_unfused_pair_in_the_interior():
    # StyleGAN2: upsample_conv_2d = upsample_2d then conv; conv_downsample_2d = conv then
    # downsample_2d. They differ only where the zero padding of the two orders differs.
    x = jax.random.normal(jax.random.key(0), (1, 8, 8, 3))
    w = jax.random.normal(jax.random.key(1), (3, 3, 3, 4))
    k = (1, 3, 3, 1)
    up = fir.upsample_conv_2d(x, w, k) - _conv_same(fir.upsample_2d(x, k), w)
    np.testing.assert_allclose(up[:, 2:-2, 2:-2], 0.0, atol=1e-4)
    down = fir.conv_downsample_2d(x, w, k) - fir.downsample_2d(_conv_same(x, w), k)
    np.testing.assert_allclose(down[:, 1:-1, 1:-1], 0.0, atol=1e-4)


RESAMPLERS = {
    "up": lambda m, x, w, k: m.upsample_2d(x, k),
    "down": lambda m, x, w, k: m.downsample_2d(x, k),
    "up_conv": lambda m, x, w, k: m.upsample_conv_2d(x, w, k),
    "conv_down": lambda m, x, w, k: m.conv_downsample_2d(x, w, k),
}


@pytest.mark.parametrize("kind", list(RESAMPLERS))
@pytest.mark.parametrize("k", [(1, 3, 3, 1), (1, 1)])
@pytest.mark.parametrize("channels", [1, 3, 5])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_slice_sums_equal_the_depthwise_convolution(kind, k, channels, dtype):
    rng = np.random.default_rng(channels)
    x = jnp.asarray(rng.standard_normal((2, 8, 8, channels)), dtype)
    w = jnp.asarray(rng.standard_normal((3, 3, channels, 4)) / 3, dtype)
    new = RESAMPLERS[kind](fir, x, w, k)
    old = RESAMPLERS[kind](fir_depthwise, x, w, k)
    assert new.shape == old.shape and new.dtype == old.dtype == dtype
    new, old = np.asarray(new, np.float64), np.asarray(old, np.float64)
    scale = np.max(np.abs(old))
    # float32: a few roundings of the output's scale; bfloat16: about one bfloat16 ulp.
    tol = 1e-6 if dtype == jnp.float32 else 1e-2
    np.testing.assert_allclose(new, old, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize(
    ("up", "down", "pad0", "pad1"),
    [(1, 1, 0, 0), (2, 1, -1, 2), (1, 2, 1, 1), (2, 2, 1, 2), (3, 1, 2, 0), (1, 3, -1, 1)],
)
def test_upfirdn_with_a_non_separable_kernel(x, up, down, pad0, pad1):
    k = np.random.default_rng(3).random((3, 3))
    out = fir.upfirdn_2d(jnp.asarray(x), k, up=up, down=down, pad0=pad0, pad1=pad1)
    ref = np_upfirdn(x, k, up=up, down=down, pad0=pad0, pad1=pad1)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    old = fir_depthwise.upfirdn_2d(jnp.asarray(x), k.astype(np.float32), up, down, pad0, pad1)
    np.testing.assert_allclose(out, old, rtol=1e-5, atol=1e-6)


def _primitives(fn, *args):
    return {str(e.primitive) for e in jax.make_jaxpr(fn)(*args).jaxpr.eqns}


def test_fir_filtering_runs_without_convolutions(x):
    # The point of the formulation: XLA:CPU runs depthwise convolutions 10-100x slower, and
    # slower still inside loops (benchmarks/models_in_loops.py).
    xj = jnp.asarray(x)
    for fn in (
        lambda v: fir.upsample_2d(v, (1, 3, 3, 1)),
        lambda v: fir.downsample_2d(v, (1, 3, 3, 1)),
    ):
        assert "conv_general_dilated" not in _primitives(fn, xj)
    w = jnp.ones((3, 3, 3, 4))
    prims = [
        str(e.primitive)
        for e in jax.make_jaxpr(fir.conv_downsample_2d, static_argnums=2)(
            xj, w, (1, 3, 3, 1)
        ).jaxpr.eqns
    ]
    assert prims.count("conv_general_dilated") == 1  # only the 3x3 convolution itself


def test_fir_in_a_loop_equals_fir_alone(x):
    xj = jnp.asarray(x)
    k = (1, 3, 3, 1)

    def step(v, _):
        return fir.downsample_2d(fir.upsample_2d(v, k), k), None

    looped, _ = jax.jit(lambda v: jax.lax.scan(step, v, None, 3))(xj)
    alone = xj
    for _ in range(3):
        alone = jax.jit(lambda v: step(v, None)[0])(alone)
    np.testing.assert_allclose(looped, alone, rtol=1e-6, atol=1e-6)


def test_upfirdn_rejects_an_empty_output(x):
    with pytest.raises(ValueError, match="no output"):
        fir.upfirdn_2d(jnp.asarray(x), np.ones(9), pad0=0, pad1=0)
