"""Reference statistics of a data set for FID and KID: ``sde-jax fid-stats``.

The images of a split go through the input pipeline's eval path as 8-bit images (cropped and
resized to ``data.image_size``, exactly what the model is trained on), then through the
Inception network (:mod:`sde_jax.evaluation.inception`, which resizes them to 299x299 as the
reference code does); their pool3 features become a
:class:`sde_jax.evaluation.metrics.ReferenceStats` file.
"""

from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from absl import logging

from sde_jax import data, progress
from sde_jax.evaluation import inception, metrics


def dataset_features(
    data_config: Mapping[str, Any],
    feature_fn: Callable[[Any], tuple[Any, Any]],
    batch_size: int,
    split: str | None = None,
    max_examples: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Inception features of every example of a split, in order, on this host.

    Args:
      data_config: the config's ``data`` section.
      feature_fn: ``images uint8 [B, H, W, C] -> (pool3 [B, d], logits [B, k])``, e.g. a jitted
        :func:`sde_jax.evaluation.inception.make_feature_fn`; always called with ``batch_size``
        images (the last batch is padded), so it compiles once.
      batch_size: images per call.
      split: the split; default ``data.eval_split``.
      max_examples: stop after the first ``max_examples`` examples; default all.

    Returns:
      ``(pool3 [N, d], logits [N, k])`` as float32 numpy arrays.

    Raises:
      ValueError: for a bad ``max_examples``, or from :func:`sde_jax.data.eval_iterator`.
    """
    if max_examples is not None and (isinstance(max_examples, bool) or max_examples < 1):
        raise ValueError(f"max_examples must be None or an int >= 1, got {max_examples!r}.")
    batches = data.eval_iterator(
        data_config, batch_size, split=split, raw_uint8=True, shard_index=0, num_shards=1
    )
    total = data.num_eval_batches(data_config, batch_size, split=split, num_shards=1)
    if max_examples is not None:
        total = min(total, -(-max_examples // batch_size))
    pool3, logits, done = [], [], 0
    with progress.Progress("Inception features", max(total, 1), unit="batch") as bar:
        for batch in batches:
            features, batch_logits = feature_fn(batch["image"])
            keep = np.asarray(batch["mask"])
            if max_examples is not None:
                keep &= np.arange(len(keep)) < max_examples - done
            pool3.append(np.asarray(features, np.float32)[keep])
            logits.append(np.asarray(batch_logits, np.float32)[keep])
            done += int(keep.sum())
            bar.update(len(pool3), f"{done} images")
            if max_examples is not None and done >= max_examples:
                break
    if done == 0:
        raise ValueError(f"split {split!r} of {data_config['dataset']!r} yielded no images.")
    logging.info("Inception features of %d images.", done)
    return np.concatenate(pool3), np.concatenate(logits)


def write_reference_stats(
    data_config: Mapping[str, Any],
    inception_path: str | None,
    output: str,
    batch_size: int,
    split: str | None = None,
    max_examples: int | None = None,
) -> metrics.ReferenceStats:
    """Computes the :class:`~sde_jax.evaluation.metrics.ReferenceStats` of a split and saves them.

    Runs on one device; every process computes the same features (the whole split) and
    process 0 writes the file. The Inception Score of the data
    (with 10 splits) is logged as a sanity check of the weights: about 11.2 for the CIFAR-10
    training set with the standard weights.

    Args:
      data_config: the config's ``data`` section.
      inception_path: the converted Inception weights (``.npz``).
      output: where to write the statistics (``.npz``).
      batch_size: images per Inception call.
      split: the split; default ``data.train_split`` (FID references are usually the
        training set).
      max_examples: use only the first ``max_examples`` examples of the split.

    Returns:
      The statistics written.

    Raises:
      FileNotFoundError: without Inception weights, saying how to get them.
    """
    params = inception.load_params(inception_path)
    split = data_config["train_split"] if split is None else split
    feature_fn = progress.announce_first_call(
        inception.jit_feature_fn(inception.make_feature_fn(params)),
        "Compiling the Inception network...",
    )
    pool3, logits = dataset_features(data_config, feature_fn, batch_size, split, max_examples)
    stats = metrics.compute_stats(pool3)
    if jax.process_index() == 0:
        metrics.save_reference_stats(output, stats)
    if len(logits) >= 10:
        score, std = metrics.inception_score(logits, splits=10)
        logging.info(
            "Inception Score of %s[%s]: %.3f +- %.3f.", data_config["dataset"], split, score, std
        )
    logging.info(
        "Wrote reference statistics of %d images of %s[%s] (%d KID features) to %s.",
        stats.num_examples,
        data_config["dataset"],
        split,
        len(stats.kid_features),
        output,
    )
    return stats
