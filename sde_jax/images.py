"""Image grids and PNG files, for sample snapshots people look at rather than read.

Every PNG grid sde_jax writes (training snapshots, ``sample``, ``evaluate``, class grids, the
controllable tasks) and every TensorBoard sample image comes from :func:`image_grid`, which
enlarges small grids to a size a person can see: the whole grid, separators included, is
upscaled by one integer factor with nearest neighbour (each pixel becomes an ``f x f`` block),
so the picture is the raw grid, only bigger, and the black lines keep their proportion to the
tiles. The ``.npz`` sample files keep the raw resolution.

Model outputs become pixels through one conversion, :func:`to_uint8` (``round(255 clip(x, 0,
1))``, on numpy or on device), and uint8 tiles become a grid through :func:`uint8_grid`.
Non-finite samples are never written: casting NaN to uint8 gives black pixels silently, so
every writer calls :func:`check_finite` first, and :func:`image_grid` refuses them too.
"""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Float, UInt8

from sde_jax import validation

MIN_TILE = 32
MIN_WIDTH = 512


class NonFiniteSamplesError(ValueError):
    """Samples to be written hold NaN or infinite values."""


def sampler_label(method: str, predictor: str | None = None, corrector: str | None = None) -> str:
    """A short name of a sampler for messages: ``pc (ancestral_sampling + none)``."""
    if method == "pc":
        return f"pc ({predictor} + {corrector})"
    return str(method)


def check_finite(samples: np.ndarray, what: str, *, sampler: str, step: int | None) -> None:
    """Raises NonFiniteSamplesError if ``samples`` holds a non-finite value.

    Args:
      samples: the float samples about to be written.
      what: what would be written (a path, "the sample grid").
      sampler: the sampler's name (:func:`sampler_label`).
      step: the checkpoint or training step the samples come from.

    Raises:
      NonFiniteSamplesError: naming the count of non-finite values, the sampler and the step.
    """
    samples = np.asarray(samples)
    bad = int(np.size(samples) - np.count_nonzero(np.isfinite(samples)))
    if bad:
        raise NonFiniteSamplesError(
            f"refusing to write {what}: {bad} of {samples.size} sample values are non-finite "
            f"(NaN or inf), from sampler {sampler} at step {step}. The model or the sampler "
            "diverged; check the checkpoint's loss, and sampling.num_steps for discrete "
            "samplers."
        )


def to_uint8(x: Float[np.ndarray, "..."], centered: bool = False) -> UInt8[np.ndarray, "..."]:
    r"""Pixels of images in model space: :math:`\operatorname{round}(255\,\min(\max(u, 0), 1))`.

    Here :math:`u = (x + 1) / 2` for centered data (``[-1, 1]``), else :math:`u = x`.
    The one conversion of samples to pixels: numpy arrays give numpy uint8 (float inputs keep
    their precision, others are taken as float32), jax arrays (traced ones included) give jax
    uint8, so the jitted chunk sampler of the evaluation and the file writers round alike.
    Values exactly half-way between two levels round to even (``numpy.round``).

    Args:
      x: the images, any shape; values outside the data range are clipped.
      centered: whether ``x`` is scaled to ``[-1, 1]`` (``data.centered``) rather than
        ``[0, 1]``.

    Returns:
      uint8 values in ``[0, 255]``, shaped as ``x``.
    """
    xp = jnp if isinstance(x, jax.Array) else np
    if xp is np:
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.floating):
            x = x.astype(np.float32)
    unit = (x + 1) / 2 if centered else x
    return xp.round(xp.clip(unit, 0.0, 1.0) * 255).astype(xp.uint8)


def viewing_factor(
    tile_size: tuple[int, int], width: int, min_tile: int = MIN_TILE, min_width: int = MIN_WIDTH
) -> int:
    r"""The smallest integer upscale factor that makes a grid comfortable to look at.

    .. math:: f = \max\left(1, \lceil m_t / \min(h, w) \rceil, \lceil m_w / W \rceil\right)

    so every tile (``h x w``) is at least ``min_tile`` (:math:`m_t`) pixels per side and the
    grid at least ``min_width`` (:math:`m_w`) pixels wide; grids that already are get ``f = 1``.

    Args:
      tile_size: ``(h, w)``, the pixel size of one image of the grid.
      width: the pixel width ``W`` of the whole grid, separators included.
      min_tile: the smallest side a tile may have after upscaling.
      min_width: the smallest width the grid may have after upscaling.

    Returns:
      The factor ``f >= 1``.

    Raises:
      ValueError: if a size is not a positive integer.
    """
    if len(tile_size) != 2:
        raise ValueError(f"tile_size must be (height, width), got {tile_size!r}.")
    for name, value in (("tile_size[0]", tile_size[0]), ("tile_size[1]", tile_size[1])):
        validation.integer(name, value, minimum=1)
    validation.integer("width", width, minimum=1)
    validation.integer("min_tile", min_tile, minimum=1)
    validation.integer("min_width", min_width, minimum=1)
    return max(1, math.ceil(min_tile / min(tile_size)), math.ceil(min_width / width))


