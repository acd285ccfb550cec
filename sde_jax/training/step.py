"""The pure training and evaluation steps (jitted and sharded by the caller).

One update rule, :func:`apply_objective`, serves every task (``training.task``): the score
model (:func:`train_step`, denoising score matching, optionally class-conditional with label
dropout for classifier-free guidance) and the noise-conditional classifier
(:func:`classifier_train_step`, cross-entropy on noisy data).
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from sde_jax import classifier
from sde_jax.array_types import Array, Key, ScoreFn
from sde_jax.models import get_score_fn
from sde_jax.sdes import SDE
from sde_jax.training.state import TrainState, update_ema

# loss_fn(key, score_fn, x) -> LossOutput(loss, per_example); see sde_jax.losses.get_loss_fn.
LossFn = Callable[[Key, ScoreFn, Array], Any]
# objective(params, key) -> (loss, metrics): the scalar to minimize and scalar metrics.
Objective = Callable[[Any, Key], tuple[Array, dict[str, Array]]]

CLASSIFIER_EVAL_TIMES = (0.0, 0.25, 0.5, 0.75, 1.0)
"""Fractions of ``[eps, T]`` at which the classifier's eval accuracy is reported."""


def network_score_fn(
    model: nn.Module,
    sde: SDE,
    params: Any,
    *,
    continuous: bool,
    num_scales: int,
    scale_by_sigma: bool = False,
    dropout_key: Key | None = None,
    class_labels: Array | None = None,
) -> ScoreFn:
    """The score function of ``model`` with ``params``; training mode if given a dropout key.

    ``class_labels`` (int ``[batch]``) condition a class-conditional network; None leaves the
    network's default (the null label of a conditional one).
    """
    if dropout_key is None:
        apply = model.apply
    else:

        def apply(variables, x, labels, train, **kwargs):
            del train  # the network runs in training mode, with dropout
            rngs = {"dropout": dropout_key}
            return model.apply(variables, x, labels, train=True, rngs=rngs, **kwargs)

    conditional = class_labels is not None
    score_fn = get_score_fn(
        sde,
        apply,
        params,
        continuous=continuous,
        num_scales=num_scales,
        class_conditional=conditional,
        scale_by_sigma=scale_by_sigma,
    )
    return (lambda x, t: score_fn(x, t, class_labels)) if conditional else score_fn


def drop_labels(key: Key, labels: Array, rate: float, null_label: int) -> Array:
    """Replaces each label by ``null_label`` with probability ``rate`` (label dropout).

    Classifier-free guidance (Ho & Salimans, 2022) trains one network as both the
    conditional and the unconditional model by dropping the label of a fraction of examples.
    """
    dropped = jax.random.bernoulli(key, rate, labels.shape)
    return jnp.where(dropped, jnp.asarray(null_label, labels.dtype), labels)


def apply_objective(
    state: TrainState, objective: Objective, *, tx: optax.GradientTransformation, ema_rate: float
) -> tuple[TrainState, dict[str, Array]]:
    """One optimizer update of ``objective(params, key) -> (loss, metrics)``, any task.

    Returns:
      The new state and the metrics ``loss``, ``grad_norm`` and the objective's own (device
      scalars: they leave the device only when the loop logs them).
    """
    rng, step_key = jax.random.split(jax.random.wrap_key_data(state.rng))
    (loss, metrics), grads = jax.value_and_grad(objective, has_aux=True)(state.params, step_key)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = TrainState(
        step=state.step + 1,
        params=params,
        ema_params=update_ema(state.ema_params, params, ema_rate),
        opt_state=opt_state,
        rng=jax.random.key_data(rng),
    )
    return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads), **metrics}


def train_step(
    state: TrainState,
    batch: dict[str, Array],
    *,
    model: nn.Module,
    sde: SDE,
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    ema_rate: float,
    continuous: bool,
    num_scales: int,
    scale_by_sigma: bool = False,
    num_classes: int | None = None,
    label_dropout: float = 0.0,
) -> tuple[TrainState, dict[str, Array]]:
    """One score-model update on ``batch['image']`` ``[batch, H, W, C]`` (model space).

    A class-conditional network (``num_classes`` set) is conditioned on ``batch['label']``,
    each replaced by the null label ``num_classes`` with probability ``label_dropout``.

    Returns:
      The new state and the metrics ``loss`` and ``grad_norm`` (device scalars).
    """

    def objective(params, key):
        loss_key, dropout_key = jax.random.split(key)
        labels = None
        if num_classes is not None:
            labels = batch["label"]
            if label_dropout > 0:
                labels = drop_labels(jax.random.fold_in(key, 2), labels, label_dropout, num_classes)
        score_fn = network_score_fn(
            model,
            sde,
            params,
            continuous=continuous,
            num_scales=num_scales,
            scale_by_sigma=scale_by_sigma,
            dropout_key=dropout_key,
            class_labels=labels,
        )
        return loss_fn(loss_key, score_fn, batch["image"]).loss, {}

    return apply_objective(state, objective, tx=tx, ema_rate=ema_rate)


