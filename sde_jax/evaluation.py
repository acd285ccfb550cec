"""Using a trained checkpoint: samples to files, bits/dim of held-out data.

Each function takes the experiment config and its working directory, restores the EMA
parameters of a checkpoint (the newest by default) and calls the library.
"""

import os

import jax
import numpy as np
from absl import logging

from sde_jax import data, images, likelihood
from sde_jax.training import checkpoint, sharding
from sde_jax.training.loop import Experiment


def restore_ema_params(experiment: Experiment, workdir: str, step: int | None = None):
    """The EMA parameters of checkpoint ``step`` (default: newest) of ``workdir``, and the step.

    Raises:
      FileNotFoundError: if ``workdir`` has no checkpoint.
    """
    ckpt = checkpoint.Checkpointer(workdir)
    try:
        if ckpt.latest_step() is None:
            raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints*; train first.")
        abstract = jax.eval_shape(experiment.init_state)
        shardings = sharding.state_shardings(abstract, experiment.mesh)
        state = ckpt.restore(checkpoint.abstract_with_shardings(abstract, shardings), step)
    finally:
        ckpt.close()
    return state.ema_params, int(state.step)


def sample_to_files(
    config, workdir: str, num_samples: int, output: str, step: int | None = None
) -> np.ndarray:
    """Draws ``num_samples`` images in batches of ``training.sample_batch_size``.

    Writes ``output`` (.npz with ``samples`` uint8 ``[n, H, W, C]``) after every batch, so an
    interruption loses at most one batch, and a PNG grid of the first 256 beside it.

    Returns:
      The uint8 samples.
    """
    experiment = Experiment(config)
    params, step = restore_ema_params(experiment, workdir, step)
    to_unit = data.inverse_scaler(config.data.centered)
    batches, done = [], 0
    key = jax.random.key(config.seed + 3)
    while done < num_samples:
        out = experiment.sample_fn(jax.random.fold_in(key, len(batches)), params)
        x = np.clip(to_unit(np.asarray(out.x)), 0.0, 1.0)
        batches.append(np.round(x * 255).astype(np.uint8))
        done += x.shape[0]
        samples = np.concatenate(batches)[:num_samples]
        if jax.process_index() == 0:
            os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
            np.savez(output, samples=samples, step=step, nfe=int(out.nfe))
        logging.info("Sampled %d/%d images (checkpoint step %d).", len(samples), num_samples, step)
    if jax.process_index() == 0:
        grid = images.image_grid(samples[:256].astype(np.float32) / 255.0)
        images.save_png(os.path.splitext(output)[0] + ".png", grid)
    return samples


def held_out_bits_per_dim(
    config, workdir: str, step: int | None = None, max_examples: int | None = None
) -> likelihood.BitsPerDim:
    """Bits/dim of the eval split with the EMA parameters, ``eval.bpd_repeats`` dequantizations.

    Args:
      config: the experiment config.
      workdir: the run's directory.
      step: checkpoint step (default: newest).
      max_examples: evaluate only the first examples of the split (None: all).
    """
    experiment = Experiment(config)
    params, _ = restore_ema_params(experiment, workdir, step)
    batch_size = config.eval.batch_size

    def uint8_batches():
        seen = 0
        for batch in data.eval_iterator(config.data, batch_size, raw_uint8=True):
            images_ = batch["image"]
            if "mask" in batch:
                images_ = images_[np.asarray(batch["mask"], bool)]
            if max_examples is not None:
                images_ = images_[: max_examples - seen]
            if len(images_):
                yield images_
            seen += len(images_)
            if max_examples is not None and seen >= max_examples:
                return

    data_range = (-1.0, 1.0) if config.data.centered else (0.0, 1.0)
    return likelihood.dataset_bits_per_dim(
        jax.random.key(config.seed + 4),
        experiment.sde,
        experiment.score_fn(params),
        uint8_batches(),
        num_repeats=config.eval.bpd_repeats,
        data_range=data_range,
    )


__all__ = ["held_out_bits_per_dim", "restore_ema_params", "sample_to_files"]
