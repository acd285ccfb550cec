"""Evaluating checkpoints (``sde-jax eval``), and the bits/dim reports of ``sde-jax train``.

:func:`evaluate` picks checkpoints of a working directory (a given step; every periodic
checkpoint in ``[eval.begin_step, eval.end_step]`` when either is set, as the original's
``begin_ckpt``/``end_ckpt``; else the newest) and evaluates the EMA parameters of each on the
parts the config enables, sharded over every device and host:

- ``bpd`` (``eval.enable_bpd``): bits/dim of ``data.eval_split`` with ``eval.bpd_repeats``
  dequantizations per example (``bpd_train``: also ``data.train_split``, with
  ``eval.bpd_on_train``);
- ``loss`` (``eval.enable_loss``): the training loss on the eval split;
- ``samples`` (``eval.enable_sampling``): ``eval.num_samples`` samples with the configured
  sampler, in chunks of ``eval.batch_size``;
- ``quality``: FID / IS / KID of those samples against ``eval.reference_stats``, with the
  Inception weights of ``eval.inception_path``, when both are set.

Everything lands in ``workdir/eval``: ``step_NNNNNNNN/`` holds one checkpoint's partial results
(``summary.json`` with each finished part, ``bpd-<fp>.npz`` / ``bpd_train-<fp>.npz``
per-example progress, ``samples-<fp>/chunk_*.npz`` and ``samples-<fp>.png``), each under the
fingerprint ``<fp>`` of the settings that determine it (:mod:`sde_jax.evaluation.cache`);
``results.json`` and ``results.csv`` one row per evaluated step and settings;
``tensorboard/`` the rows as scalars and the sample grids. A rerun with the same settings
skips finished parts and resumes unfinished ones where they stopped, saying which it reuses;
with other settings it computes new entries beside the old ones.
"""

import math
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers

from sde_jax import data, images, likelihood, sharding, validation
from sde_jax.evaluation import cache, store
from sde_jax.evaluation import parts as parts_lib
from sde_jax.evaluation import samples as samples_lib
from sde_jax.experiment.bundle import Experiment
from sde_jax.experiment.rng import stream_key

PARTS = ("bpd", "bpd_train", "loss", "samples", "quality")
"""The parts of an evaluation, in the order they run."""

GRID_SIZE = 256
"""The sample grid (PNG and TensorBoard) shows the first this many samples."""


def enabled_parts(eval_config: ml_collections.ConfigDict, with_quality: bool) -> list[str]:
    """The parts an ``eval`` config section enables (``quality`` only ``with_quality``)."""
    enabled = {
        "bpd": eval_config.enable_bpd,
        "bpd_train": eval_config.enable_bpd and eval_config.bpd_on_train,
        "loss": eval_config.enable_loss,
        "samples": eval_config.enable_sampling,
        "quality": eval_config.enable_sampling and with_quality,
    }
    return [part for part in PARTS if enabled[part]]


def step_dir(workdir: str, step: int) -> str:
    """Where the partial results of checkpoint ``step`` go."""
    return os.path.join(workdir, "eval", f"step_{step:08d}")


def _bpd_row(prefix: str, result: likelihood.BitsPerDim) -> dict[str, Any]:
    return {
        prefix: result.mean,
        f"{prefix}_stderr": result.stderr,
        f"{prefix}_examples": result.num_examples,
        f"{prefix}_nfe": result.mean_nfe,
    }


def _first_samples(paths: list[str], count: int) -> np.ndarray:
    """The first ``count`` uint8 samples of the chunk files ``paths`` (fewer if they hold less)."""
    first = []
    for chunk in samples_lib.iterate_samples(paths):
        first.append(chunk)
        if sum(len(c) for c in first) >= count:
            break
    return np.concatenate(first)[:count]


