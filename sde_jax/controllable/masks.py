"""Inpainting masks for images: 1 where a pixel is known, 0 where it is to be sampled."""

import numpy as np

from sde_jax import validation

MASKS = ("half", "center", "random")
"""Mask kinds of :func:`make_mask`."""


def make_mask(kind: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A float32 mask of ``shape`` ``(batch, H, W, C)``, the same for every channel.

    Args:
      kind: 'half' (left half known, right half sampled), 'center' (a central square of half
        the side sampled) or 'random' (each pixel known with probability 1/2, per example).
      shape: ``(batch, H, W, C)``.
      seed: the seed of 'random'.

    Raises:
      ValueError: for an unknown kind or a shape that is not ``(batch, H, W, C)``.
    """
    validation.choice("mask", kind, MASKS)
    if len(shape) != 4:
        raise ValueError(f"shape must be (batch, H, W, C), got {shape!r}.")
    batch, height, width, _ = shape
    pixels = np.ones((batch, height, width), np.float32)
    if kind == "half":
        pixels[:, :, width // 2 :] = 0.0
    elif kind == "center":
        top, left = height // 4, width // 4
        pixels[:, top : top + height - 2 * top, left : left + width - 2 * left] = 0.0
    else:
        pixels = (np.random.default_rng(seed).random((batch, height, width)) < 0.5).astype(
            np.float32
        )
    return np.broadcast_to(pixels[..., None], shape).astype(np.float32)
