r"""Class-conditional sampling: classifier guidance and classifier-free guidance.

Classifier guidance (paper section 5, eq. 14 and appendix I): the conditional score is

.. math:: \nabla_x \log p_t(x | y) = \nabla_x \log p_t(x) + \nabla_x \log p_t(y | x),

with a time-dependent (noise-conditional) classifier :math:`p_t(y | x)`; a guidance scale
:math:`\lambda` multiplies the second term (1: the paper's; 0: unconditional sampling).

Classifier-free guidance (Ho & Salimans, 2021) uses one model trained with and without the
label. Labels are integers in ``[0, num_classes)``; the null (unconditional) label is
``num_classes``. With weight ``w`` the guided score is

.. math:: \tilde s(x, t) = (1 + w)\, s_\theta(x, t, y) - w\, s_\theta(x, t, \varnothing),

so ``w = 0`` is the plain conditional model and ``w = -1`` the unconditional one (in the
convention :math:`\gamma = 1 + w` of other papers, :math:`\gamma s_c + (1 - \gamma) s_u`).
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sde_jax.array_types import Array, Data, Key, PerExample, ScoreFn
from sde_jax.sampling import SampleOutput
from sde_jax.sdes import SDE, batch_times

ClassifierLogProb = Callable[[Data, PerExample, Array], PerExample]
"""``classifier_log_prob(x, t, labels) -> [batch]``: log p_t(labels | x), one per example.

``t`` holds one time per example (:func:`classifier_guided_score` broadcasts the sampler's
time to the batch before it calls the classifier).
"""

ConditionalScoreFn = Callable[[Data, PerExample, Array], Data]
"""``score_fn(x, t, labels) -> score``; ``labels`` int ``[batch]``, the null label included."""


def classifier_guided_score(
    score_fn: ScoreFn,
    classifier_log_prob: ClassifierLogProb,
    labels: Array,
    scale: float | Array = 1.0,
) -> ScoreFn:
    r"""The score plus ``scale`` times :math:`\nabla_x \log p_t(y | x)` (paper eq. 14).

    The gradient is that of the batch sum, which is per example as long as the classifier
    treats examples independently (no batch statistics).

    Args:
      score_fn: the unconditional ``score_fn(x, t)``.
      classifier_log_prob: ``classifier_log_prob(x, t, labels) -> [batch]``.
      labels: int ``[batch]``, the class to sample for each example.
      scale: the guidance scale (0: unconditional).

    Returns:
      A plain ``score_fn(x, t)``.
    """

    def guided(x: Data, t: Array) -> Data:
        t = batch_times(x, t)

        def total_log_prob(x):
            return jnp.sum(classifier_log_prob(x, t, labels))

        return score_fn(x, t) + scale * jax.grad(total_log_prob)(x)

    return guided


def classifier_free_score(
    score_fn: ConditionalScoreFn, labels: Array, scale: float | Array, null_label: int
) -> ScoreFn:
    r"""The classifier-free guided score :math:`(1 + w) s(x, t, y) - w\, s(x, t, \varnothing)`.

    The conditional and unconditional evaluations run as one call on a doubled batch.

    Args:
      score_fn: the conditional model ``score_fn(x, t, labels)``.
      labels: int ``[batch]`` in ``[0, null_label)``.
      scale: the guidance weight ``w`` (0: conditional model; -1: unconditional).
      null_label: the label of the unconditional model, ``num_classes`` by convention.

    Returns:
      A plain ``score_fn(x, t)``.

    Raises:
      ValueError: if ``null_label`` is not a non-negative integer.
    """
    if isinstance(null_label, bool) or not isinstance(null_label, int) or null_label < 0:
        raise ValueError(f"null_label must be a non-negative int, got {null_label!r}.")

    def guided(x: Data, t: Array) -> Data:
        t = batch_times(x, t)
        batch = x.shape[0]
        null = jnp.full_like(labels, null_label)
        both = score_fn(
            jnp.concatenate([x, x]), jnp.concatenate([t, t]), jnp.concatenate([labels, null])
        )
        conditional, unconditional = both[:batch], both[batch:]
        return (1.0 + scale) * conditional - scale * unconditional

    return guided


def classifier_log_prob_fn(model: nn.Module, params: Any, sde: SDE) -> ClassifierLogProb:
    """The :data:`ClassifierLogProb` of a noise-conditional classifier: log-softmax at ``labels``.

    Args:
      model: the noise-conditional classifier, ``model.apply({'params': p}, x, sigmas,
        train=False) -> logits`` (e.g. ``sde_jax.models.wideresnet.WideResNet``; its training
        loss is :func:`sde_jax.classifier.noisy_classifier_loss`).
      params: its parameters (the EMA parameters of a checkpoint).
      sde: the SDE it was trained with; ``t`` maps to the noise level ``sde.marginal_std(t)``.

    Returns:
      A pure function of ``x [batch, ...]``, ``t [batch]`` (a scalar is shared by the batch)
      and int ``labels [batch]``; differentiable in ``x`` (its gradient is the guidance term
      of :func:`classifier_guided_score`).
    """

    def classifier_log_prob(x: Data, t: PerExample, labels: Array) -> PerExample:
        t = batch_times(x, t)
        logits = model.apply({"params": params}, x, sde.marginal_std(t), train=False)
        log_probs = jax.nn.log_softmax(logits, axis=-1)
        labels = jnp.asarray(labels, jnp.int32)
        return jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]

    return classifier_log_prob


def _check_labels(labels: Any, batch: int) -> None:
    shape = tuple(jnp.shape(labels))
    if shape != (batch,):
        raise ValueError(f"labels must have shape ({batch},), got {shape}.")
    if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
        raise ValueError(f"labels must be integers, got dtype {jnp.result_type(labels)}.")


def get_conditional_sampler(sampler: Callable[[Key, ScoreFn], SampleOutput]):
    """A class-conditional sampler with classifier guidance, for any sampler.

    The original's ``get_pc_conditional_sampler``: ``sampler`` (a ``FixedGridSampler`` or an
    ``AdaptiveODESampler``) run on :func:`classifier_guided_score`.
    ``experiment.build.conditional_sampler_from_config`` builds one from a config's sampling
    section.

    Args:
      sampler: ``sampler(key, score_fn) -> SampleOutput`` with a ``shape`` attribute
        ``(batch, ...)``.

    Returns:
      A pure ``sampler(key, score_fn, classifier_log_prob, labels, scale=1.0) ->
      SampleOutput(x, nfe, success)``; ``labels`` int ``[batch]``; ``nfe`` counts guided
      evaluations (each one score evaluation and one classifier gradient).

    Raises:
      TypeError: if ``sampler`` is not callable or has no ``shape``.
      ValueError: (at call time) for labels of the wrong shape.
    """
    shape = getattr(sampler, "shape", None)
    if not callable(sampler) or not isinstance(shape, tuple) or not shape:
        raise TypeError(
            "sampler must be a sampler(key, score_fn) with a shape (batch, ...), such as "
            f"sampling.FixedGridSampler or AdaptiveODESampler; got {sampler!r}."
        )

    def conditional(
        key: Key,
        score_fn: ScoreFn,
        classifier_log_prob: ClassifierLogProb,
        labels: Array,
        scale: float | Array = 1.0,
    ) -> SampleOutput:
        _check_labels(labels, shape[0])
        return sampler(key, classifier_guided_score(score_fn, classifier_log_prob, labels, scale))

    return conditional
