"""The FIR formulation sde_jax used before the slice-sum one: a depthwise convolution.

``lax.pad`` with interior padding for the zero insertion, then ``conv_general_dilated`` with
``feature_group_count`` equal to the channels. Same functions and results as
``sde_jax.models.fir`` (to float32 rounding); kept so that ``benchmarks/models_in_loops.py``
can time both formulations side by side and ``tests/models/test_models_fir.py`` can compare them.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sde_jax.models.fir import setup_kernel

_DIMS = ("NHWC", "HWIO", "NHWC")


def upfirdn_2d(x, k: np.ndarray, up: int = 1, down: int = 1, pad0: int = 0, pad1: int = 0):
    """``upfirdn`` with a square 2-D kernel ``k`` as one depthwise convolution."""
    channels = x.shape[-1]
    # Zero insertion after every sample: lhs dilation gives (n - 1) * up + 1 samples, so the
    # up - 1 trailing zeros join the trailing padding.
    spatial = (pad0, pad1 + up - 1, up - 1)
    x = jax.lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), spatial, spatial, (0, 0, 0)))
    w = jnp.asarray(np.ascontiguousarray(k[::-1, ::-1]), dtype=x.dtype)
    w = jnp.tile(w[:, :, None, None], (1, 1, 1, channels))
    return jax.lax.conv_general_dilated(
        x, w, (down, down), "VALID", dimension_numbers=_DIMS, feature_group_count=channels
    )


def upsample_2d(x, k: Sequence[float], factor: int = 2):
    kernel = setup_kernel(k) * factor**2
    p = kernel.shape[0] - factor
    return upfirdn_2d(x, kernel, up=factor, pad0=(p + 1) // 2 + factor - 1, pad1=p // 2)


def downsample_2d(x, k: Sequence[float], factor: int = 2):
    kernel = setup_kernel(k)
    p = kernel.shape[0] - factor
    return upfirdn_2d(x, kernel, down=factor, pad0=(p + 1) // 2, pad1=p // 2)


def upsample_conv_2d(x, w, k: Sequence[float], factor: int = 2):
    conv_size = w.shape[0]
    kernel = setup_kernel(k) * factor**2
    p = (kernel.shape[0] - factor) - (conv_size - 1)
    full = conv_size - 1
    x = jax.lax.conv_general_dilated(
        x, w, (1, 1), ((full, full), (full, full)), lhs_dilation=(factor, factor),
        dimension_numbers=_DIMS,
    )  # fmt: skip
    return upfirdn_2d(x, kernel, pad0=(p + 1) // 2 + factor - 1, pad1=p // 2 + 1)


def conv_downsample_2d(x, w, k: Sequence[float], factor: int = 2):
    conv_size = w.shape[0]
    kernel = setup_kernel(k)
    p = (kernel.shape[0] - factor) + (conv_size - 1)
    x = upfirdn_2d(x, kernel, pad0=(p + 1) // 2, pad1=p // 2)
    return jax.lax.conv_general_dilated(x, w, (factor, factor), "VALID", dimension_numbers=_DIMS)
