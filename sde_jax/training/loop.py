"""The training loop: config in, checkpoints, metrics and sample grids out.

``train(config, workdir)`` validates the config before anything compiles, builds the mesh,
model, SDE, optimizer and loss of the task (``training.task``: ``'score'``, the score model,
optionally class-conditional; ``'classifier'``, the noise-conditional classifier of
``sde_jax.classifier``), restores the newest checkpoint or initializes the state
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

from sde_jax import data, images, losses, sharding
from sde_jax.experiment import build
from sde_jax.models import get_score_fn
from sde_jax.runtime import block_if_needed, must_block_each_step
from sde_jax.training import checkpoint, options, tasks
from sde_jax.training import step as step_lib
from sde_jax.training.state import TrainState, create_state
from sde_jax.training.step import network_score_fn, train_steps


class Experiment:
    """The objects a config describes, built once and validated before compilation.

    Attributes:
      config: the full config.
      task: ``training.task``, ``'score'`` or ``'classifier'``.
      num_classes: classes of a class-conditional score model or of the classifier, or None.
      sde: the forward SDE.
      model: the score network or the classifier.
      tx: the optimizer.
      loss_fn: ``loss_fn(key, score_fn, x) -> LossOutput`` (score task; None otherwise).
      step_fn: the task's train step (see ``sde_jax.training.step``).
      step_kwargs: its keyword arguments (model, SDE, loss ...) but ``tx`` and ``ema_rate``.
      mesh: the device mesh.
      image_shape: ``(H, W, C)``.
      sampler: the snapshot sampler (score task; None otherwise).
    """

    def __init__(self, config: ml_collections.ConfigDict, devices: list | None = None):
        self.config = config
        options.check_training_options(config.training)
        data.validate(config.data)
        self.task, self.num_classes = tasks.check_task_options(config)
        self.sde = build.build_sde(config.sde)
        self.model = build.build_model_from_config(config)
        self.tx = build.build_optimizer(config.optim)
        t = config.training
        self.mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, devices)
        sharding.check_batch_size(t.batch_size, self.mesh)
        self.image_shape = data.image_shape(config.data)
        self.score_kwargs = build.score_kwargs(config)
        if self.task == "classifier":
            self.loss_fn = self.sampler = None
            self.step_fn = step_lib.classifier_train_step
            self.step_kwargs = {"model": self.model, "sde": self.sde, "eps": t.eps}
            return
        self.loss_fn = losses.get_loss_fn(
            self.sde,
            continuous=t.continuous,
            reduce_mean=t.reduce_mean,
            likelihood_weighting=t.likelihood_weighting,
            importance_sampling=t.importance_sampling,
            eps=t.eps,
            num_scales=config.sde.num_scales,
        )
        build.check_image_size(config)
        self.sampler = build.get_sampler(
            self.sde, config.sampling, (t.sample_batch_size, *self.image_shape)
        )
        self.step_fn = step_lib.train_step
        self.step_kwargs = {
            "model": self.model,
            "sde": self.sde,
            "loss_fn": self.loss_fn,
            "num_classes": self.num_classes,
            **self.score_kwargs,
        }
        if self.num_classes is not None:
            self.step_kwargs["label_dropout"] = t.get("label_dropout", 0.0)

    @property
    def needs_labels(self) -> bool:
        """Whether batches must carry ``'label'`` (classifier or class-conditional model)."""
        return self.num_classes is not None

    def init_state(self) -> TrainState:
        """A fresh state from ``config.seed`` (call under jit with output shardings)."""
        init_key, state_key = jax.random.split(jax.random.key(self.config.seed))
        x = jnp.zeros((1, *self.image_shape))
        params = self.model.init(init_key, x, jnp.ones((1,)), train=False)["params"]
        return create_state(params, self.tx, state_key)

    def score_fn(self, params: Any, class_labels: Any = None):
        """The score function of the network with ``params``, in eval mode.

        A class-conditional network is conditioned on ``class_labels`` (int ``[batch]``);
        None gives its unconditional (null-label) score.
        """
        if self.task != "score":
            raise ValueError(f"training.task={self.task!r} has no score function.")
        return network_score_fn(
            self.model, self.sde, params, class_labels=class_labels, **self.score_kwargs
        )

    def conditional_score_fn(self, params: Any):
        """``score_fn(x, t, labels)`` of a class-conditional network with ``params`` (eval mode).

        Raises:
          ValueError: if the model is not a class-conditional score model.
        """
        if self.task != "score" or self.num_classes is None:
            raise ValueError("model.num_classes is None: the score model is unconditional.")
        return get_score_fn(
            self.sde, self.model.apply, params, class_conditional=True, **self.score_kwargs
        )

    def snapshot_labels(self) -> Any:
        """The classes of the snapshot grid (cycling 0, 1, ...), or None if unconditional."""
        if self.num_classes is None:
            return None
        return jnp.arange(self.config.training.sample_batch_size) % self.num_classes

    @functools.cached_property
    def sample_fn(self):
        """``sample_fn(key, params) -> SampleOutput``, jitted once per experiment.

        A class-conditional model draws the classes of :meth:`snapshot_labels` (no guidance).
        """
        if self.sampler is None:
            raise ValueError(f"training.task={self.task!r} does not sample.")
        labels = self.snapshot_labels()
        return jax.jit(lambda key, params: self.sampler(key, self.score_fn(params, labels)))

    def eval_metrics(self, state: TrainState, batch: dict, key: Any) -> dict[str, Any]:
        """Per-example eval metrics of the EMA parameters on ``batch`` (jit it)."""
        if self.task == "classifier":
            metrics = step_lib.classifier_eval_step(state, batch, key, **self.step_kwargs)
            return {f"eval_{name}": value for name, value in metrics.items()}
        kwargs = {k: v for k, v in self.step_kwargs.items() if k != "label_dropout"}
        return {"eval_loss": step_lib.eval_step(state, batch, key, **kwargs)}


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
        self.fn = jax.jit(
            experiment.eval_metrics, in_shardings=(state_shardings, batch_sharding, None)
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
        key = jax.random.fold_in(jax.random.key(self.experiment.config.seed + 1), step)
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
    key = jax.random.fold_in(jax.random.key(experiment.config.seed + 2), step)
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


def _train(experiment: Experiment, ckpt: checkpoint.Checkpointer, workdir: str) -> TrainState:
    config = experiment.config
    t = config.training
    mesh = experiment.mesh
    abstract = jax.eval_shape(experiment.init_state)
    state_shardings = sharding.state_shardings(abstract, mesh)
    logging.info("State layout over %s: %s", dict(mesh.shape), sharding.describe(state_shardings))
    state, restored = _restore(experiment, ckpt, abstract, state_shardings)
    step = int(state.step)
    logging.info("%s at step %d.", "Resuming" if restored else "Starting", step)

    step_fn = jax.jit(
        functools.partial(
            train_steps,
            step_fn=experiment.step_fn,
            tx=experiment.tx,
            ema_rate=config.model.ema_rate,
            **experiment.step_kwargs,
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
    checked = step  # the newest step whose state was checked to be finite
    k = t.n_jitted_steps

    def crossed(freq: int) -> bool:
        return bool(freq) and (step % freq < k)

    def save(periodic: bool) -> None:
        nonlocal checked
        try:
            ckpt.save(step, state, periodic=periodic, config=config)
        except checkpoint.NonFiniteStateError:
            raise checkpoint.NonFiniteStateError(_divergence_message(ckpt, checked, step)) from None
        checked = step

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
            try:
                _check_finite(losses_by_step, pending_from + 1)
            except FloatingPointError as e:
                latest = ckpt.describe_latest()
                raise FloatingPointError(f"{e} Newest finite checkpoint: {latest}.") from None
            writer.write_scalars(
                step,
                {name: np.concatenate([m[name] for m in fetched]).mean() for name in fetched[0]},
            )
            pending, pending_from = [], step
        if crossed(t.eval_freq) and config.eval.enable_loss:
            writer.write_scalars(step, eval_loss(state, step))
        preempted = stop.is_set() or ckpt.preemption.reached_preemption(step)
        if crossed(t.snapshot_freq) or step >= t.n_iters:
            save(periodic=True)
            if t.snapshot_sampling and experiment.sampler is not None:
                path = write_samples(experiment, state, step, workdir, writer)
                if path is not None:
                    logging.info("Wrote samples of step %d to %s.", step, path)
        elif crossed(t.snapshot_freq_for_preemption) or preempted:
            save(periodic=False)
        if preempted:
            logging.warning("Stopped at step %d after a preemption checkpoint.", step)
            break
    writer.flush()
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
