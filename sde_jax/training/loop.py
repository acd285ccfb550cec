"""The training loop: config in, checkpoints, metrics and sample grids out.

``train(config, workdir)`` builds the :class:`~sde_jax.experiment.Experiment` (the config
validated before anything compiles: mesh, model, SDE, optimizer and the task object of
``training.task``, ``sde_jax.experiment.tasks``), then runs in phases: :func:`_setup` derives
the state's shardings and restores the newest checkpoint or initializes the state straight into
its sharding; :func:`_compile_step` jits the (donated) steps of the task's objective;
:func:`_writers_and_hooks` opens the metric writer; :class:`_Loop` runs the steps and, after
each call, logs (``_log``), evaluates (``_maybe_eval``) and checkpoints (``_maybe_checkpoint``).
A :class:`sde_jax.progress.Progress` shows the steps from the resumed one to
``training.n_iters`` (a bar in a terminal, log lines with rate and ETA otherwise), and every
pause (the compilations, the sample grids, the saves) is announced. Metrics leave the device
only at log steps; a non-finite loss stops training with an error naming the step. SIGTERM (or
JAX's preemption notice on multi-host jobs) triggers a checkpoint and a clean stop.
"""

import dataclasses
import functools
import os
import signal
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions

from sde_jax import data, images, progress, sharding
from sde_jax.experiment.bundle import Experiment
from sde_jax.experiment.rng import stream_key
from sde_jax.runtime import block_if_needed, must_block_each_step
from sde_jax.training import checkpoint
from sde_jax.training.state import TrainState
from sde_jax.training.step import train_steps


def _check_finite(losses_by_step: np.ndarray, first_step: int) -> None:
    bad = np.flatnonzero(~np.isfinite(losses_by_step))
    if bad.size:
        step = first_step + int(bad[0])
        raise FloatingPointError(
            f"non-finite training loss {losses_by_step[bad[0]]} at step {step}; stopping. "
            "Lower optim.lr, check the data scaling, or restart from the last checkpoint."
        )


def _on_sigterm() -> threading.Event:
    event = threading.Event()
    if threading.current_thread() is threading.main_thread():
        previous = signal.getsignal(signal.SIGTERM)

        def handler(signum, frame):
            logging.warning("SIGTERM received: checkpointing and stopping.")
            event.set()
            if callable(previous) and previous not in (signal.SIG_DFL, signal.SIG_IGN):
                previous(signum, frame)

        signal.signal(signal.SIGTERM, handler)
    return event


