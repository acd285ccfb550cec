"""The parts of an evaluation, each sharded over every device and host.

Restoring a checkpoint's EMA parameters, bits/dim of a split, the eval loss, a chunk sampler
and the Inception features; :mod:`sde_jax.evaluation.run` ties them together.
"""

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from sde_jax import data, images, likelihood, progress, sharding
from sde_jax.evaluation import bpd as bpd_lib
from sde_jax.evaluation import inception, store
from sde_jax.experiment import build
from sde_jax.experiment.bundle import Experiment
from sde_jax.experiment.rng import stream_key
from sde_jax.training import checkpoint

# The random streams (sde_jax.experiment.rng) of the evaluation parts.
SAMPLE_SEED, BPD_SEED, LOSS_SEED, BPD_TRAIN_SEED = (
    "eval_samples",
    "eval_bpd",
    "eval_loss",
    "eval_bpd_train",
)


def restore_ema_params(experiment: Experiment, workdir: str, step: int | None = None):
    """The EMA parameters of checkpoint ``step`` (default: newest) of ``workdir``, and the step.

    Raises:
      FileNotFoundError: if ``workdir`` has no checkpoint.
    """
    ckpt = checkpoint.Checkpointer(workdir, create=False)
    try:
        if ckpt.latest_step() is None:
            raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints*; train first.")
        abstract = jax.eval_shape(experiment.init_state)
        shardings = sharding.state_shardings(abstract, experiment.mesh)
        state = ckpt.restore(checkpoint.abstract_with_shardings(abstract, shardings), step)
    finally:
        ckpt.close()
    return state.ema_params, int(state.step)


def checkpoint_steps(
    workdir: str,
    step: int | None = None,
    begin_step: int | None = None,
    end_step: int | None = None,
) -> list[int]:
    """The checkpoint steps to evaluate: ``step``; the periodic ones in the range; the newest.

    Raises:
      FileNotFoundError: if ``workdir`` has no checkpoint.
      ValueError: if ``step`` is not a checkpoint, or no periodic checkpoint is in the range.
    """
    ckpt = checkpoint.Checkpointer(workdir, create=False)
    try:
        periodic = list(ckpt.periodic.all_steps())
        available = sorted(set(periodic) | set(ckpt.preemption.all_steps()))
        latest = ckpt.latest_step()
    finally:
        ckpt.close()
    if latest is None:
        raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints*; train first.")
    if step is not None:
        if step not in available:
            raise ValueError(f"step={step} is not a checkpoint of {workdir}; have {available}.")
        return [step]
    if begin_step is None and end_step is None:
        return [latest]
    lo = -math.inf if begin_step is None else begin_step
    hi = math.inf if end_step is None else end_step
    steps = sorted(s for s in periodic if lo <= s <= hi)
    if not steps:
        raise ValueError(
            f"no periodic checkpoint of {workdir} in [eval.begin_step, eval.end_step] = "
            f"[{begin_step}, {end_step}]; have {sorted(periodic)}."
        )
    return steps


def _replicated_key(key, mesh) -> jax.Array:
    data_ = np.asarray(jax.random.key_data(key))
    return sharding.global_batch({"k": data_}, sharding.replicated(mesh))["k"]


@functools.lru_cache(maxsize=4)
def _loss_fn(experiment: Experiment):
    """Jitted ``(params, key_data, images, mask) -> (loss sum, count)``, once per experiment."""

    def batch_loss(params, key_data, images_, mask):
        key = jax.random.wrap_key_data(key_data)
        per_example = experiment.loss_fn(key, experiment.score_fn(params), images_).per_example
        return jnp.sum(jnp.where(mask, per_example, 0.0)), jnp.sum(mask)

    jitted = jax.jit(batch_loss, out_shardings=sharding.replicated(experiment.mesh))
    return progress.announce_first_call(jitted, "Compiling the eval loss...")


def eval_loss(experiment: Experiment, params: Any, batches, key) -> float:
    """The training loss of ``params`` averaged over the masked-in examples of ``batches``.

    Args:
      experiment: gives the loss, score function and mesh.
      params: the (EMA) parameters.
      batches: this host's ``{'image': float32 [local_batch, H, W, C], 'mask': bool}`` in model
        space (``sde_jax.data.eval_iterator``).
      key: batch ``i`` uses ``fold_in(key, i)`` for the loss's times and noise.
    """
    mesh = experiment.mesh
    fn = _loss_fn(experiment)
    batch_sharding = sharding.batch_sharding(mesh)
    total, count = 0.0, 0
    for index, batch in enumerate(batches):
        inputs = sharding.global_batch(batch, batch_sharding)
        subkey = _replicated_key(jax.random.fold_in(key, index), mesh)
        loss_sum, n = fn(params, subkey, inputs["image"], inputs["mask"])
        total, count = total + float(loss_sum), count + int(n)
    if count == 0:
        raise ValueError("the eval split is empty: no eval loss.")
    return total / count


def _limit(batches, max_examples: int | None, global_batch: int):
    """Masks out every example past the first ``max_examples`` of the split (None: none)."""
    local = global_batch // jax.process_count()
    for index, batch in enumerate(batches):
        if max_examples is None:
            yield batch
            continue
        first = index * global_batch
        if first >= max_examples:
            return
        position = first + jax.process_index() * local + np.arange(local)
        yield {**batch, "mask": batch["mask"] & (position < max_examples)}


