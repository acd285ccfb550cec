"""Bits/dim of a data split, sharded over every device and host, resumable after interruption.

The one loop of bits/dim over a data set (the paper evaluated the CIFAR-10 test set 5 times
with fresh dequantization noise). The split is read once; each batch is evaluated
``num_repeats`` times with fresh dequantization noise and Hutchinson probes (batch ``i``,
repeat ``r`` uses ``fold_in(fold_in(key, i), r)``) by
:func:`sde_jax.likelihood.batch_bits_per_dim`, so ``batches`` may be any iterable, a generator
included. On one device, pass a one-device mesh (``sharding.make_mesh(1, 1, devices[:1])``).
Each (batch, repeat) is one unit of work; after every unit the per-example results so far go
to a small ``.npz`` file, and a rerun with the same file skips the units it holds (it still
reads, but does not evaluate, their batches).
"""

import functools
import math
from collections.abc import Callable, Iterable
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh

from sde_jax import likelihood, progress, sharding
from sde_jax.array_types import Key, ScoreFn
from sde_jax.evaluation import store
from sde_jax.sdes import SDE

# on_unit(batch_index, repeat): called after each evaluated (and saved) unit.
UnitCallback = Callable[[int, int], None]


class _Results:
    """Per-unit results in unit order (unit ``u`` = batch ``u // R``, repeat ``u % R``)."""

    def __init__(self, path: str | None, key_data: np.ndarray, num_repeats: int, batch: int):
        self.path, self.key_data = path, key_data
        self.num_repeats, self.batch = num_repeats, batch
        self.bpd, self.mask, self.nfe = [], [], []
        if path is not None and store.exists(path):
            saved = store.load_npz(path)
            found = (
                int(saved["num_repeats"]),
                int(saved["batch_size"]),
                saved["key_data"].tolist(),
            )
            if found != (num_repeats, batch, key_data.tolist()):
                raise ValueError(
                    f"the partial bits/dim results in {path} were computed with (num_repeats, "
                    f"batch_size, key) = {found}, not {(num_repeats, batch, key_data.tolist())};"
                    " delete the file to start this evaluation over."
                )
            self.bpd, self.mask = list(saved["bpd"]), list(saved["mask"])
            self.nfe = saved["nfe"].tolist()
            logging.info("Resuming bits/dim from %s: %d units done.", path, len(self.nfe))

    @property
    def units(self) -> int:
        return len(self.nfe)

    def add(self, bpd: np.ndarray, mask: np.ndarray, nfe: int) -> None:
        self.bpd.append(np.asarray(bpd, np.float32))
        self.mask.append(np.asarray(mask, bool))
        self.nfe.append(int(nfe))
        if self.path is not None:
            store.save_npz(
                self.path,
                bpd=np.stack(self.bpd),
                mask=np.stack(self.mask),
                nfe=np.asarray(self.nfe, np.int64),
                key_data=self.key_data,
                num_repeats=np.asarray(self.num_repeats),
                batch_size=np.asarray(self.batch),
            )

    def per_example(self) -> np.ndarray:
        """``[num_repeats, num_examples]`` bits/dim of the real (masked-in) examples."""
        batches = self.units // self.num_repeats
        bpd = np.stack(self.bpd[: batches * self.num_repeats])
        bpd = bpd.reshape(batches, self.num_repeats, self.batch).transpose(1, 0, 2)
        mask = np.stack(self.mask[: batches * self.num_repeats : self.num_repeats])
        return bpd[:, mask]


@functools.lru_cache(maxsize=8)
def _compiled(sde, score_of, mesh, data_range, num_levels, likelihood_items):
    """The jitted unit, built once per model and mesh (evaluating many checkpoints)."""

    def evaluate(params, key_data, images, mask):
        key = jax.random.wrap_key_data(key_data)
        bpd, nfe, success = likelihood.batch_bits_per_dim(
            key,
            sde,
            score_of(params),
            images,
            data_range=data_range,
            num_levels=num_levels,
            **dict(likelihood_items),
        )
        return bpd, nfe, success, mask

    jitted = jax.jit(evaluate, out_shardings=sharding.replicated(mesh))
    return progress.announce_first_call(jitted, "Compiling the bits/dim function...")