def upscale_nearest(image: UInt8[np.ndarray, "h w c"], factor: int) -> UInt8[np.ndarray, "H W c"]:
    """Nearest-neighbour upscaling of an ``[h, w, c]`` image: each pixel becomes a block.

    Args:
      image: the image, any dtype (kept).
      factor: the integer scale ``f``; the result is ``[f h, f w, c]``.

    Returns:
      The image with ``result[i, j] == image[i // f, j // f]``.

    Raises:
      ValueError: if ``image`` is not 3-dimensional or ``factor`` is not a positive integer.
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"image must have shape [h, w, c], got {image.shape}.")
    validation.integer("factor", factor, minimum=1)
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def image_grid(
    images: Float[np.ndarray, "n h w c"],
    columns: int | None = None,
    padding: int = 1,
    min_tile: int = MIN_TILE,
    min_width: int = MIN_WIDTH,
) -> UInt8[np.ndarray, "H W c"]:
    """Tiles ``[n, h, w, c]`` images with values in [0, 1] into one uint8 image to look at.

    The raw grid (``padding`` black pixels around and between the tiles) is upscaled by
    :func:`viewing_factor` with :func:`upscale_nearest`, so each tile is at least ``min_tile``
    pixels per side and the grid at least ``min_width`` wide: 64 16x16 digits (137 pixels
    raw) become a 548-pixel grid of 64x64 tiles, 256 CIFAR-10 images (529 pixels) stay as they
    are. ``min_tile=1, min_width=1`` gives the raw grid.

    Args:
      images: the images; values outside [0, 1] are clipped.
      columns: images per row; default ``ceil(sqrt(n))``.
      padding: pixels of black between images, before upscaling.
      min_tile: the smallest tile side of the result.
      min_width: the smallest width of the result.

    Returns:
      The grid, uint8 with the channels ``c`` of ``images``.

    Raises:
      ValueError: for images not of shape [n, h, w, c] with n >= 1, or a size argument that is
        not an integer in range.
      NonFiniteSamplesError: for NaN or infinite values (never drawn as black).
    """
    images = np.asarray(images, np.float32)
    check_finite(images, "an image grid", sampler="unknown", step=None)
    images = np.clip(images, 0.0, 1.0)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must have shape [n, h, w, c] with n >= 1, got {images.shape}.")
    n, h, w, c = images.shape
    columns = math.ceil(math.sqrt(n)) if columns is None else columns
    validation.integer("columns", columns, minimum=1)
    validation.integer("padding", padding, minimum=0)
    rows = math.ceil(n / columns)
    grid = np.zeros((rows * (h + padding) + padding, columns * (w + padding) + padding, c))
    for i, image in enumerate(images):
        top, left = (
            padding + (i // columns) * (h + padding),
            padding + (i % columns) * (w + padding),
        )
        grid[top : top + h, left : left + w] = image
    grid = to_uint8(grid)
    return upscale_nearest(grid, viewing_factor((h, w), grid.shape[1], min_tile, min_width))


def uint8_grid(
    tiles: UInt8[np.ndarray, "n h w c"], columns: int | None = None
) -> UInt8[np.ndarray, "H W c"]:
    """The viewing grid (:func:`image_grid`) of uint8 images, e.g. samples read from a file.

    Args:
      tiles: the images, uint8 ``[n, h, w, c]``.
      columns: images per row; default ``ceil(sqrt(n))``.

    Returns:
      The grid, uint8; every tile keeps its pixel values exactly.

    Raises:
      TypeError: if ``tiles`` is not uint8.
    """
    tiles = np.asarray(tiles)
    if tiles.dtype != np.uint8:
        raise TypeError(f"tiles must be uint8 images, got dtype {tiles.dtype}.")
    return image_grid(tiles.astype(np.float32) / 255.0, columns=columns)


def save_png(path: str, image: UInt8[np.ndarray, "h w c"]) -> None:
    """Writes a uint8 ``[H, W, C]`` image (C = 1 or 3) to ``path`` (local or bucket URL)."""
    import tensorflow as tf  # for gfile's bucket paths; the library imports no TF up front

    directory = os.path.dirname(path)
    if directory:
        tf.io.gfile.makedirs(directory)
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(tf.io.encode_png(image).numpy())
