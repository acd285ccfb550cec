"""Image grids and PNG files, for sample snapshots people look at rather than read."""

import math
import os

import numpy as np
import tensorflow as tf


def image_grid(images: np.ndarray, columns: int | None = None, padding: int = 1) -> np.ndarray:
    """Tiles ``[n, H, W, C]`` images with values in [0, 1] into one uint8 ``[H', W', C]`` image.

    Args:
      images: the images; values outside [0, 1] are clipped.
      columns: images per row; default ``ceil(sqrt(n))``.
      padding: pixels of black between images.
    """
    images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
    if images.ndim != 4:
        raise ValueError(f"images must have shape [n, H, W, C], got {images.shape}.")
    n, h, w, c = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = np.zeros((rows * (h + padding) + padding, columns * (w + padding) + padding, c))
    for i, image in enumerate(images):
        top, left = (
            padding + (i // columns) * (h + padding),
            padding + (i % columns) * (w + padding),
        )
        grid[top : top + h, left : left + w] = image
    return np.round(grid * 255).astype(np.uint8)


def save_png(path: str, image: np.ndarray) -> None:
    """Writes a uint8 ``[H, W, C]`` image (C = 1 or 3) to ``path`` (local or bucket URL)."""
    directory = os.path.dirname(path)
    if directory:
        tf.io.gfile.makedirs(directory)
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(tf.io.encode_png(image).numpy())
