"""What ``training.task`` trains: one object per task, carrying its objective and eval metrics.

- :class:`ScoreTask` (``'score'``): the score model by denoising score matching
  (``sde_jax.losses``); with ``num_classes`` set, a class-conditional NCSN++ / DDPM++ / DDPM,
  its labels replaced by the null label ``num_classes`` with probability ``label_dropout``
  (classifier-free guidance, Ho and Salimans 2022).
- :class:`ClassifierTask` (``'classifier'``): the noise-conditional Wide-ResNet classifier, by
  cross-entropy on data perturbed by the SDE (``sde_jax.classifier``).

Both have the same interface: ``objective(params, batch, key) -> (loss, metrics)``, the scalar
the train step minimizes (network in training mode) and scalar metrics, and
``eval_metrics(params, batch, key) -> {name: [batch]}``, per-example metrics of the network in
eval mode. ``sde_jax.experiment.build.build_task`` builds them from the config once; the train
step (``sde_jax.training.step.train_step``) takes the objective and knows no task.
"""

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from sde_jax import classifier
from sde_jax.array_types import Array, Key, ScoreFn
from sde_jax.experiment.rng import STEP_STREAMS, split_named
from sde_jax.models import get_score_fn
from sde_jax.sdes import SDE

# loss_fn(key, score_fn, x) -> LossOutput(loss, per_example); see sde_jax.losses.get_loss_fn.
LossFn = Callable[[Key, ScoreFn, Array], Any]
Batch = Mapping[str, Array]

CLASSIFIER_EVAL_TIMES = (0.0, 0.25, 0.5, 0.75, 1.0)
"""Fractions of ``[eps, T]`` at which the classifier's eval accuracy is reported."""


def network_score_fn(
    model: nn.Module,
    sde: SDE,
    params: Any,
    *,
    dropout_key: Key | None = None,
    class_labels: Array | None = None,
    **score_kwargs: Any,
) -> ScoreFn:
    """The score function of ``model`` with ``params``; training mode if given a dropout key.

    Args:
      model: the score network.
      sde: the SDE it was trained with.
      params: its parameters.
      dropout_key: the dropout key of training mode; None runs the network in eval mode.
      class_labels: int ``[batch]`` conditioning a class-conditional network; None leaves the
        network's default (the null label of a conditional one).
      **score_kwargs: the parameterization's keywords (``continuous``, ``num_scales`` ...),
        passed to ``sde_jax.models.get_score_fn``.
    """
    if dropout_key is None:
        apply = model.apply
    else:

        def apply(variables, x, labels, train, **kwargs):
            del train  # the network runs in training mode, with dropout
            rngs = {"dropout": dropout_key}
            return model.apply(variables, x, labels, train=True, rngs=rngs, **kwargs)

    conditional = class_labels is not None
    score_fn = get_score_fn(sde, apply, params, class_conditional=conditional, **score_kwargs)
    return (lambda x, t: score_fn(x, t, class_labels)) if conditional else score_fn


def drop_labels(key: Key, labels: Array, rate: float, null_label: int) -> Array:
    """Replaces each label by ``null_label`` with probability ``rate`` (label dropout).

    Classifier-free guidance (Ho & Salimans, 2022) trains one network as both the
    conditional and the unconditional model by dropping the label of a fraction of examples.
    """
    dropped = jax.random.bernoulli(key, rate, labels.shape)
    return jnp.where(dropped, jnp.asarray(null_label, labels.dtype), labels)


