r"""Colorization: inpainting in a fixed orthogonal colour basis whose first axis is gray.

The RGB channels of each pixel are rotated into the orthonormal basis (the rows of
:data:`COLOR_BASIS`)

.. math:: q_1 = \tfrac{1}{\sqrt3}(1, 1, 1), \quad q_2 = \tfrac{1}{\sqrt6}(2, -1, -1), \quad
          q_3 = \tfrac{1}{\sqrt2}(0, 1, -1),

so :math:`y = Q x` per pixel: :math:`y_1 = (r + g + b)/\sqrt3` is the gray level (up to the
factor :math:`\sqrt3`) and :math:`y_2, y_3` carry the colour. A gray image of level v becomes
:math:`(\sqrt3 v, 0, 0)`. Colorizing is inpainting of :math:`y_2, y_3` given :math:`y_1`
(paper appendix I). Because Q is orthogonal and every SDE here is isotropic, the rotated data
diffuse under the same SDE and their score is the rotated score, :math:`Q \nabla_x \log p_t`.
The gray level is the plain mean of the three channels (not a luma weighting); the output's
channel mean equals it up to float rounding.
"""

import math

import jax.numpy as jnp
import numpy as np

from sde_jax.array_types import Array, Data, Key, ScoreFn
from sde_jax.controllable.inpainting import check_fixed_grid, check_known, conditioned_sample
from sde_jax.sampling import FixedGridSampler, SampleOutput

COLOR_BASIS = np.array(
    [
        [1 / math.sqrt(3), 1 / math.sqrt(3), 1 / math.sqrt(3)],
        [2 / math.sqrt(6), -1 / math.sqrt(6), -1 / math.sqrt(6)],
        [0.0, 1 / math.sqrt(2), -1 / math.sqrt(2)],
    ]
)
"""Rows: the orthonormal colour basis; the first row is the gray axis."""


def decouple(x: Data) -> Data:
    """RGB ``[..., 3]`` to the colour basis: channel 0 gray, channels 1 and 2 colour."""
    return jnp.einsum("...i,ji->...j", x, jnp.asarray(COLOR_BASIS, x.dtype))


def couple(y: Data) -> Data:
    """The inverse of :func:`decouple` (the transpose, the basis being orthonormal)."""
    return jnp.einsum("...j,ji->...i", y, jnp.asarray(COLOR_BASIS, y.dtype))


def decoupled_score(score_fn: ScoreFn) -> ScoreFn:
    """The score of the rotated data: ``decouple(score_fn(couple(y), t))``."""

    def score(y: Data, t: Array) -> Data:
        return decouple(score_fn(couple(y), t))

    return score


def gray_channel(gray: Data) -> Data:
    """Gray images ``[B, H, W, 1]`` (or three equal channels) to their first basis channel."""
    gray = jnp.asarray(gray)
    level = gray if gray.shape[-1] == 1 else jnp.mean(gray, axis=-1, keepdims=True)
    return math.sqrt(3.0) * level


def get_colorizer(sampler: FixedGridSampler):
    """A colorizer that runs ``sampler``'s stepper as inpainting in the colour basis.

    The original's ``get_pc_colorizer``, for any fixed-grid sampler (its SDE, stepper, grid,
    final step, shape and dtype). ``experiment.build.colorizer_from_config`` builds one from a
    config's sampling section.

    Args:
      sampler: a ``sampling.FixedGridSampler`` of colour images, ``shape=(batch, H, W, 3)``.

    Returns:
      A pure ``colorizer(key, score_fn, gray) -> SampleOutput(x, nfe, success)``: ``gray`` is
      ``[batch, H, W, 1]`` or ``[batch, H, W, 3]`` with equal channels, in the model's data
      space; ``score_fn`` is the RGB model's; ``x`` has ``sampler.shape`` and the mean of its
      channels equals ``gray``.

    Raises:
      ValueError: if the sampler's shape does not end in 3 channels, for a sampler other
        than a fixed-grid one, or (at call time) for a gray batch of the wrong shape.
    """
    check_fixed_grid(sampler, "colorization")
    shape, dtype = sampler.shape, sampler.dtype
    if len(shape) < 2 or shape[-1] != 3:
        raise ValueError(f"shape must be (batch, ..., 3) for colour images, got {shape!r}.")
    mask = jnp.asarray([1.0, 0.0, 0.0], dtype)

    def colorizer(key: Key, score_fn: ScoreFn, gray: Data) -> SampleOutput:
        gray_shape = tuple(jnp.shape(gray))
        if gray_shape not in (shape, (*shape[:-1], 1)):
            raise ValueError(
                f"gray must have shape {(*shape[:-1], 1)} or {shape}, got {gray_shape}."
            )
        data = jnp.broadcast_to(gray_channel(gray).astype(dtype), shape) * mask
        check_known("gray", data, mask, shape)
        out = conditioned_sample(sampler, key, decoupled_score(score_fn), data, mask)
        return out._replace(x=couple(out.x))

    return colorizer
