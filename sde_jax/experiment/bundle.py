"""The experiment bundle: the objects a config describes, built once and validated.

:class:`Experiment` is what training, evaluation and the CLI commands share: the SDE, the
network, the optimizer, the task object (:mod:`sde_jax.experiment.tasks`), the mesh and the
snapshot sampler, built by :mod:`sde_jax.experiment.build` before anything compiles.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from sde_jax import data, sharding
from sde_jax.experiment import build, rng
from sde_jax.experiment.state import TrainState, create_state
from sde_jax.experiment.tasks import ScoreTask
from sde_jax.models import get_score_fn


class Experiment:
    """The objects a config describes, built once and validated before compilation.

    Attributes:
      config: the full config.
      task: the task object, :class:`~sde_jax.experiment.tasks.ScoreTask` or
        :class:`~sde_jax.experiment.tasks.ClassifierTask` (its objective and eval metrics).
      task_name: ``training.task``, ``'score'`` or ``'classifier'``.
      num_classes: classes of a class-conditional score model or of the classifier, or None.
      sde: the forward SDE.
      model: the score network or the classifier.
      tx: the optimizer.
      score_kwargs: the score parameterization's keywords (``sde_jax.models.get_score_fn``).
      loss_fn: ``loss_fn(key, score_fn, x) -> LossOutput`` (score task; None otherwise).
      mesh: the device mesh.
      image_shape: ``(H, W, C)``.
      sampler: the snapshot sampler (score task; None otherwise).
    """

    def __init__(self, config: ml_collections.ConfigDict, devices: list | None = None):
        self.config = config
        build.check_training_options(config.training)
        data.validate(config.data)
        labeled = config.model.get("num_classes") is not None
        data_classes = data.num_classes(config.data) if labeled else None
        self.task_name, self.num_classes = build.check_task_options(config, data_classes)
        self.sde = build.build_sde(config.sde)
        self.model = build.build_model_from_config(config)
        self.tx = build.build_optimizer(config.optim)
        t = config.training
        self.score_kwargs = build.score_kwargs(config)
        self.task = build.build_task(config, self.sde, self.model, self.score_kwargs)
        self.mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, devices)
        sharding.check_batch_size(t.batch_size, self.mesh)
        self.image_shape = data.image_shape(config.data)
        self.loss_fn = self.sampler = None
        if isinstance(self.task, ScoreTask):
            self.loss_fn = self.task.loss_fn
            build.check_image_size(config)
            self.sampler = build.get_sampler(
                self.sde, config.sampling, (t.sample_batch_size, *self.image_shape)
            )

    @property
    def needs_labels(self) -> bool:
        """Whether batches must carry ``'label'`` (classifier or class-conditional model)."""
        return self.num_classes is not None

    def init_state(self) -> TrainState:
        """A fresh state from ``config.seed`` (call under jit with output shardings).

        The parameters come from the seed's ``'init'`` stream, the state's key from its
        ``'train'`` stream (:mod:`sde_jax.experiment.rng`).
        """
        x = jnp.zeros((1, *self.image_shape))
        init_key = rng.stream_key(self.config.seed, "init")
        params = self.model.init(init_key, x, jnp.ones((1,)), train=False)["params"]
        return create_state(params, self.tx, rng.stream_key(self.config.seed, "train"))

    def score_fn(self, params: Any, class_labels: Any = None):
        """The score function of the network with ``params``, in eval mode.

        A class-conditional network is conditioned on ``class_labels`` (int ``[batch]``);
        None gives its unconditional (null-label) score.
        """
        if not isinstance(self.task, ScoreTask):
            raise ValueError(f"training.task={self.task_name!r} has no score function.")
        return self.task.score_fn(params, class_labels=class_labels)

    def conditional_score_fn(self, params: Any):
        """``score_fn(x, t, labels)`` of a class-conditional network with ``params`` (eval mode).

        Raises:
          ValueError: if the model is not a class-conditional score model.
        """
        if not isinstance(self.task, ScoreTask) or self.num_classes is None:
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
            raise ValueError(f"training.task={self.task_name!r} does not sample.")
        labels = self.snapshot_labels()
        return jax.jit(lambda key, params: self.sampler(key, self.score_fn(params, labels)))

    def eval_metrics(self, state: TrainState, batch: dict, key: Any) -> dict[str, Any]:
        """Per-example eval metrics of the EMA parameters on ``batch`` (jit it)."""
        return self.task.eval_metrics(state.ema_params, batch, key)