@dataclasses.dataclass(frozen=True, eq=False)
class ScoreTask:
    """The score model, trained by denoising score matching.

    Attributes:
      model: the score network.
      sde: the forward SDE.
      loss_fn: ``loss_fn(key, score_fn, x) -> LossOutput`` (``sde_jax.losses.get_loss_fn``).
      score_kwargs: the score parameterization's keywords (``continuous``, ``num_scales``
        ...), passed through to ``sde_jax.models.get_score_fn``.
      num_classes: classes of a class-conditional network (its null label), or None.
      label_dropout: probability of replacing a training label by the null label.
    """

    name: ClassVar[str] = "score"

    model: nn.Module
    sde: SDE
    loss_fn: LossFn
    score_kwargs: Mapping[str, Any]
    num_classes: int | None = None
    label_dropout: float = 0.0

    def score_fn(
        self, params: Any, *, dropout_key: Key | None = None, class_labels: Array | None = None
    ) -> ScoreFn:
        """:func:`network_score_fn` of the task's network (eval mode without a dropout key)."""
        return network_score_fn(
            self.model,
            self.sde,
            params,
            dropout_key=dropout_key,
            class_labels=class_labels,
            **self.score_kwargs,
        )

    def objective(self, params: Any, batch: Batch, key: Key) -> tuple[Array, dict[str, Array]]:
        """The loss on ``batch['image']`` ``[batch, H, W, C]`` (network in training mode).

        A class-conditional network sees ``batch['label']``, each replaced by the null label
        with probability ``label_dropout``. The key is split into the streams of
        ``rng.STEP_STREAMS`` (loss, dropout, labels).
        """
        keys = split_named(key, STEP_STREAMS)
        labels = None
        if self.num_classes is not None:
            labels = batch["label"]
            if self.label_dropout > 0:
                labels = drop_labels(keys["labels"], labels, self.label_dropout, self.num_classes)
        score_fn = self.score_fn(params, dropout_key=keys["dropout"], class_labels=labels)
        return self.loss_fn(keys["loss"], score_fn, batch["image"]).loss, {}

    def eval_metrics(self, params: Any, batch: Batch, key: Key) -> dict[str, Array]:
        """``{'eval_loss': [batch]}``: the per-example loss (eval mode, no label dropout)."""
        labels = None if self.num_classes is None else batch["label"]
        score_fn = self.score_fn(params, class_labels=labels)
        return {"eval_loss": self.loss_fn(key, score_fn, batch["image"]).per_example}


@dataclasses.dataclass(frozen=True, eq=False)
class ClassifierTask:
    """The noise-conditional classifier, by cross-entropy on noisy data.

    Attributes:
      model: the classifier, ``model.apply(variables, x, sigmas, train) -> logits``.
      sde: the forward SDE whose marginals perturb the data.
      eps: the smallest time of ``t ~ U(eps, T)``.
    """

    name: ClassVar[str] = "classifier"

    model: nn.Module
    sde: SDE
    eps: float

    def objective(self, params: Any, batch: Batch, key: Key) -> tuple[Array, dict[str, Array]]:
        """The cross-entropy on noisy ``batch['image']`` of ``batch['label']`` (training mode).

        The loss is :func:`sde_jax.classifier.noisy_classifier_loss`; the metrics hold its
        ``accuracy`` on the noisy batch.
        """
        keys = split_named(key, STEP_STREAMS)

        def logits_fn(x, sigmas):
            rngs = {"dropout": keys["dropout"]}
            return self.model.apply({"params": params}, x, sigmas, train=True, rngs=rngs)

        out = classifier.noisy_classifier_loss(
            keys["loss"], logits_fn, self.sde, batch["image"], batch["label"], self.eps
        )
        return out.loss, {"accuracy": jnp.mean(out.correct)}

    def eval_metrics(self, params: Any, batch: Batch, key: Key) -> dict[str, Array]:
        """The classifier's per-example metrics on noisy eval data (eval mode).

        Returns:
          ``eval_loss`` and ``eval_accuracy`` at ``t ~ U(eps, T)`` as in training, and
          ``eval_accuracy/t=F`` at the fixed times ``eps + F (T - eps)`` for each fraction F
          of :data:`CLASSIFIER_EVAL_TIMES` (each ``[batch]``).
        """

        def logits_fn(x, sigmas):
            return self.model.apply({"params": params}, x, sigmas, train=False)

        loss_key, fixed_key = jax.random.split(key)
        x, labels, eps = batch["image"], batch["label"], self.eps
        out = classifier.noisy_classifier_loss(loss_key, logits_fn, self.sde, x, labels, eps)
        times = tuple(eps + f * (self.sde.T - eps) for f in CLASSIFIER_EVAL_TIMES)
        hits = classifier.accuracy_at_times(fixed_key, logits_fn, self.sde, x, labels, times)
        metrics = {"eval_loss": out.per_example, "eval_accuracy": out.correct}
        for fraction, row in zip(CLASSIFIER_EVAL_TIMES, hits, strict=True):
            metrics[f"eval_accuracy/t={fraction:.2f}"] = row
        return metrics


Task = ScoreTask | ClassifierTask
"""A task object: :class:`ScoreTask` or :class:`ClassifierTask`."""