def bits_per_dim_of_split(
    experiment: Experiment,
    params: Any,
    split: str,
    key,
    *,
    progress_path: str | None = None,
    on_unit: bpd_lib.UnitCallback | None = None,
    **likelihood_kwargs,
) -> likelihood.BitsPerDim:
    """Bits/dim of a split of the config's data set with ``eval.bpd_repeats`` repeats.

    The first ``eval.bpd_max_examples`` examples only, when set. Keyword arguments as for
    :func:`sde_jax.evaluation.sharded_bits_per_dim`.
    """
    config = experiment.config
    batch_size = config.eval.batch_size
    local = batch_size // jax.process_count()
    max_examples = config.eval.bpd_max_examples
    num_batches = data.num_eval_batches(config.data, local, split=split)
    if max_examples is not None:
        num_batches = min(num_batches, -(-max_examples // batch_size))
    batches = data.eval_iterator(config.data, local, split=split, raw_uint8=True)
    return bpd_lib.sharded_bits_per_dim(
        key,
        experiment.sde,
        experiment.score_fn,
        params,
        _limit(batches, max_examples, batch_size),
        mesh=experiment.mesh,
        num_repeats=config.eval.bpd_repeats,
        num_batches=num_batches,
        data_range=(-1.0, 1.0) if config.data.centered else (0.0, 1.0),
        progress_path=progress_path,
        on_unit=on_unit,
        **likelihood_kwargs,
    )


def make_chunk_sampler(
    experiment: Experiment, params: Any, step: int | None = None
) -> Callable[[int], tuple]:
    """``fn(chunk_index) -> (uint8 [eval.batch_size, H, W, C], {'nfe': ...})``, sharded.

    Raises ``images.NonFiniteSamplesError`` for a chunk with non-finite samples (``step``,
    the checkpoint's, goes into the message), so no chunk of black images is stored.
    """
    config, mesh = experiment.config, experiment.mesh
    draw = _draw_fn(experiment)
    key = stream_key(config.seed, SAMPLE_SEED)
    s = config.sampling
    label = images.sampler_label(s.method, s.predictor, s.corrector)

    def sample(index: int):
        pixels, nfe, bad = draw(params, _replicated_key(jax.random.fold_in(key, index), mesh))
        if int(bad):
            raise images.NonFiniteSamplesError(
                f"refusing to write sample chunk {index}: {int(bad)} of {np.size(pixels)} "
                f"sample values are non-finite (NaN or inf), from sampler {label} at step "
                f"{step}. The model or the sampler diverged."
            )
        return np.asarray(pixels), {"nfe": np.asarray(nfe)}

    return sample


@functools.lru_cache(maxsize=4)
def _draw_fn(experiment: Experiment):
    """Jitted ``(params, key_data) -> (uint8 images, nfe, non-finite count)``, once each."""
    config, mesh = experiment.config, experiment.mesh
    shape = (config.eval.batch_size, *experiment.image_shape)
    sampler = build.get_sampler(experiment.sde, config.sampling, shape)
    batch_sharding = sharding.batch_sharding(mesh)

    def draw(params, key_data):
        score_fn = experiment.score_fn(params)

        def sharded_score(x, t):  # keeps every network call split over the devices
            return score_fn(jax.lax.with_sharding_constraint(x, batch_sharding), t)

        out = sampler(jax.random.wrap_key_data(key_data), sharded_score)
        pixels = images.to_uint8(out.x, config.data.centered)
        return pixels, out.nfe, jnp.sum(~jnp.isfinite(out.x))

    jitted = jax.jit(draw, out_shardings=sharding.replicated(mesh))
    return progress.announce_first_call(jitted, "Compiling the sampler of the eval samples...")


def sharded_feature_fn(feature_fn: Callable, mesh) -> Callable[[np.ndarray], tuple]:
    """Runs ``feature_fn`` on a global batch (the same numpy array on every host), sharded."""
    jitted = progress.announce_first_call(
        inception.jit_feature_fn(feature_fn, out_shardings=sharding.replicated(mesh)),
        "Compiling the Inception network...",
    )
    batch_sharding = sharding.batch_sharding(mesh)

    def call(batch: np.ndarray):
        local = batch.reshape(jax.process_count(), -1, *batch.shape[1:])[jax.process_index()]
        return jitted(sharding.global_batch({"x": local}, batch_sharding)["x"])

    return call


def load_quality_inputs(eval_config: ml_collections.ConfigDict) -> tuple[Any, Any] | None:
    """The Inception feature function and reference statistics the config names, or None.

    None (with a logged reason) when either path is unset; a path that is set but missing
    fails at once, before any evaluation work.

    Raises:
      FileNotFoundError: for a set ``eval.inception_path`` or ``eval.reference_stats`` that
        does not exist.
    """
    inception_path, reference_path = eval_config.inception_path, eval_config.reference_stats
    for key, path in (("inception_path", inception_path), ("reference_stats", reference_path)):
        if path is not None and not store.exists(path):
            raise FileNotFoundError(
                f"eval.{key}={path!r} does not exist. "
                + (
                    "Convert the standard Inception weights into it (see the README's "
                    "Evaluation section), or leave it None to skip FID/IS/KID."
                    if key == "inception_path"
                    else "Compute it with `sde-jax fid-stats`, or leave it None to skip FID/IS/KID."
                )
            )
    if inception_path is None or reference_path is None:
        logging.warning(
            "Skipping FID/IS/KID: set eval.inception_path (Inception weights) and "
            "eval.reference_stats (from `sde-jax fid-stats`) to compute them."
        )
        return None
    from sde_jax.evaluation import metrics

    feature_fn = inception.make_feature_fn(inception.load_params(inception_path))
    return feature_fn, metrics.load_reference_stats(reference_path)
