r"""FIR up- and downsampling (StyleGAN2's ``upfirdn``), written with ``lax`` convolutions.

Karras et al., "Analyzing and Improving the Image Quality of StyleGAN", CVPR 2020, appendix B;
used by NCSN++ (Song et al., ICLR 2021, appendix H) with the kernel ``[1, 3, 3, 1]``.

``upfirdn_2d(x, k, up, down, pad0, pad1)`` is defined per spatial axis as

1. upsample: insert ``up - 1`` zeros after every sample (length ``n * up``);
2. pad ``pad0`` zeros before and ``pad1`` after (negative values crop);
3. convolve (a true convolution, i.e. the kernel flipped) with ``k``, keeping valid outputs;
4. downsample: keep every ``down``-th sample, starting with the first.

A 1-D kernel ``k`` means the separable 2-D kernel ``outer(k, k)``; kernels are normalized to
sum to one, times ``up**2`` when upsampling so that a constant image stays constant.

All arrays are NHWC; filtering is depthwise (one filter per channel).
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

Images = Float[Array, "batch height width channels"]
Kernel = Float[Array, "kh kw in_channels out_channels"]

__all__ = [
    "conv_downsample_2d",
    "downsample_2d",
    "naive_downsample_2d",
    "naive_upsample_2d",
    "setup_kernel",
    "upfirdn_2d",
    "upsample_2d",
    "upsample_conv_2d",
]

_DIMS = ("NHWC", "HWIO", "NHWC")


def setup_kernel(k: Sequence[float] | np.ndarray) -> np.ndarray:
    """Returns the normalized 2-D FIR kernel (float32) for a 1-D (separable) or 2-D ``k``.

    Raises:
      ValueError: if ``k`` is not 1-D or square 2-D, or sums to zero.
    """
    k = np.asarray(k, dtype=np.float32)
    if k.ndim == 1:
        k = np.outer(k, k)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"fir_kernel must be 1-D or square 2-D, got shape {k.shape}.")
    total = np.sum(k)
    if total == 0:
        raise ValueError("fir_kernel must not sum to zero.")
    return k / total


def upfirdn_2d(
    x: Images, k: np.ndarray, up: int = 1, down: int = 1, pad0: int = 0, pad1: int = 0
) -> Images:
    """Upsamples by zero insertion, pads, applies the FIR filter ``k`` and subsamples.

    Args:
      x: images ``[batch, height, width, channels]``.
      k: square 2-D filter (already normalized and scaled), applied depthwise.
      up: upsampling factor.
      down: downsampling factor.
      pad0: padding before, on both spatial axes (negative crops).
      pad1: padding after, on both spatial axes (negative crops).

    Returns:
      Images of size ``(n * up + pad0 + pad1 - len(k)) // down + 1`` per spatial axis.
    """
    channels = x.shape[-1]
    # Zero insertion after every sample: lhs dilation gives (n - 1) * up + 1 samples, so the
    # up - 1 trailing zeros join the trailing padding. lax.pad accepts negative (cropping) pads.
    zero = jnp.zeros((), x.dtype)
    spatial = (pad0, pad1 + up - 1, up - 1)
    x = jax.lax.pad(x, zero, ((0, 0, 0), spatial, spatial, (0, 0, 0)))
    # A true convolution is a correlation with the flipped kernel.
    w = jnp.asarray(np.ascontiguousarray(k[::-1, ::-1]), dtype=x.dtype)
    w = jnp.tile(w[:, :, None, None], (1, 1, 1, channels))
    return jax.lax.conv_general_dilated(
        x,
        w,
        window_strides=(down, down),
        padding="VALID",
        dimension_numbers=_DIMS,
        feature_group_count=channels,
    )


def upsample_2d(x: Images, k: Sequence[float], factor: int = 2) -> Images:
    """FIR upsampling by ``factor``: output ``[batch, factor*H, factor*W, channels]``."""
    kernel = setup_kernel(k) * factor**2
    p = kernel.shape[0] - factor
    return upfirdn_2d(x, kernel, up=factor, pad0=(p + 1) // 2 + factor - 1, pad1=p // 2)


def downsample_2d(x: Images, k: Sequence[float], factor: int = 2) -> Images:
    """FIR downsampling by ``factor``: output ``[batch, H/factor, W/factor, channels]``."""
    kernel = setup_kernel(k)
    p = kernel.shape[0] - factor
    return upfirdn_2d(x, kernel, down=factor, pad0=(p + 1) // 2, pad1=p // 2)


def upsample_conv_2d(x: Images, w: Kernel, k: Sequence[float], factor: int = 2) -> Images:
    """Fused ``upsample_2d`` then a ``SAME`` convolution with ``w`` (StyleGAN2's layout).

    The stride-``factor`` transposed convolution with ``w`` (zero insertion, full padding,
    correlation with ``w``) is followed by the FIR filter, whose padding trims the result to
    ``[batch, factor*H, factor*W, out_channels]``.
    """
    conv_size = w.shape[0]
    kernel = setup_kernel(k) * factor**2
    p = (kernel.shape[0] - factor) - (conv_size - 1)
    full = conv_size - 1
    x = jax.lax.conv_general_dilated(
        x,
        w,
        window_strides=(1, 1),
        padding=((full, full), (full, full)),
        lhs_dilation=(factor, factor),
        dimension_numbers=_DIMS,
    )
    return upfirdn_2d(x, kernel, pad0=(p + 1) // 2 + factor - 1, pad1=p // 2 + 1)


def conv_downsample_2d(x: Images, w: Kernel, k: Sequence[float], factor: int = 2) -> Images:
    """Fused FIR ``downsample_2d`` then a convolution with ``w``, as one strided convolution.

    Output ``[batch, H/factor, W/factor, out_channels]``.
    """
    conv_size = w.shape[0]
    kernel = setup_kernel(k)
    p = (kernel.shape[0] - factor) + (conv_size - 1)
    x = upfirdn_2d(x, kernel, pad0=(p + 1) // 2, pad1=p // 2)
    return jax.lax.conv_general_dilated(
        x, w, window_strides=(factor, factor), padding="VALID", dimension_numbers=_DIMS
    )


def naive_upsample_2d(x: Images, factor: int = 2) -> Images:
    """Nearest-neighbour upsampling by ``factor`` (each pixel repeated)."""
    return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


def naive_downsample_2d(x: Images, factor: int = 2) -> Images:
    """Average pooling over non-overlapping ``factor x factor`` windows."""
    b, h, w, c = x.shape
    x = jnp.reshape(x, (b, h // factor, factor, w // factor, factor, c))
    return jnp.mean(x, axis=(2, 4))