def classifier_train_step(
    state: TrainState,
    batch: dict[str, Array],
    *,
    model: nn.Module,
    sde: SDE,
    tx: optax.GradientTransformation,
    ema_rate: float,
    eps: float,
) -> tuple[TrainState, dict[str, Array]]:
    """One update of the noise-conditional classifier on ``batch['image']``, ``batch['label']``.

    The loss is :func:`sde_jax.classifier.noisy_classifier_loss`.

    Returns:
      The new state and the metrics ``loss``, ``grad_norm`` and ``accuracy`` (on the noisy
      training batch).
    """

    def objective(params, key):
        loss_key, dropout_key = jax.random.split(key)

        def logits_fn(x, sigmas):
            rngs = {"dropout": dropout_key}
            return model.apply({"params": params}, x, sigmas, train=True, rngs=rngs)

        out = classifier.noisy_classifier_loss(
            loss_key, logits_fn, sde, batch["image"], batch["label"], eps
        )
        return out.loss, {"accuracy": jnp.mean(out.correct)}

    return apply_objective(state, objective, tx=tx, ema_rate=ema_rate)


def train_steps(
    state: TrainState,
    batches: dict[str, Array],
    *,
    step_fn: Callable[..., tuple[TrainState, dict[str, Array]]] = train_step,
    **step_kwargs: Any,
) -> tuple[TrainState, dict[str, Array]]:
    """Several steps in one call (the original's ``n_jitted_steps``), over axis 0 of ``batches``.

    The steps are unrolled in the traced program rather than run by ``lax.scan``: XLA:CPU
    (jaxlib 0.10) computes convolution gradients inside a loop several times slower than
    outside one (five steps of the parity-fixture DDPM++ at batch 8: 819 ms scanned, 131 ms
    unrolled), and ``n_jitted_steps`` is small (the original used 5), so unrolling costs
    little compile time on any platform.

    Args:
      state: the train state.
      batches: ``{'image': [steps, batch, H, W, C]}`` (and ``'label'`` ``[steps, batch]``).
      step_fn: the step of the task, :func:`train_step` or :func:`classifier_train_step`.
      **step_kwargs: the keyword arguments of ``step_fn``.

    Returns:
      The state after all steps and the metrics of each step, stacked ``[steps]``.
    """
    num_steps = jax.tree.leaves(batches)[0].shape[0]
    all_metrics = []
    for i in range(num_steps):
        state, metrics = step_fn(state, jax.tree.map(lambda b, i=i: b[i], batches), **step_kwargs)
        all_metrics.append(metrics)
    return state, jax.tree.map(lambda *m: jnp.stack(m), *all_metrics)


def eval_step(
    state: TrainState,
    batch: dict[str, Array],
    key: Key,
    *,
    model: nn.Module,
    sde: SDE,
    loss_fn: LossFn,
    continuous: bool,
    num_scales: int,
    scale_by_sigma: bool = False,
    num_classes: int | None = None,
) -> Array:
    """The per-example loss ``[batch]`` of the EMA parameters (network in eval mode).

    A class-conditional network sees ``batch['label']`` (no label dropout).
    """
    score_fn = network_score_fn(
        model,
        sde,
        state.ema_params,
        continuous=continuous,
        num_scales=num_scales,
        scale_by_sigma=scale_by_sigma,
        class_labels=None if num_classes is None else batch["label"],
    )
    return loss_fn(key, score_fn, batch["image"]).per_example


def classifier_eval_step(
    state: TrainState,
    batch: dict[str, Array],
    key: Key,
    *,
    model: nn.Module,
    sde: SDE,
    eps: float,
) -> dict[str, Array]:
    """The EMA classifier's per-example metrics on noisy eval data.

    Returns:
      ``loss`` and ``accuracy`` at ``t ~ U(eps, T)`` as in training, and ``accuracy/t=F``
      at the fixed times ``eps + F (T - eps)`` for each fraction F of
      :data:`CLASSIFIER_EVAL_TIMES` (each ``[batch]``).
    """

    def logits_fn(x, sigmas):
        return model.apply({"params": state.ema_params}, x, sigmas, train=False)

    loss_key, fixed_key = jax.random.split(key)
    x, labels = batch["image"], batch["label"]
    out = classifier.noisy_classifier_loss(loss_key, logits_fn, sde, x, labels, eps)
    times = tuple(eps + f * (sde.T - eps) for f in CLASSIFIER_EVAL_TIMES)
    hits = classifier.accuracy_at_times(fixed_key, logits_fn, sde, x, labels, times)
    metrics = {"loss": out.per_example, "accuracy": out.correct}
    for fraction, row in zip(CLASSIFIER_EVAL_TIMES, hits, strict=True):
        metrics[f"accuracy/t={fraction:.2f}"] = row
    return metrics
