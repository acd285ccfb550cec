"""FIR resampling against its definition (upsample, pad, filter, downsample) in numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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
