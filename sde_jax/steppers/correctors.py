"""Correctors: Langevin MCMC at a fixed time t (paper section 4.2, algorithms 4 and 5).

Step sizes are computed PER EXAMPLE. The original averaged the gradient and noise norms over
the whole global batch across devices, so a sample depended on its batch-mates and on the
device count; here each example's step uses only its own norms.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp

from sde_jax import validation
from sde_jax.array_types import Array, Key, ScoreFn
from sde_jax.sdes import SDE, batch_times, expand_to
from sde_jax.steppers.base import Memoryless, State, register_static
from sde_jax.steppers.predictors import NoPredictor


def _per_example_norm(v: Array) -> Array:
    return jnp.sqrt(jnp.sum(jnp.reshape(v, (v.shape[0], -1)) ** 2, axis=1))


def _check(snr: object, n_steps: object) -> None:
    validation.interval("snr", snr, 0, math.inf, closed=(False, True))
    validation.integer("n_steps", n_steps, minimum=1)


@dataclasses.dataclass(frozen=True)
class _LangevinBase(Memoryless):
    """Shared by the Langevin correctors: n_steps of x <- x + eps s + sqrt(2 eps) z at time t.

    Subclasses give the per-example step size eps in ``step_size``.
    """

    sde: SDE
    snr: float = 0.16
    n_steps: int = 1
    order = 0

    def __post_init__(self):
        _check(self.snr, self.n_steps)

    @property
    def nfe_per_step(self) -> int:
        """One evaluation per iteration."""
        return self.n_steps

    def step_size(self, t: Array, dt: Array, score: Array, noise: Array) -> Array:
        """Per-example step ``[batch]`` at times ``t`` ``[batch]``."""
        raise NotImplementedError

    def step(self, key: Key, score_fn: ScoreFn, state: State, t: Array, t_next: Array) -> State:
        """``n_steps`` Langevin iterations at time ``t``."""
        x, x_mean = state.x, state.x_mean
        t_batch = batch_times(x, t)
        for step_key in jax.random.split(key, self.n_steps):  # n_steps is small and static
            score = score_fn(x, t_batch)
            noise = jax.random.normal(step_key, x.shape, x.dtype)
            step_size = expand_to(self.step_size(t_batch, t - t_next, score, noise), x)
            x_mean = x + step_size * score
            x = x_mean + jnp.sqrt(2.0 * step_size) * noise
        return state._replace(x=x, x_mean=x_mean)


@register_static
@dataclasses.dataclass(frozen=True)
class Langevin(_LangevinBase):
    r"""Langevin corrector with the paper's signal-to-noise rule (algorithm 5).

    .. math:: \epsilon_i = 2 \alpha_i (r \|z\| / \|s_\theta(x, t)\|)^2, \quad
              x \leftarrow x + \epsilon_i s_\theta(x, t) + \sqrt{2 \epsilon_i}\, z,

    with norms taken per example, r = ``snr``, and :math:`\alpha_i` the SDE's
    ``langevin_alpha``: :math:`1 - \beta(t)\Delta t` for VP and sub-VP (the original crashed on
    sub-VP), 1 for VE, cosine VP and EDM.

    The rule assumes high-dimensional data, where :math:`\|z\|` and :math:`\|s_\theta\|`
    concentrate; in a handful of dimensions their ratio is heavy-tailed and so are the steps.
    Use it on data of 32 dimensions or more (images have thousands). Because the step depends
    on the example's own state, the chain's stationary law is :math:`\propto p\,\|\nabla
    \log p\|^2` rather than :math:`p` (continuous-time limit): for Gaussian data the variance
    is inflated by about 2/D relative, negligible for images but measurable in 32 dimensions,
    where we saw 5-30% per eigendirection; the batch-averaged step of the original had no such
    bias but coupled each sample to its batch-mates and the device count.

    Attributes:
      sde: the forward SDE.
      snr: the signal-to-noise ratio r (0.16 on CIFAR-10).
      n_steps: corrector iterations per predictor step (the original's n_steps_each).
    """

    def step_size(self, t: Array, dt: Array, score: Array, noise: Array) -> Array:
        """The snr rule with this example's own norms."""
        ratio = self.snr * _per_example_norm(noise) / _per_example_norm(score)
        return 2.0 * self.sde.langevin_alpha(t, dt) * ratio**2


@register_static
@dataclasses.dataclass(frozen=True)
class AnnealedLangevin(_LangevinBase):
    r"""Annealed Langevin dynamics of NCSN (algorithm 4): :math:`\epsilon_i = 2\alpha_i (r s(t))^2`.

    :math:`s(t)` is the SDE's marginal standard deviation at ``t``, so the step is per example
    by construction.

    Attributes:
      sde: the forward SDE.
      snr: the signal-to-noise ratio r.
      n_steps: iterations per predictor step.
    """

    def step_size(self, t: Array, dt: Array, score: Array, noise: Array) -> Array:
        r""":math:`2 \alpha (r s(t))^2`, the same for every state at time t."""
        del score, noise
        return 2.0 * self.sde.langevin_alpha(t, dt) * (self.snr * self.sde.marginal_std(t)) ** 2


NoCorrector = NoPredictor
"""Leaves the state unchanged (the same identity stepper as ``NoPredictor``)."""
