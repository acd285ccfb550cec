"""Samples of a trained checkpoint to files (``sde-jax sample`` without ``--class``)."""

import jax
import numpy as np
from absl import logging

from sde_jax import evaluation, images
from sde_jax.apps import writers
from sde_jax.evaluation import parts as parts_lib
from sde_jax.experiment.bundle import Experiment
from sde_jax.experiment.rng import stream_key

__all__ = ["sample_to_files"]

GRID_SIZE = 256
"""The PNG grid shows the first this many samples."""


def sample_to_files(
    config, workdir: str, num_samples: int, output: str, step: int | None = None
) -> np.ndarray:
    """Draws ``num_samples`` images in batches of ``training.sample_batch_size``.

    Writes ``output`` (.npz with ``samples`` uint8 ``[n, H, W, C]``, ``step`` and ``nfe``)
    after every batch, so an interruption loses at most one batch, and a PNG grid of the first
    256 beside it once all are drawn (:func:`sde_jax.apps.writers.write_samples`).

    Args:
      config: the experiment config (its ``sampling`` section picks the sampler).
      workdir: the run's directory.
      num_samples: the number of images.
      output: the .npz path.
      step: the checkpoint step (default: newest).

    Returns:
      The uint8 samples.

    Raises:
      FileNotFoundError: if ``workdir`` has no checkpoint.
      sde_jax.images.NonFiniteSamplesError: for a batch with NaN or infinite samples.
    """
    experiment = Experiment(config)
    params, step = evaluation.restore_ema_params(experiment, workdir, step)
    batches, done = [], 0
    s = config.sampling
    label = images.sampler_label(s.method, s.predictor, s.corrector)
    key = stream_key(config.seed, parts_lib.SAMPLE_SEED)
    while done < num_samples:
        out = experiment.sample_fn(jax.random.fold_in(key, len(batches)), params)
        x = np.asarray(out.x)
        images.check_finite(x, output, sampler=label, step=step)
        batches.append(images.to_uint8(x, config.data.centered))
        done += x.shape[0]
        samples = np.concatenate(batches)[:num_samples]
        grids = [writers.Grid(samples[:GRID_SIZE])] if done >= num_samples else []
        arrays = {"samples": samples, "step": step, "nfe": int(out.nfe)}
        writers.write_samples(output, arrays, grids)
        logging.info("Sampled %d/%d images (checkpoint step %d).", len(samples), num_samples, step)
    return samples
