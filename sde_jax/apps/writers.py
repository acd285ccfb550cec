"""The one writer of sample files: an ``.npz`` of uint8 images and the PNG grids beside it.

Every command that writes images (``sample``, ``sample --class``, ``inpaint``, ``colorize``,
``interpolate``) converts its model outputs with :func:`sde_jax.images.to_uint8` and hands the
pixels to :func:`write_samples`, which writes the ``.npz`` atomically (a temporary file and a
rename: an interrupted write leaves the previous file) and each :class:`Grid` as
``<stem><suffix>.png``. Only process 0 writes.
"""

import dataclasses
import io
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jaxtyping import UInt8

from sde_jax import images
from sde_jax.evaluation import store

__all__ = ["Grid", "npz_path", "png_path", "write_samples"]


@dataclasses.dataclass(frozen=True)
class Grid:
    """A PNG grid of uint8 tiles, written as ``<stem><suffix>.png`` beside the ``.npz``.

    Attributes:
      tiles: uint8 images ``[n, h, w, c]``, in reading order.
      columns: images per row (default ``ceil(sqrt(n))``).
      suffix: added to the stem of the ``.npz`` path: ``''`` gives ``<stem>.png``.
    """

    tiles: UInt8[np.ndarray, "n h w c"]
    columns: int | None = None
    suffix: str = ""


def npz_path(path: str) -> str:
    """The file ``numpy.savez(path)`` writes: ``path``, with ``.npz`` added if it lacks it."""
    return path if path.endswith(".npz") else path + ".npz"


def png_path(path: str, suffix: str = "") -> str:
    """The PNG beside ``path``: its extension replaced by ``suffix + '.png'``."""
    return os.path.splitext(path)[0] + suffix + ".png"


def write_samples(path: str, arrays: Mapping[str, Any], grids: Sequence[Grid] = ()) -> list[str]:
    """Writes ``arrays`` to the ``.npz`` file ``path`` and each of ``grids`` beside it.

    Args:
      path: the ``.npz`` path (local or bucket URL; ``.npz`` is added if missing).
      arrays: the file's arrays by key (uint8 images, labels, ``step``, ``nfe``, ...).
      grids: the PNG grids to write beside it (:func:`sde_jax.images.uint8_grid`).

    Returns:
      The paths written, the ``.npz`` first; empty on processes other than 0.

    Raises:
      TypeError: if a grid's tiles are not uint8.
    """
    if jax.process_index() != 0:
        return []
    written = [npz_path(path)]
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # keys such as "path" (interpolate's) are array names here
    store.atomic_write(written[0], buffer.getvalue())
    for grid in grids:
        written.append(png_path(path, grid.suffix))
        images.save_png(written[-1], images.uint8_grid(grid.tiles, grid.columns))
    return written