def _model_inputs(experiment: Experiment, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays of a data batch the task's step reads: the image, and the label if needed."""
    keys = ("image", "label") if experiment.needs_labels else ("image",)
    return {key: batch[key] for key in keys}


def _batches(experiment: Experiment, start_step: int):
    """Yields this host's ``{'image': [n_jitted_steps, local_batch, H, W, C]}`` batches.

    With ``'label': [n_jitted_steps, local_batch]`` when the task needs labels.
    """
    t = experiment.config.training
    local = t.batch_size // jax.process_count()
    iterator = data.train_iterator(
        experiment.config.data, local, seed=experiment.config.seed, start_step=start_step
    )
    while True:
        group = [_model_inputs(experiment, next(iterator)) for _ in range(t.n_jitted_steps)]
        yield jax.tree.map(lambda *arrays: np.stack(arrays), *group)


class _EvalLoss:
    """The EMA model's eval metrics on successive eval batches (cycling through the split)."""

    def __init__(self, experiment: Experiment, state_shardings: Any):
        self.experiment = experiment
        config = experiment.config
        self.local = config.training.batch_size // jax.process_count()
        self.iterator = None
        batch_sharding = sharding.batch_sharding(experiment.mesh)
        self.fn = progress.announce_first_call(
            jax.jit(experiment.eval_metrics, in_shardings=(state_shardings, batch_sharding, None)),
            "Compiling the eval loss...",
        )
        self.batch_sharding = batch_sharding

    def _next(self):
        for _ in range(2):
            if self.iterator is None:
                self.iterator = data.eval_iterator(
                    self.experiment.config.data, self.local, drop_remainder=True
                )
            try:
                return next(self.iterator)
            except StopIteration:
                self.iterator = None
        raise ValueError("the eval split has fewer examples than one batch")

    def __call__(self, state: TrainState, step: int) -> dict[str, float]:
        inputs = _model_inputs(self.experiment, self._next())
        batch = sharding.global_batch(inputs, self.batch_sharding)
        key = jax.random.fold_in(stream_key(self.experiment.config.seed, "train_eval_loss"), step)
        return {name: float(jnp.mean(v)) for name, v in self.fn(state, batch, key).items()}


def write_samples(
    experiment: Experiment, state: TrainState, step: int, workdir: str, writer
) -> str | None:
    """Samples a grid with the EMA parameters; writes a PNG and a TensorBoard image.

    Non-finite samples are logged as an error and the grid is skipped (returns None) rather
    than stopping a long run: a diverged model also shows in the loss, which stops training,
    and checkpoints are checked on their own; a sampler too coarse for its SDE fails before
    training starts (``FixedGridSampler``'s validation).

    Returns:
      The PNG's path, or None when the grid was skipped.
    """
    key = jax.random.fold_in(stream_key(experiment.config.seed, "snapshot"), step)
    out = experiment.sample_fn(key, state.ema_params)
    x = data.inverse_scaler(experiment.config.data.centered)(np.asarray(out.x))
    path = os.path.join(workdir, "samples", f"step_{step:08d}.png")
    s = experiment.config.sampling
    try:
        images.check_finite(
            x,
            path,
            sampler=images.sampler_label(s.method, s.predictor, s.corrector),
            step=step,
        )
    except images.NonFiniteSamplesError as e:
        logging.error("Skipped the sample grid of step %d: %s", step, e)
        return None
    grid = images.image_grid(x)
    if jax.process_index() == 0:
        images.save_png(path, grid)
    writer.write_images(step, {"samples": grid[None]})
    return path


def _divergence_message(ckpt: checkpoint.Checkpointer, checked: int, step: int) -> str:
    return (
        f"training diverged: the train state was finite at step {checked} and is not at step "
        f"{step}; nothing was saved for step {step}. Newest finite checkpoint: "
        f"{ckpt.describe_latest()}. Lower optim.lr or check the data scaling."
    )


def _restore(
    experiment: Experiment, ckpt: checkpoint.Checkpointer, abstract: Any, state_shardings: Any
) -> tuple[TrainState, bool]:
    """Restores the newest checkpoint (after comparing configs) or initializes the state."""
    t = experiment.config.training
    differences = ckpt.check_config(
        experiment.config, allow_change=t.get("allow_config_change", False)
    )
    if ckpt.latest_step() is None:
        return jax.jit(experiment.init_state, out_shardings=state_shardings)(), False
    try:
        return ckpt.restore(checkpoint.abstract_with_shardings(abstract, state_shardings)), True
    except ValueError as e:  # orbax: other shapes or tree; reported with the config keys
        raise checkpoint.ConfigMismatchError(
            f"{e}; {checkpoint.describe_differences(differences)}. Use a new workdir."
        ) from None


def train(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Trains (or resumes training) the score model that ``config`` describes.

    Args:
      config: an experiment config (see ``configs/``).
      workdir: where checkpoints, TensorBoard metrics and sample grids go.

    Returns:
      The final train state.

    Raises:
      ValueError: for an invalid config, before any compilation;
        ``checkpoint.ConfigMismatchError`` if the workdir's checkpoint was made by a config
        with other data/sde/model keys (unless ``training.allow_config_change``).
      FloatingPointError: when the loss becomes non-finite, naming the step;
        ``checkpoint.NonFiniteStateError`` when the state to save (or the one restored) is
        not finite, naming the steps and the newest finite checkpoint. Saves in flight are
        finished before either propagates.
    """
    experiment = Experiment(config)
    ckpt = checkpoint.Checkpointer(workdir, config.training.max_to_keep)
    try:
        return _train(experiment, ckpt, workdir)
    finally:
        ckpt.close()


def _setup(experiment: Experiment, ckpt: checkpoint.Checkpointer) -> tuple[TrainState, Any, bool]:
    """Derives the state's shardings, then restores the newest checkpoint or initializes.

    Returns:
      The state, its shardings, and whether it was restored.
    """
    mesh = experiment.mesh
    abstract = jax.eval_shape(experiment.init_state)
    state_shardings = sharding.state_shardings(abstract, mesh)
    logging.info("State layout over %s: %s", dict(mesh.shape), sharding.describe(state_shardings))
    state, restored = _restore(experiment, ckpt, abstract, state_shardings)
    step, n_iters = int(state.step), experiment.config.training.n_iters
    if step >= n_iters:
        logging.info("Training already finished at step %d (training.n_iters=%d).", step, n_iters)
    else:
        logging.info("%s at step %d.", "Resuming" if restored else "Starting", step)
    return state, state_shardings, restored


def _compile_step(experiment: Experiment, state_shardings: Any):
    """``step_fn(state, batches) -> (state, metrics)``: ``n_jitted_steps`` steps, jitted once.

    The state is donated; the batches are sharded over the data axis (their axis 1).
    """
    mesh = experiment.mesh
    steps = functools.partial(
        train_steps,
        objective=experiment.task.objective,
        tx=experiment.tx,
        ema_rate=experiment.config.model.ema_rate,
    )
    return jax.jit(
        steps,
        in_shardings=(state_shardings, sharding.batch_sharding(mesh, leading_axes=1)),
        out_shardings=(state_shardings, sharding.replicated(mesh)),
        donate_argnums=0,
    )


def _writers_and_hooks(experiment: Experiment, workdir: str, restored: bool):
    """The metric writer (hyperparameters written on a fresh start) and the periodic hooks.

    ``steps_per_sec`` is written at log steps by :meth:`_Loop._log`, not by a hook.
    """
    config = experiment.config
    t = config.training
    writer = metric_writers.create_default_writer(
        os.path.join(workdir, "tensorboard"), just_logging=jax.process_index() > 0
    )
    if not restored:
        writer.write_hparams(_flat_hparams(config))
    hooks = []
    if t.profile and jax.process_index() == 0:
        hooks.append(periodic_actions.Profile(logdir=workdir, num_profile_steps=3))
    return writer, hooks


@dataclasses.dataclass
class _Loop:
    """One run's loop: the state between calls of the step, and the phases of each call.

    Attributes:
      experiment: the experiment.
      ckpt: its checkpointer.
      workdir: the run's directory.
      state: the train state.
      step_fn: the jitted steps (:func:`_compile_step`).
      writer: the metric writer.
      hooks: the periodic actions, called with the step after every call.
      eval_loss: the eval metrics during training.
      step: the step of ``state``.
      checked: the newest step whose state was checked to be finite.
      pending: metrics not logged yet (on device), from step ``pending_from + 1``.
      pending_from: see ``pending``.
      rate_from: ``(step, time)`` from which ``steps_per_sec`` is measured: the end of the
        first call (its compilation left out), then the previous log step; None before.
      sampled: whether a sample grid was drawn (its sampler compiled) in this run.
    """

    experiment: Experiment
    ckpt: checkpoint.Checkpointer
    workdir: str
    state: TrainState
    step_fn: Any
    writer: Any
    hooks: list
    eval_loss: "_EvalLoss"
    step: int = 0
    checked: int = 0
    pending: list = dataclasses.field(default_factory=list)
    pending_from: int = 0
    rate_from: tuple[int, float] | None = None
    sampled: bool = False

    def __post_init__(self):
        self.step = self.checked = self.pending_from = int(self.state.step)

    def _crossed(self, freq: int) -> bool:
        """Whether the last call crossed a multiple of ``freq`` (0: never)."""
        return bool(freq) and (self.step % freq < self.experiment.config.training.n_jitted_steps)

    def run(self) -> TrainState:
        """Runs the steps up to ``training.n_iters`` (or a preemption); returns the state."""
        t = self.experiment.config.training
        block = must_block_each_step(list(self.experiment.mesh.devices.flat))
        stop = _on_sigterm()
        batches = _batches(self.experiment, self.step)
        batch_sharding = sharding.batch_sharding(self.experiment.mesh, leading_axes=1)
        if self.step >= t.n_iters:
            return self.state
        per_call = f" ({t.n_jitted_steps} steps per call)" if t.n_jitted_steps > 1 else ""
        progress.announce("Compiling the train step%s...", per_call)
        with progress.Progress("train", t.n_iters, initial=self.step) as bar:
            while self.step < t.n_iters:
                with jax.profiler.StepTraceAnnotation("train", step_num=self.step):
                    batch = sharding.global_batch(next(batches), batch_sharding)
                    self.state, metrics = block_if_needed(self.step_fn(self.state, batch), block)
                self.step += t.n_jitted_steps
                self.pending.append(metrics)
                for hook in self.hooks:
                    hook(self.step)
                self._log()
                if self.rate_from is None:
                    self.rate_from = (self.step, time.monotonic())
                bar.update(self.step)
                self._maybe_eval()
                preempted = stop.is_set() or self.ckpt.preemption.reached_preemption(self.step)
                self._maybe_checkpoint(preempted)
                if preempted:
                    logging.warning("Stopped at step %d after a preemption checkpoint.", self.step)
                    break
        self.writer.flush()
        return self.state

    def _log(self) -> None:
        """At log steps (and the last): fetches the pending metrics, checks, writes them."""
        t = self.experiment.config.training
        if not (self._crossed(t.log_freq) or self.step >= t.n_iters):
            return
        fetched = jax.device_get(self.pending)
        losses_by_step = np.concatenate([m["loss"] for m in fetched])
        try:
            _check_finite(losses_by_step, self.pending_from + 1)
        except FloatingPointError as e:
            latest = self.ckpt.describe_latest()
            raise FloatingPointError(f"{e} Newest finite checkpoint: {latest}.") from None
        means = {name: np.concatenate([m[name] for m in fetched]).mean() for name in fetched[0]}
        if self.rate_from is not None and self.step > self.rate_from[0]:
            now = time.monotonic()
            means["steps_per_sec"] = (self.step - self.rate_from[0]) / (now - self.rate_from[1])
            self.rate_from = (self.step, now)
        self.writer.write_scalars(self.step, means)
        self.pending, self.pending_from = [], self.step

    def _maybe_eval(self) -> None:
        """At eval steps: the EMA model's eval metrics on the next eval batch."""
        config = self.experiment.config
        if self._crossed(config.training.eval_freq) and config.eval.enable_loss:
            self.writer.write_scalars(self.step, self.eval_loss(self.state, self.step))

    def _maybe_checkpoint(self, preempted: bool) -> None:
        """At snapshot steps (and the last): saves and samples; else a preemption save."""
        t = self.experiment.config.training
        if self._crossed(t.snapshot_freq) or self.step >= t.n_iters:
            self._save(periodic=True)
            if t.snapshot_sampling and self.experiment.sampler is not None:
                e = self.experiment
                first = "" if self.sampled else ", compiling the sampler first"
                progress.announce(
                    "Sampling %d images at step %d%s...", t.sample_batch_size, self.step, first
                )
                self.sampled = True
                path = write_samples(e, self.state, self.step, self.workdir, self.writer)
                if path is not None:
                    logging.info("Wrote samples of step %d to %s.", self.step, path)
        elif self._crossed(t.snapshot_freq_for_preemption) or preempted:
            self._save(periodic=False)

    def _save(self, periodic: bool) -> None:
        config = self.experiment.config
        kind = "checkpoint" if periodic else "preemption checkpoint"
        progress.announce("Saving the %s of step %d...", kind, self.step)
        try:
            self.ckpt.save(self.step, self.state, periodic=periodic, config=config)
        except checkpoint.NonFiniteStateError:
            message = _divergence_message(self.ckpt, self.checked, self.step)
            raise checkpoint.NonFiniteStateError(message) from None
        self.checked = self.step


def _train(experiment: Experiment, ckpt: checkpoint.Checkpointer, workdir: str) -> TrainState:
    state, state_shardings, restored = _setup(experiment, ckpt)
    step_fn = _compile_step(experiment, state_shardings)
    writer, hooks = _writers_and_hooks(experiment, workdir, restored)
    eval_loss = _EvalLoss(experiment, state_shardings)
    return _Loop(experiment, ckpt, workdir, state, step_fn, writer, hooks, eval_loss).run()


def _flat_hparams(config: ml_collections.ConfigDict) -> dict[str, Any]:
    flat = {}

    def visit(prefix, node):
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, ml_collections.ConfigDict | dict):
                visit(name + ".", value)
            elif isinstance(value, bool | int | float | str):
                flat[name] = value
            elif value is not None:
                flat[name] = str(value)

    visit("", config)
    return flat
