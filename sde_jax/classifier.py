r"""The noise-conditional classifier: its training loss on noisy data and :math:`\log p_t(y|x)`.

Class-conditional sampling with a classifier (Song et al., ICLR 2021, section 5 and appendix
I.1) follows :math:`\nabla_x \log p_t(x) + s\,\nabla_x \log p_t(y \mid x)` (eq. 48 with a
guidance scale s), so the classifier is trained on data perturbed by the SDE's marginal: for
clean ``x(0)`` with label y, draw :math:`t \sim U(\epsilon, T)` and
:math:`x(t) = m(t)\,x(0) + \sigma(t) z`, and minimize the cross-entropy of y given
``(x(t), sigma(t))``. The network sees the noise level :math:`\sigma(t)` =
``sde.marginal_std(t)`` (sigma(t) for VE, the marginal std for VP and sub-VP), the quantity
it embeds as Fourier features of its logarithm. The original shipped no training code for it.

The guidance side, ``classifier_log_prob(x, t, labels) -> [batch]`` of a trained classifier,
is :func:`sde_jax.controllable.classifier_log_prob_fn`, beside the sampler that takes it.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from sde_jax.array_types import Array, Data, Key, PerExample
from sde_jax.sdes import SDE, expand_to

__all__ = [
    "ClassifierLossOutput",
    "accuracy_at_times",
    "noisy_classifier_loss",
    "perturb",
]

LogitsFn = Callable[[Data, PerExample], Array]
"""``logits_fn(x, sigmas) -> logits [batch, classes]``: the network at noise levels sigmas."""


class ClassifierLossOutput(NamedTuple):
    """Cross-entropy on noisy data.

    Attributes:
      loss: the mean cross-entropy (scalar).
      per_example: cross-entropy per example ``[batch]``.
      correct: whether the arg-max class is the label, float ``[batch]``.
    """

    loss: Array
    per_example: PerExample
    correct: PerExample


def perturb(key: Key, sde: SDE, x: Data, t: PerExample) -> tuple[Data, PerExample]:
    """``x(t) = m(t) x + sigma(t) z`` with ``z ~ N(0, I)``, and the noise levels ``sigma(t)``."""
    mean, std = sde.marginal_prob(x, t)
    return mean + expand_to(std, x) * jax.random.normal(key, x.shape, x.dtype), std


def _cross_entropy(logits: Array, labels: Array) -> tuple[PerExample, PerExample]:
    per_example = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return per_example, correct


def noisy_classifier_loss(
    key: Key, logits_fn: LogitsFn, sde: SDE, x: Data, labels: Array, eps: float = 1e-5
) -> ClassifierLossOutput:
    """The cross-entropy of ``labels`` given ``x`` perturbed at ``t ~ U(eps, T)``.

    Args:
      key: PRNG key for the times and the noise.
      logits_fn: the classifier, ``logits_fn(x, sigmas) -> [batch, classes]``.
      sde: the forward SDE whose marginals perturb the data.
      x: clean data ``[batch, ...]`` in model space.
      labels: int ``[batch]`` in ``[0, classes)``.
      eps: smallest time.

    Returns:
      The mean and per-example cross-entropy and the per-example hits.
    """
    t_key, z_key = jax.random.split(key)
    t = jax.random.uniform(t_key, (x.shape[0],), minval=eps, maxval=sde.T)
    x_t, sigmas = perturb(z_key, sde, x, t)
    per_example, correct = _cross_entropy(logits_fn(x_t, sigmas), labels)
    return ClassifierLossOutput(jnp.mean(per_example), per_example, correct)


def accuracy_at_times(
    key: Key, logits_fn: LogitsFn, sde: SDE, x: Data, labels: Array, times: tuple[float, ...]
) -> Array:
    """Hits ``[len(times), batch]`` of the classifier on ``x`` perturbed at each fixed time."""
    keys = jax.random.split(key, len(times))
    hits = []
    for k, time in zip(keys, times, strict=True):
        x_t, sigmas = perturb(k, sde, x, jnp.full((x.shape[0],), time, jnp.float32))
        hits.append(_cross_entropy(logits_fn(x_t, sigmas), labels)[1])
    return jnp.stack(hits)
