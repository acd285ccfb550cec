"""The training loop: config in, checkpoints, metrics and sample grids out.

``train(config, workdir)`` validates the config before anything compiles, builds the mesh,
model, SDE, optimizer and loss, restores the newest checkpoint or initializes the state
straight into its sharding, then runs the jitted (donated) step. Metrics leave the device
only at log steps; a non-finite loss stops training with an error naming the step. SIGTERM
(or JAX's preemption notice on multi-host jobs) triggers a checkpoint and a clean stop.
"""

import functools
import os
import signal
import threading
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions

from sde_jax import builders, data, images, losses, sampling
from sde_jax.platform import block_if_needed, must_block_each_step
from sde_jax.training import checkpoint, sharding
from sde_jax.training.state import TrainState, create_state
from sde_jax.training.step import eval_step, network_score_fn, train_steps


class Experiment:
    """The objects a config describes, built once and validated before compilation.

    Attributes:
      config: the full config.
      sde: the forward SDE.
      model: the score network.
      tx: the optimizer.
      loss_fn: ``loss_fn(key, score_fn, x) -> LossOutput``.
      mesh: the device mesh.
      image_shape: ``(H, W, C)``.
    """

    def __init__(self, config: ml_collections.ConfigDict, devices: list | None = None):
        self.config = config
        data.validate(config.data)
        self.sde = builders.build_sde(config.sde)
        self.model = builders.build_model_from_config(config)
        self.tx = builders.build_optimizer(config.optim)
        t = config.training
        self.loss_fn = losses.get_loss_fn(
            self.sde,
            continuous=t.continuous,
            reduce_mean=t.reduce_mean,
            likelihood_weighting=t.likelihood_weighting,
            importance_sampling=t.importance_sampling,
            eps=t.eps,
            num_scales=config.sde.num_scales,
        )
        self.mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, devices)
        sharding.check_batch_size(t.batch_size, self.mesh)
        self.image_shape = data.image_shape(config.data)
        builders.check_image_size(config)
        self.sampler = sampling.get_sampler(
            self.sde, config.sampling, (t.sample_batch_size, *self.image_shape)
        )
        self.score_kwargs = {"continuous": t.continuous, "num_scales": config.sde.num_scales}

    def init_state(self) -> TrainState:
        """A fresh state from ``config.seed`` (call under jit with output shardings)."""
        init_key, state_key = jax.random.split(jax.random.key(self.config.seed))
        x = jnp.zeros((1, *self.image_shape))
        params = self.model.init(init_key, x, jnp.ones((1,)), train=False)["params"]
        return create_state(params, self.tx, state_key)

    def score_fn(self, params: Any):
        """The score function of the network with ``params``, in eval mode."""
        return network_score_fn(self.model, self.sde, params, **self.score_kwargs)

    @functools.cached_property
    def sample_fn(self):
        """``sample_fn(key, params) -> SampleOutput``, jitted once per experiment."""
        return jax.jit(lambda key, params: self.sampler(key, self.score_fn(params)))


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


def _batches(experiment: Experiment, start_step: int):
    """Yields this host's ``{'image': [n_jitted_steps, local_batch, H, W, C]}`` batches."""
    t = experiment.config.training
    local = t.batch_size // jax.process_count()
    iterator = data.train_iterator(
        experiment.config.data, local, seed=experiment.config.seed, start_step=start_step
    )
    while True:
        group = [next(iterator)["image"] for _ in range(t.n_jitted_steps)]
        yield {"image": np.stack(group)}


