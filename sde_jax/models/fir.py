r"""FIR up- and downsampling (StyleGAN2's ``upfirdn``) as sums of shifted slices.

Karras et al., "Analyzing and Improving the Image Quality of StyleGAN", CVPR 2020, appendix B;
used by NCSN++ (Song et al., ICLR 2021, appendix H) with the kernel ``[1, 3, 3, 1]``.

``upfirdn_2d(x, k, up, down, pad0, pad1)`` is defined per spatial axis as

1. upsample: insert ``up - 1`` zeros after every sample (length ``n * up``);
2. pad ``pad0`` zeros before and ``pad1`` after (negative values crop);
3. convolve (a true convolution, i.e. the kernel flipped) with ``k``, keeping valid outputs;
4. downsample: keep every ``down``-th sample, starting with the first.

A 1-D kernel ``k`` means the separable 2-D kernel ``outer(k, k)``; kernels are normalized to
sum to one, times ``up**2`` when upsampling so that a constant image stays constant.

How it is computed. The filter is a few taps with fixed weights, so each output is a weighted
sum of a few strided slices of the input: one pass per spatial axis for a separable kernel,
and for upsampling one sum per output phase (polyphase: the inserted zeros are never
multiplied), the phases then interleaved by a reshape. Everything is elementwise, so XLA fuses
a whole resampling into one loop nest. A depthwise convolution (``feature_group_count`` equal
to the channels) computes the same thing, but XLA:CPU runs it 10-100x slower, and slower
still inside ``lax.scan``/``lax.while_loop`` bodies, where samplers and the likelihood solve
evaluate the network (``benchmarks/models_in_loops.py`` measures both formulations). Sums are
accumulated in float32 (or the input's wider type) and cast back.

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
_SPATIAL = (1, 2)


def _check_kernel(k: Sequence[float] | np.ndarray) -> np.ndarray:
    k = np.asarray(k, dtype=np.float64)
    if k.ndim not in (1, 2) or (k.ndim == 2 and k.shape[0] != k.shape[1]) or k.size == 0:
        raise ValueError(f"fir_kernel must be 1-D or square 2-D, got shape {k.shape}.")
    if np.sum(k) == 0:
        raise ValueError("fir_kernel must not sum to zero.")
    return k


def setup_kernel(k: Sequence[float] | np.ndarray) -> np.ndarray:
    """Returns the normalized 2-D FIR kernel (float32) for a 1-D (separable) or 2-D ``k``.

    Raises:
      ValueError: if ``k`` is not 1-D or square 2-D, or sums to zero.
    """
    k = _check_kernel(k)
    if k.ndim == 1:
        k = np.outer(k, k)
    return (k / np.sum(k)).astype(np.float32)


def _separable_taps(k: Sequence[float], gain: float) -> np.ndarray:
    """The 1-D factor of ``setup_kernel(k) * gain`` for a 1-D ``k``: ``k / sum(k) * sqrt(gain)``."""
    k = _check_kernel(k)
    if k.ndim != 1:
        raise ValueError(f"fir_kernel must be 1-D here, got shape {k.shape}.")
    return k / np.sum(k) * np.sqrt(gain)


def _pad_axis(x: Array, axis: int, before: int, after: int) -> Array:
    """Zero-pads (negative values crop) one axis of ``x``."""
    config = [(0, 0, 0)] * x.ndim
    config[axis] = (before, after, 0)
    return jax.lax.pad(x, jnp.zeros((), x.dtype), config)


def _weighted_slices(
    x: Array, taps: Sequence[tuple[float, int]], size: int, stride: int, axis: int
) -> Array:
    """``sum_j w_j * x[start_j : start_j + stride * size : stride]`` along ``axis``."""
    total = None
    for weight, start in taps:
        part = jax.lax.slice_in_dim(x, start, start + stride * (size - 1) + 1, stride, axis)
        part = part * jnp.asarray(weight, x.dtype)
        total = part if total is None else total + part
    if total is None:  # every tap is zero
        shape = list(x.shape)
        shape[axis] = size
        total = jnp.zeros(shape, x.dtype)
    return total


def _interleave(parts: Sequence[Array], axis: int) -> Array:
    """``out[..., len(parts) * i + r, ...] = parts[r][..., i, ...]`` along ``axis``."""
    out = jnp.stack(parts, axis=axis + 1)
    return jnp.reshape(out, (*out.shape[:axis], -1, *out.shape[axis + 2 :]))


def _upfirdn_1d(x: Array, k: np.ndarray, up: int, down: int, pad0: int, pad1: int, axis: int):
    """``upfirdn`` along one axis with the 1-D kernel ``k`` (see the module docstring)."""
    n, taps = x.shape[axis], len(k)
    n_out = (n * up + pad0 + pad1 - taps) // down + 1
    if n_out <= 0:
        raise ValueError(
            f"upfirdn leaves no output: length {n}, up={up}, down={down}, pad0={pad0}, "
            f"pad1={pad1}, kernel length {taps}."
        )
    flipped = k[::-1]  # a true convolution is a correlation with the flipped kernel
    if up == 1:
        x = _pad_axis(x, axis, pad0, pad1)
        return _weighted_slices(x, [(w, a) for a, w in enumerate(flipped) if w], n_out, down, axis)
    if down != 1:
        # Not used by NCSN++: insert the zeros explicitly, then filter and subsample.
        x = _interleave([x, *[jnp.zeros_like(x)] * (up - 1)], axis)
        return _upfirdn_1d(x, k, 1, down, pad0, pad1, axis)
    # Polyphase: output o = up * i + r takes the taps a with (r + a - pad0) % up == 0, each
    # reading input sample i + (r + a - pad0) // up.
    per_phase = -(-n_out // up)
    phases = [
        [(w, (r + a - pad0) // up) for a, w in enumerate(flipped) if w and (r + a - pad0) % up == 0]
        for r in range(up)
    ]
    offsets = [d for phase in phases for _, d in phase] or [0]
    lo, hi = max(0, -min(offsets)), max(0, per_phase - 1 + max(offsets) - (n - 1))
    x = _pad_axis(x, axis, lo, hi)
    outs = [_weighted_slices(x, [(w, d + lo) for w, d in p], per_phase, 1, axis) for p in phases]
    return jax.lax.slice_in_dim(_interleave(outs, axis), 0, n_out, axis=axis)


def _separable_upfirdn(x: Images, k1: np.ndarray, up: int, down: int, pad0: int, pad1: int):
    for axis in _SPATIAL:
        x = _upfirdn_1d(x, k1, up, down, pad0, pad1, axis)
    return x


def upfirdn_2d(
    x: Images,
    k: Sequence[float] | np.ndarray,
    up: int = 1,
    down: int = 1,
    pad0: int = 0,
    pad1: int = 0,
) -> Images:
    """Upsamples by zero insertion, pads, applies the FIR filter ``k`` and subsamples.

    Args:
      x: images ``[batch, height, width, channels]``.
      k: the filter as given (already normalized and scaled), applied depthwise: a square 2-D
        array, or a 1-D array meaning the separable ``outer(k, k)``. A 2-D filter runs as the
        sum of the separable terms of its singular value decomposition (one for the
        separable kernels NCSN++ uses).
      up: upsampling factor.
      down: downsampling factor.
      pad0: padding before, on both spatial axes (negative crops).
      pad1: padding after, on both spatial axes (negative crops).

    Returns:
      Images of size ``(n * up + pad0 + pad1 - len(k)) // down + 1`` per spatial axis, of
      ``x``'s dtype.

    Raises:
      ValueError: if ``k`` is not 1-D or square 2-D, or the output would be empty.
    """
    k = np.asarray(k, dtype=np.float64)
    if k.ndim not in (1, 2) or (k.ndim == 2 and k.shape[0] != k.shape[1]) or k.size == 0:
        raise ValueError(f"k must be 1-D or square 2-D, got shape {k.shape}.")
    dtype = x.dtype
    x = x.astype(jnp.promote_types(dtype, jnp.float32))
    if k.ndim == 1:
        return _separable_upfirdn(x, k, up, down, pad0, pad1).astype(dtype)
    # k = sum_r s_r u_r v_r^T: filter along H with u_r and along W with v_r, term by term.
    u, s, vt = np.linalg.svd(k)
    keep = s > s[0] * 1e-12 * len(s)
    total = None
    for s_r, u_r, v_r in zip(s[keep], u.T[keep], vt[keep], strict=True):
        term = _upfirdn_1d(x, u_r * s_r, up, down, pad0, pad1, axis=1)
        term = _upfirdn_1d(term, v_r, up, down, pad0, pad1, axis=2)
        total = term if total is None else total + term
    return total.astype(dtype)


def upsample_2d(x: Images, k: Sequence[float], factor: int = 2) -> Images:
    """FIR upsampling by ``factor``: output ``[batch, factor*H, factor*W, channels]``."""
    taps = len(k) if np.ndim(k) == 1 else np.shape(k)[0]
    p = taps - factor
    pads = {"up": factor, "pad0": (p + 1) // 2 + factor - 1, "pad1": p // 2}
    return upfirdn_2d(x, _scaled_kernel(k, factor**2), **pads)


def downsample_2d(x: Images, k: Sequence[float], factor: int = 2) -> Images:
    """FIR downsampling by ``factor``: output ``[batch, H/factor, W/factor, channels]``."""
    taps = len(k) if np.ndim(k) == 1 else np.shape(k)[0]
    p = taps - factor
    return upfirdn_2d(x, _scaled_kernel(k, 1), down=factor, pad0=(p + 1) // 2, pad1=p // 2)


def _scaled_kernel(k: Sequence[float] | np.ndarray, gain: float) -> np.ndarray:
    """``setup_kernel(k) * gain`` in float64: its 1-D factor when ``k`` is 1-D."""
    if np.ndim(k) == 1:
        return _separable_taps(k, gain)
    k = _check_kernel(k)
    return k / np.sum(k) * gain


def upsample_conv_2d(x: Images, w: Kernel, k: Sequence[float], factor: int = 2) -> Images:
    """Fused ``upsample_2d`` then a ``SAME`` convolution with ``w`` (StyleGAN2's layout).

    The stride-``factor`` transposed convolution with ``w`` (zero insertion, full padding,
    correlation with ``w``) is followed by the FIR filter, whose padding trims the result to
    ``[batch, factor*H, factor*W, out_channels]``.
    """
    conv_size = w.shape[0]
    taps = len(k) if np.ndim(k) == 1 else np.shape(k)[0]
    p = (taps - factor) - (conv_size - 1)
    full = conv_size - 1
    x = jax.lax.conv_general_dilated(
        x,
        w,
        window_strides=(1, 1),
        padding=((full, full), (full, full)),
        lhs_dilation=(factor, factor),
        dimension_numbers=_DIMS,
    )
    pads = {"pad0": (p + 1) // 2 + factor - 1, "pad1": p // 2 + 1}
    return upfirdn_2d(x, _scaled_kernel(k, factor**2), **pads)


def conv_downsample_2d(x: Images, w: Kernel, k: Sequence[float], factor: int = 2) -> Images:
    """Fused FIR ``downsample_2d`` then a convolution with ``w``, as one strided convolution.

    Output ``[batch, H/factor, W/factor, out_channels]``.
    """
    conv_size = w.shape[0]
    taps = len(k) if np.ndim(k) == 1 else np.shape(k)[0]
    p = (taps - factor) + (conv_size - 1)
    x = upfirdn_2d(x, _scaled_kernel(k, 1), pad0=(p + 1) // 2, pad1=p // 2)
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
