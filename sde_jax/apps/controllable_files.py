"""Controllable generation with a trained checkpoint: images in, PNG grids and .npz out.

Each function takes the experiment config and its working directory, restores the EMA
parameters of a checkpoint (the newest by default), reads images from a split of the config's
data set or from a folder of image files, runs the library on them and writes ``output``
(.npz, uint8 images in [0, 255]) and a PNG grid beside it (process 0 only). These back the
``sde-jax inpaint|colorize|interpolate`` commands.
"""

from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from sde_jax import data, evaluation, images, validation
from sde_jax.apps import writers
from sde_jax.controllable.masks import make_mask
from sde_jax.experiment import build
from sde_jax.experiment.bundle import Experiment
from sde_jax.experiment.rng import stream_key


def load_images(
    data_config: Any, num_images: int, split: str | None = None, image_dir: str | None = None
) -> np.ndarray:
    """The first ``num_images`` images of a split (or of ``image_dir``), in model space.

    Args:
      data_config: the config's ``data`` section (size, channels, scaling).
      num_images: how many images to read.
      split: the split (default ``data.eval_split``; folders have one split).
      image_dir: read every PNG/JPEG under this folder instead of the data set.

    Raises:
      ValueError: if ``num_images < 1``, from the data pipeline's validation, or if the
        source holds fewer than ``num_images`` images.
    """
    num_images = validation.integer("num_images", num_images, minimum=1)
    config = ml_collections.ConfigDict(dict(data_config))
    if image_dir is not None:
        config.update(dataset="folder", data_dir=image_dir)
    batch = next(data.eval_iterator(config, num_images, split=split, shard_index=0, num_shards=1))
    found = batch["image"][batch["mask"]]
    if len(found) < num_images:
        raise ValueError(f"num_images={num_images} but the source holds only {len(found)}.")
    return found


def _to_uint8(
    config: Any, x: Any, output: str | None = None, step: int | None = None
) -> np.ndarray:
    """Pixels of data-scaled ``x``; model outputs (``output`` given) are checked finite first."""
    if output is not None:
        s = config.sampling
        label = images.sampler_label(s.method, s.predictor, s.corrector)
        images.check_finite(np.asarray(x), output, sampler=label, step=step)
    return images.to_uint8(np.asarray(x, np.float32), config.data.centered)


def _write(output: str, grid_rows: list[np.ndarray], **arrays: Any) -> None:
    """Writes the .npz and a PNG grid with one row per entry of ``grid_rows`` (uint8)."""
    columns = grid_rows[0].shape[0]
    channels = max(row.shape[-1] for row in grid_rows)
    tiles = np.concatenate([np.broadcast_to(r, (*r.shape[:-1], channels)) for r in grid_rows])
    if writers.write_samples(output, arrays, [writers.Grid(tiles, columns=columns)]):
        logging.info("Wrote %s and its PNG grid.", output)


def _restore(config: Any, workdir: str, step: int | None):
    experiment = Experiment(config)
    params, step = evaluation.restore_ema_params(experiment, workdir, step)
    return experiment, params, step


def inpaint_to_files(
    config: Any,
    workdir: str,
    output: str,
    *,
    num_images: int = 16,
    mask: str = "half",
    method: str = "replacement",
    split: str | None = None,
    image_dir: str | None = None,
    step: int | None = None,
) -> np.ndarray:
    """Inpaints ``num_images`` images under ``mask`` ('half', 'center', 'random').

    The grid's rows: the masked input, the mask, the inpainting, the original. The .npz holds
    ``original``, ``mask``, ``inpainted`` (uint8), ``step`` and ``nfe``.

    Returns:
      The uint8 inpaintings ``[n, H, W, C]``.
    """
    experiment, params, step = _restore(config, workdir, step)
    originals = load_images(config.data, num_images, split, image_dir)
    masks = make_mask(mask, originals.shape, seed=config.seed)
    inpainter = build.inpainter_from_config(
        experiment.sde, config.sampling, originals.shape, method=method
    )
    run = jax.jit(lambda key, p, x, m: inpainter(key, experiment.score_fn(p), x, m))
    out = run(stream_key(config.seed, "inpainting"), params, originals, masks)
    result, original = _to_uint8(config, out.x, output, step), _to_uint8(config, originals)
    mask_u8 = images.to_uint8(masks)
    masked = (original * masks).astype(np.uint8)
    _write(
        output,
        [masked, mask_u8, result, original],
        original=original,
        mask=mask_u8,
        inpainted=result,
        step=step,
        nfe=int(out.nfe),
    )
    return result