def _sample_paths(config, directory: str) -> list[str]:
    num_chunks = -(-config.eval.num_samples // config.eval.batch_size)
    return [samples_lib.chunk_path(directory, i) for i in range(num_chunks)]


class _Run:
    """The state shared by the parts of one checkpoint's evaluation."""

    def __init__(self, experiment, params, directory, step, quality, quality_fn, on_unit, on_chunk):
        self.experiment, self.config, self.params = experiment, experiment.config, params
        self.directory, self.quality, self.quality_fn = directory, quality, quality_fn
        self.on_unit, self.on_chunk = on_unit, on_chunk
        self.step, self.grid = step, None
        self.fingerprints = {p: cache.part_fingerprint(self.config, p, step) for p in PARTS}

    def _path(self, part: str, suffix: str = "") -> str:
        return os.path.join(self.directory, cache.entry(part, self.fingerprints[part]) + suffix)

    def run(self, part: str) -> dict[str, Any]:
        return getattr(self, f"_{part}")()

    def _bpd_of(self, split: str, seed: str, name: str) -> dict[str, Any]:
        result = parts_lib.bits_per_dim_of_split(
            self.experiment,
            self.params,
            split,
            stream_key(self.config.seed, seed),
            progress_path=self._path(name, ".npz"),
            on_unit=self.on_unit,
        )
        return _bpd_row(name, result)

    def _bpd(self):
        return self._bpd_of(self.config.data.eval_split, parts_lib.BPD_SEED, "bpd")

    def _bpd_train(self):
        return self._bpd_of(self.config.data.train_split, parts_lib.BPD_TRAIN_SEED, "bpd_train")

    def _loss(self):
        local = self.config.eval.batch_size // jax.process_count()
        batches = data.eval_iterator(self.config.data, local)
        key = stream_key(self.config.seed, parts_lib.LOSS_SEED)
        return {"eval_loss": parts_lib.eval_loss(self.experiment, self.params, batches, key)}

    def _samples(self):
        paths = samples_lib.sample_chunks(
            parts_lib.make_chunk_sampler(self.experiment, self.params, self.step),
            num_samples=self.config.eval.num_samples,
            chunk_size=self.config.eval.batch_size,
            directory=self._path("samples"),
            on_chunk=self.on_chunk,
            fingerprint=self.fingerprints["samples"],
        )
        nfes = [float(store.load_npz(path)["nfe"]) for path in paths]
        self.grid = images.uint8_grid(_first_samples(paths, GRID_SIZE))
        if jax.process_index() == 0:
            images.save_png(self._path("samples", ".png"), self.grid)
        return {"num_samples": self.config.eval.num_samples, "sample_nfe": float(np.mean(nfes))}

    def _quality(self):
        feature_fn, reference = self.quality
        paths = _sample_paths(self.config, self._path("samples"))
        return samples_lib.sample_quality(
            samples_lib.iterate_samples(paths),
            parts_lib.sharded_feature_fn(feature_fn, self.experiment.mesh),
            reference,
            batch_size=self.config.eval.batch_size,
            quality_fn=self.quality_fn,
            num_images=self.config.eval.num_samples,
        )


def evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    step: int | None = None,
    quality: tuple[Callable, Any] | None = None,
    quality_fn: Callable | None = None,
    on_unit: Callable[[int, int], None] | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Evaluates the EMA parameters of checkpoints of ``workdir`` (see the module docstring).

    Args:
      config: the experiment config; its ``eval`` section picks the parts and checkpoints.
      workdir: the run's directory.
      step: evaluate this checkpoint only (default: the range of ``eval.begin_step`` and
        ``eval.end_step`` if either is set, else the newest checkpoint).
      quality: ``(feature_fn, reference)`` for FID/IS/KID; default: loaded from
        ``eval.inception_path`` and ``eval.reference_stats`` (skipped when unset).
      quality_fn: ``quality_fn(pool3, logits, reference) -> dict`` (default
        ``sde_jax.evaluation.metrics.sample_quality``).
      on_unit: called after each bits/dim unit as ``on_unit(batch_index, repeat)``.
      on_chunk: called after each sample chunk drawn with its index.

    Returns:
      The result rows of the evaluated steps (also in ``workdir/eval/results.json``).

    Raises:
      ValueError: for an invalid config, a ``step`` that is not a checkpoint or an empty range.
      FileNotFoundError: without checkpoints, or for metric files named but missing.
    """
    experiment = Experiment(config)
    _check_eval_config(config.eval, experiment.mesh)
    if quality is None and config.eval.enable_sampling:
        quality = parts_lib.load_quality_inputs(config.eval)
    parts = enabled_parts(config.eval, quality is not None)
    steps = parts_lib.checkpoint_steps(workdir, step, config.eval.begin_step, config.eval.end_step)
    eval_dir = os.path.join(workdir, "eval")
    writer = metric_writers.create_default_writer(
        os.path.join(eval_dir, "tensorboard"), just_logging=jax.process_index() > 0
    )
    logging.info("Evaluating steps %s: %s.", steps, parts)
    rows = []
    for s in steps:
        row, grid = _evaluate_step(
            experiment, workdir, s, parts, quality, quality_fn, on_unit, on_chunk
        )
        _record(writer, eval_dir, row, grid)
        rows.append(row)
    writer.flush()
    writer.close()
    return rows


def _record(writer, eval_dir: str, row: dict[str, Any], grid: np.ndarray | None) -> None:
    """Stores a step's result row, writes its scalars and sample grid to TensorBoard, logs it."""
    store.write_result(eval_dir, row)
    scalars = {k: v for k, v in row.items() if k != "step" and _finite(v)}
    writer.write_scalars(row["step"], scalars)
    if grid is not None:
        writer.write_images(row["step"], {"samples": grid[None]})
    logging.info("%s", format_row(row))


def _evaluate_step(experiment, workdir, step, parts, quality, quality_fn, on_unit, on_chunk):
    """Evaluates ``parts`` of checkpoint ``step`` not yet stored with their fingerprint.

    Returns:
      ``(row, grid)``: the result row (every part stored with the current settings, and the
      row's ``fingerprint``) and the sample grid, or None when no samples were drawn.
    """
    directory = step_dir(workdir, step)
    summary_path = os.path.join(directory, "summary.json")
    summary = store.load_json(summary_path, {})
    fingerprints = {p: cache.part_fingerprint(experiment.config, p, step) for p in PARTS}
    todo = _pending_parts(step, parts, fingerprints, summary)
    run = None
    if todo:
        params, _ = parts_lib.restore_ema_params(experiment, workdir, step)
        run = _Run(experiment, params, directory, step, quality, quality_fn, on_unit, on_chunk)
        _run_parts(run, todo, fingerprints, summary, summary_path)
    return _row(step, fingerprints, summary), None if run is None else run.grid


def _pending_parts(step, parts, fingerprints, summary) -> list[str]:
    """The parts not yet in ``summary`` under their fingerprint; logs what each reuses."""
    for part in parts:
        logging.info("%s", cache.describe(step, part, fingerprints[part], summary))
    return [p for p in parts if cache.entry(p, fingerprints[p]) not in summary]


def _run_parts(run: _Run, todo, fingerprints, summary, summary_path: str) -> None:
    """Runs each part of ``todo``, saving ``summary`` (with its time) after each one."""
    for part in todo:
        start = time.monotonic()
        summary[cache.entry(part, fingerprints[part])] = {
            **run.run(part),
            f"{part}_seconds": time.monotonic() - start,
        }
        store.save_json(summary_path, summary)


def _row(step: int, fingerprints: dict[str, str], summary: dict[str, Any]) -> dict[str, Any]:
    """The result row: every part stored with the current settings (of earlier runs too)."""
    row = {"step": step, "fingerprint": store.fingerprint(fingerprints)}
    for part in PARTS:  # e.g. FID computed once, same settings only
        row.update(summary.get(cache.entry(part, fingerprints[part]), {}))
    return row


def final_bits_per_dim(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    on_unit: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """The ``bpd`` part of the newest checkpoint, through :func:`evaluate`'s cache.

    What ``sde-jax train`` reports at the end: resumable (per-unit progress in
    ``step_dir/bpd-<fingerprint>.npz``), reused when stored with the same settings (by this
    or by ``sde-jax eval``), and added to ``results.json``.

    Args:
      config: the experiment config.
      workdir: the run's directory.
      on_unit: called after each saved unit as ``on_unit(batch_index, repeat)``; raising
        from it stops the evaluation with the progress kept.

    Returns:
      The result row (``bpd``, ``bpd_stderr``, ... and the other parts stored for the step).
    """
    experiment = Experiment(config)
    _check_eval_config(config.eval, experiment.mesh)
    (step,) = parts_lib.checkpoint_steps(workdir)
    row, _ = _evaluate_step(experiment, workdir, step, ["bpd"], None, None, on_unit, None)
    store.write_result(os.path.join(workdir, "eval"), row)
    return row


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _check_eval_config(eval_config: ml_collections.ConfigDict, mesh) -> None:
    sharding.check_batch_size(eval_config.batch_size, mesh, "eval.batch_size")
    for key in ("num_samples", "bpd_repeats"):
        validation.integer(f"eval.{key}", eval_config[key], minimum=1)
    if eval_config.bpd_max_examples is not None:
        validation.integer(
            "eval.bpd_max_examples", eval_config.bpd_max_examples, minimum=1, meaning=" or None"
        )


def format_row(row: dict[str, Any]) -> str:
    """One line for a result row: bits/dim with its standard error, then the other metrics."""
    out = []
    for name in ("bpd", "bpd_train"):
        if name in row:
            out.append(f"{name} {row[name]:.4f} +- {row[f'{name}_stderr'] or math.nan:.4f}")
    for name in ("eval_loss", "fid", "inception_score", "kid"):
        if name in row:
            out.append(f"{name} {row[name]:.4g}")
    return f"step {row['step']}: " + ", ".join(out)


def held_out_bits_per_dim(
    config, workdir: str, step: int | None = None, max_examples: int | None = None
) -> likelihood.BitsPerDim:
    """Bits/dim of the eval split with the EMA parameters, ``eval.bpd_repeats`` dequantizations.

    Sharded like :func:`evaluate`'s ``bpd`` part, without a progress file.

    Args:
      config: the experiment config.
      workdir: the run's directory.
      step: checkpoint step (default: newest).
      max_examples: evaluate only the first examples of the split (None:
        ``eval.bpd_max_examples``).
    """
    if max_examples is not None:
        config = config.copy_and_resolve_references()
        config.eval.bpd_max_examples = max_examples
    experiment = Experiment(config)
    _check_eval_config(config.eval, experiment.mesh)
    params, _ = parts_lib.restore_ema_params(experiment, workdir, step)
    key = stream_key(config.seed, parts_lib.BPD_SEED)
    return parts_lib.bits_per_dim_of_split(experiment, params, config.data.eval_split, key)