class _EvalLoss:
    """The EMA model's loss on successive eval batches (cycling through the split)."""

    def __init__(self, experiment: Experiment, state_shardings: Any):
        self.experiment = experiment
        config = experiment.config
        self.local = config.training.batch_size // jax.process_count()
        self.iterator = None
        batch_sharding = sharding.batch_sharding(experiment.mesh)
        self.fn = jax.jit(
            functools.partial(
                eval_step,
                model=experiment.model,
                sde=experiment.sde,
                loss_fn=experiment.loss_fn,
                **experiment.score_kwargs,
            ),
            in_shardings=(state_shardings, batch_sharding, None),
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

    def __call__(self, state: TrainState, step: int) -> float:
        batch = sharding.global_batch({"image": self._next()["image"]}, self.batch_sharding)
        key = jax.random.fold_in(jax.random.key(self.experiment.config.seed + 1), step)
        return float(jnp.mean(self.fn(state, batch, key)))


def write_samples(
    experiment: Experiment, state: TrainState, step: int, workdir: str, writer
) -> str:
    """Samples a grid with the EMA parameters; writes a PNG and a TensorBoard image."""
    key = jax.random.fold_in(jax.random.key(experiment.config.seed + 2), step)
    out = experiment.sample_fn(key, state.ema_params)
    x = data.inverse_scaler(experiment.config.data.centered)(np.asarray(out.x))
    grid = images.image_grid(x)
    path = os.path.join(workdir, "samples", f"step_{step:08d}.png")
    if jax.process_index() == 0:
        images.save_png(path, grid)
    writer.write_images(step, {"samples": grid[None]})
    return path


def train(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Trains (or resumes training) the score model that ``config`` describes.

    Args:
      config: an experiment config (see ``configs/``).
      workdir: where checkpoints, TensorBoard metrics and sample grids go.

    Returns:
      The final train state.

    Raises:
      ValueError: for an invalid config, before any compilation.
      FloatingPointError: when the loss becomes non-finite, naming the step.
    """
    experiment = Experiment(config)
    t = config.training
    mesh = experiment.mesh
    abstract = jax.eval_shape(experiment.init_state)
    state_shardings = sharding.state_shardings(abstract, mesh)
    logging.info("State layout over %s: %s", dict(mesh.shape), sharding.describe(state_shardings))
    ckpt = checkpoint.Checkpointer(workdir, t.max_to_keep)
    state, restored = ckpt.restore_or_init(
        checkpoint.abstract_with_shardings(abstract, state_shardings),
        jax.jit(experiment.init_state, out_shardings=state_shardings),
    )
    step = int(state.step)
    logging.info("%s at step %d.", "Resuming" if restored else "Starting", step)

    step_fn = jax.jit(
        functools.partial(
            train_steps,
            model=experiment.model,
            sde=experiment.sde,
            loss_fn=experiment.loss_fn,
            tx=experiment.tx,
            ema_rate=config.model.ema_rate,
            **experiment.score_kwargs,
        ),
        in_shardings=(state_shardings, sharding.batch_sharding(mesh, leading_axes=1)),
        out_shardings=(state_shardings, sharding.replicated(mesh)),
        donate_argnums=0,
    )
    batch_sharding = sharding.batch_sharding(mesh, leading_axes=1)
    writer = metric_writers.create_default_writer(
        os.path.join(workdir, "tensorboard"), just_logging=jax.process_index() > 0
    )
    if not restored:
        writer.write_hparams(_flat_hparams(config))
    report = periodic_actions.ReportProgress(num_train_steps=t.n_iters, writer=writer)
    hooks = [report]
    if t.profile and jax.process_index() == 0:
        hooks.append(periodic_actions.Profile(logdir=workdir, num_profile_steps=3))
    eval_loss = _EvalLoss(experiment, state_shardings)
    block = must_block_each_step(list(mesh.devices.flat))
    stop = _on_sigterm()
    batches = _batches(experiment, step)
    pending, pending_from = [], step
    k = t.n_jitted_steps

    def crossed(freq: int) -> bool:
        return bool(freq) and (step % freq < k)

    while step < t.n_iters:
        with jax.profiler.StepTraceAnnotation("train", step_num=step):
            batch = sharding.global_batch(next(batches), batch_sharding)
            state, metrics = block_if_needed(step_fn(state, batch), block)
        step += k
        pending.append(metrics)
        for hook in hooks:
            hook(step)
        if crossed(t.log_freq) or step >= t.n_iters:
            fetched = jax.device_get(pending)
            losses_by_step = np.concatenate([m["loss"] for m in fetched])
            _check_finite(losses_by_step, pending_from + 1)
            grad_norms = np.concatenate([m["grad_norm"] for m in fetched])
            writer.write_scalars(
                step, {"loss": losses_by_step.mean(), "grad_norm": grad_norms.mean()}
            )
            pending, pending_from = [], step
        if crossed(t.eval_freq) and config.eval.enable_loss:
            writer.write_scalars(step, {"eval_loss": eval_loss(state, step)})
        preempted = stop.is_set() or ckpt.preemption.reached_preemption(step)
        if crossed(t.snapshot_freq) or step >= t.n_iters:
            ckpt.save(step, state, periodic=True)
            if t.snapshot_sampling:
                path = write_samples(experiment, state, step, workdir, writer)
                logging.info("Wrote samples of step %d to %s.", step, path)
        elif crossed(t.snapshot_freq_for_preemption) or preempted:
            ckpt.save(step, state, periodic=False)
        if preempted:
            logging.warning("Stopped at step %d after a preemption checkpoint.", step)
            break
    writer.flush()
    ckpt.close()
    return state


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
