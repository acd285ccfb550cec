"""Many samples in resumable chunks, and their quality (FID, IS, KID) from Inception features.

:func:`sample_chunks` draws ``num_samples`` images ``chunk_size`` at a time and writes each
chunk to its own ``.npz`` as soon as it is drawn; chunk ``i`` is a pure function of ``i`` (the
caller folds ``i`` into its key), so a rerun skips the chunks on disk and draws only the rest.
:func:`sample_quality` feeds the samples through a feature function (Inception pool3
features and logits) in fixed-size batches and hands the features to the metrics.
"""

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
from absl import logging

from sde_jax import progress, validation
from sde_jax.evaluation import store

# feature_fn(uint8-range images [B, H, W, 3]) -> (pool3 [B, 2048], logits [B, 1008])
FeatureFn = Callable[[np.ndarray], tuple[Any, Any]]


def chunk_path(directory: str, index: int) -> str:
    """The file of chunk ``index``."""
    return os.path.join(directory, f"chunk_{index:06d}.npz")


def sample_chunks(
    sample_fn: Callable[[int], np.ndarray],
    *,
    num_samples: int,
    chunk_size: int,
    directory: str,
    on_chunk: Callable[[int], None] | None = None,
    fingerprint: str | None = None,
) -> list[str]:
    """Draws ``num_samples`` images into ``directory/chunk_NNNNNN.npz``, skipping existing chunks.

    Args:
      sample_fn: ``sample_fn(chunk_index) -> (uint8 [chunk_size, H, W, C], extras)``,
        deterministic in the index (every host calls it; process 0 writes); ``extras`` is a
        dict of arrays stored beside the images (e.g. ``nfe``).
      num_samples: N; the last chunk keeps only the images up to N.
      chunk_size: images per call of ``sample_fn``.
      directory: where the chunks go.
      on_chunk: called with the index of every chunk drawn (not of those skipped).
      fingerprint: the settings' fingerprint (``evaluation.cache``), stored in every chunk;
        an existing chunk with another one is never completed or mixed in.

    Returns:
      The chunk files, in order.

    Raises:
      ValueError: for a non-positive ``num_samples`` or ``chunk_size``, or a ``sample_fn``
        returning something other than ``chunk_size`` uint8 images, or a chunk on disk
        drawn with another ``fingerprint``.
    """
    num_samples = validation.integer("num_samples", num_samples, minimum=1)
    chunk_size = validation.integer("chunk_size", chunk_size, minimum=1)
    num_chunks = -(-num_samples // chunk_size)
    paths = [chunk_path(directory, i) for i in range(num_chunks)]
    todo = [i for i, path in enumerate(paths) if not store.exists(path)]  # decided once
    if fingerprint is not None:
        _check_fingerprints([p for i, p in enumerate(paths) if i not in todo], fingerprint)
    if len(todo) < num_chunks:
        logging.info(
            "Sampling: %d of %d chunks already on disk.", num_chunks - len(todo), num_chunks
        )
    if not todo:
        return paths
    skipped = num_chunks - len(todo)
    with progress.Progress("samples", num_chunks, unit="chunk", initial=skipped) as bar:
        for done, index in enumerate(todo, 1):
            batch, extras = sample_fn(index)
            batch = np.asarray(batch)
            if batch.dtype != np.uint8 or batch.shape[0] != chunk_size:
                raise ValueError(
                    f"sample_fn must return {chunk_size} uint8 images, got {batch.dtype} of "
                    f"shape {batch.shape}."
                )
            count = min(chunk_size, num_samples - index * chunk_size)
            if fingerprint is not None:
                extras = {**extras, "fingerprint": np.asarray(fingerprint)}
            store.save_npz(paths[index], samples=batch[:count], **extras)
            bar.update(skipped + done, f"chunk {index + 1} written")
            if on_chunk is not None:
                on_chunk(index)
    return paths


def _check_fingerprints(paths: list[str], fingerprint: str) -> None:
    for path in paths:
        found = store.load_npz(path).get("fingerprint")
        if found is None or str(found) != fingerprint:
            raise ValueError(
                f"the sample chunk {path} was drawn with settings of fingerprint "
                f"{None if found is None else str(found)}, not {fingerprint}; refusing to "
                "complete the set with other settings. Use a new directory or delete it."
            )


def iterate_samples(paths: Iterable[str]) -> Iterator[np.ndarray]:
    """The uint8 images of each chunk file of ``paths`` (:func:`sample_chunks`), in order."""
    for path in paths:
        yield store.load_npz(path)["samples"]


def _batches(chunks: Iterable[np.ndarray], batch_size: int) -> Iterator[tuple[np.ndarray, int]]:
    """Fixed-size batches across chunk boundaries, the last padded: (batch, real count)."""
    pending, size = [], 0
    for chunk in chunks:
        pending.append(chunk)
        size += len(chunk)
        while size >= batch_size:
            flat = np.concatenate(pending)
            yield flat[:batch_size], batch_size
            pending, size = [flat[batch_size:]], size - batch_size
    if size:
        flat = np.concatenate(pending)
        pad = np.zeros((batch_size - size, *flat.shape[1:]), flat.dtype)
        yield np.concatenate([flat, pad]), size


def features(
    chunks: Iterable[np.ndarray],
    feature_fn: FeatureFn,
    *,
    batch_size: int,
    num_images: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pool3 features and logits of every image, in order.

    Gray images are repeated to three channels (the Inception network is defined on RGB; the
    reference statistics of a gray data set are computed the same way).

    Args:
      chunks: uint8 images ``[n_i, H, W, C]``, C 1 or 3, e.g. :func:`iterate_samples`.
      feature_fn: ``feature_fn(uint8 [batch_size, H, W, 3]) -> (pool3, logits)``; it always
        receives full batches (the last one padded with black images, dropped afterwards).
      batch_size: images per call of ``feature_fn``.
      num_images: how many images ``chunks`` holds, for the progress display only.

    Returns:
      ``(pool3 [n, D], logits [n, K])`` as float64 numpy arrays.
    """
    pools, logits = [], []
    total = None if num_images is None else -(-num_images // batch_size)
    with progress.Progress("Inception features", total, unit="batch") as bar:
        for batch, count in _batches(chunks, batch_size):
            if batch.shape[-1] == 1:
                batch = np.repeat(batch, 3, axis=-1)
            pool, logit = feature_fn(batch)
            pools.append(np.asarray(pool, np.float64)[:count])
            logits.append(np.asarray(logit, np.float64)[:count])
            bar.update(len(pools))
    if not pools:
        raise ValueError("no samples to compute features of.")
    return np.concatenate(pools), np.concatenate(logits)


def sample_quality(
    chunks: Iterable[np.ndarray],
    feature_fn: FeatureFn,
    reference: Any,
    *,
    batch_size: int,
    quality_fn: Callable[[np.ndarray, np.ndarray, Any], dict[str, float]] | None = None,
    num_images: int | None = None,
) -> dict[str, float]:
    """FID, Inception Score and KID of the samples against ``reference`` statistics.

    Args:
      chunks: the samples, uint8 ``[n_i, H, W, C]`` arrays.
      feature_fn: see :func:`features`.
      reference: the data set's reference statistics
        (``sde_jax.evaluation.metrics.ReferenceStats``).
      batch_size: images per call of ``feature_fn``.
      quality_fn: ``quality_fn(pool3, logits, reference) -> dict``; default
        ``sde_jax.evaluation.metrics.sample_quality`` (FID, IS with its std, KID).
      num_images: how many samples ``chunks`` holds, for the progress display only.

    Returns:
      The metrics as floats.
    """
    if quality_fn is None:
        from sde_jax.evaluation import metrics

        quality_fn = metrics.sample_quality
    pool3, logits = features(chunks, feature_fn, batch_size=batch_size, num_images=num_images)
    result = quality_fn(pool3, logits, reference)
    return {name: float(value) for name, value in result.items()}