def colorize_to_files(
    config: Any,
    workdir: str,
    output: str,
    *,
    num_images: int = 16,
    split: str | None = None,
    image_dir: str | None = None,
    step: int | None = None,
) -> np.ndarray:
    """Colorizes the gray versions (channel means) of ``num_images`` colour images.

    The grid's rows: the gray input, the colorization, the original. The .npz holds
    ``original``, ``gray``, ``colorized`` (uint8), ``step`` and ``nfe``.

    Raises:
      ValueError: if the model is not an RGB model.

    Returns:
      The uint8 colorizations ``[n, H, W, 3]``.
    """
    if config.data.num_channels != 3:
        raise ValueError(
            f"colorize needs an RGB model (data.num_channels=3), got {config.data.num_channels}."
        )
    experiment, params, step = _restore(config, workdir, step)
    originals = load_images(config.data, num_images, split, image_dir)
    gray = originals.mean(-1, keepdims=True)
    colorizer = build.colorizer_from_config(experiment.sde, config.sampling, originals.shape)
    run = jax.jit(lambda key, p, g: colorizer(key, experiment.score_fn(p), g))
    out = run(stream_key(config.seed, "colorization"), params, gray)
    result, gray_u8 = _to_uint8(config, out.x, output, step), _to_uint8(config, gray)
    original = _to_uint8(config, originals)
    _write(
        output,
        [gray_u8, result, original],
        original=original,
        gray=gray_u8,
        colorized=result,
        step=step,
        nfe=int(out.nfe),
    )
    return result


def interpolate_to_files(
    config: Any,
    workdir: str,
    output: str,
    *,
    num_pairs: int = 4,
    num_points: int = 8,
    split: str | None = None,
    image_dir: str | None = None,
    step: int | None = None,
) -> np.ndarray:
    """Interpolates between ``num_pairs`` pairs of images in the probability-flow latent space.

    Images ``i`` and ``num_pairs + i`` of the source form pair ``i``; their latents are
    interpolated spherically at ``num_points`` points and decoded. The solver's tolerances come
    from ``sampling.rtol``, ``atol`` and ``max_steps``. The grid has one row per pair: the
    first original, the decoded path, the second original. The .npz holds ``path`` (uint8
    ``[num_pairs, num_points, H, W, C]``), ``originals``, ``alphas``, ``step`` and ``nfe``.

    Returns:
      The uint8 path.
    """
    experiment, params, step = _restore(config, workdir, step)
    originals = load_images(config.data, 2 * num_pairs, split, image_dir)
    codec = build.latent_codec_from_config(experiment.sde, config.sampling)
    run = jax.jit(lambda p, a, b: codec.interpolate(experiment.score_fn(p), a, b, num_points))
    out, alphas = run(params, originals[:num_pairs], originals[num_pairs:])
    if not bool(out.success):
        logging.warning("The ODE solver hit sampling.max_steps; the path may be inaccurate.")
    path = np.swapaxes(_to_uint8(config, out.x, output, step), 0, 1)  # [pairs, points, H, W, C]
    ends = _to_uint8(config, originals)
    rows = np.concatenate([ends[:num_pairs, None], path, ends[num_pairs:, None]], axis=1)
    _write(
        output,
        list(rows),
        path=path,
        originals=ends,
        alphas=np.asarray(alphas),
        step=step,
        nfe=int(out.nfe),
    )
    return path


__all__ = ["colorize_to_files", "inpaint_to_files", "interpolate_to_files", "load_images"]