def sharded_bits_per_dim(
    key: Key,
    sde: SDE,
    score_of: Callable[[Any], ScoreFn],
    params: Any,
    batches: Iterable[dict[str, np.ndarray]],
    *,
    mesh: Mesh,
    num_repeats: int = 5,
    num_batches: int | None = None,
    data_range: tuple[float, float] = (0.0, 1.0),
    num_levels: int = 256,
    progress_path: str | None = None,
    on_unit: UnitCallback | None = None,
    **likelihood_kwargs,
) -> likelihood.BitsPerDim:
    """Bits/dim of a split with the batch split over ``mesh``; resumable through a file.

    Args:
      key: PRNG key of the evaluation.
      sde: the forward SDE.
      score_of: ``score_of(params) -> score_fn``, e.g. ``Experiment.score_fn``.
      params: the network parameters (global arrays, or host arrays to be replicated).
      batches: this host's batches ``{'image': uint8 [local_batch, ...], 'mask': bool
        [local_batch]}`` (``sde_jax.data.eval_iterator(..., raw_uint8=True)``); every host
        yields the same number; examples with ``mask`` False are evaluated but not counted.
      mesh: the device mesh; the global batch (local batch times hosts) must split evenly
        over its devices.
      num_repeats: R, dequantization repeats per example.
      num_batches: the number of batches, for the progress display only (its total and ETA).
      data_range: the interval the model's data are scaled to, (0, 1) or (-1, 1).
      num_levels: levels of the integer data (256).
      progress_path: ``.npz`` file holding the results of finished units; None keeps
        nothing (no resume).
      on_unit: called as ``on_unit(batch_index, repeat)`` after each evaluated unit.
      **likelihood_kwargs: passed to :func:`sde_jax.likelihood.log_likelihood`.

    Returns:
      A :class:`sde_jax.likelihood.BitsPerDim` over the masked-in examples.

    Raises:
      ValueError: for a bad ``num_repeats``, images that are not integer levels, a batch that
        does not split over the devices, an empty split, or a progress file of another
        evaluation.
      RuntimeError: if the ODE solver fails on a unit.
    """
    likelihood.check_num_repeats(num_repeats)
    batch_sharding, replicated = sharding.batch_sharding(mesh), sharding.replicated(mesh)
    evaluate = _compiled(
        sde, score_of, mesh, tuple(data_range), num_levels, tuple(sorted(likelihood_kwargs.items()))
    )
    key_data = np.asarray(jax.random.key_data(key))
    results, bar = None, None
    try:
        for index, batch in enumerate(batches):
            images = likelihood.check_images(batch["image"], index, num_levels)
            global_size = images.shape[0] * jax.process_count()
            if results is None:
                sharding.check_batch_size(global_size, mesh, "the global eval batch size")
                results = _Results(progress_path, key_data, num_repeats, global_size)
                bar = _progress_bar(results.units, num_batches, num_repeats)
            if (index + 1) * num_repeats <= results.units:
                continue  # finished before an interruption: read, not evaluated
            inputs = sharding.global_batch({"image": images, "mask": batch["mask"]}, batch_sharding)
            for r in range(num_repeats):
                if index * num_repeats + r < results.units:
                    continue
                subkey = jax.random.fold_in(jax.random.fold_in(key, index), r)
                subkey_data = sharding.global_batch(
                    {"key": np.asarray(jax.random.key_data(subkey))}, replicated
                )["key"]
                bpd, nfe, success, mask = evaluate(
                    params, subkey_data, inputs["image"], inputs["mask"]
                )
                likelihood.check_success(success, index, r)
                results.add(np.asarray(bpd), np.asarray(mask), int(nfe))
                bar.update(results.units, _note(results, index, r, num_batches))
                if on_unit is not None:
                    on_unit(index, r)
    finally:
        if bar is not None:
            bar.close()
    if results is None or results.units == 0:
        raise ValueError("batches is empty: no images to evaluate.")
    return likelihood.summarize_bits_per_dim(results.per_example(), results.nfe)


def _progress_bar(done: int, num_batches: int | None, num_repeats: int) -> progress.Progress:
    """The progress over (batch, repeat) units, the ``done`` ones of an earlier run counted."""
    total = None if not num_batches else max(num_batches * num_repeats, done)
    return progress.Progress("bits/dim", total, unit="unit", initial=done)


def _note(results: _Results, index: int, repeat: int, num_batches: int | None) -> str:
    """Where the loop is, and the running mean so far (shown beside the progress)."""
    values = np.concatenate([b[m] for b, m in zip(results.bpd, results.mask, strict=True)])
    mean = float(values.mean()) if values.size else math.nan
    return (
        f"batch {index + 1}/{num_batches or '?'} repeat {repeat + 1}/{results.num_repeats}, "
        f"running mean {mean:.4f} over {values.size} (nfe {results.nfe[-1]})"
    )
