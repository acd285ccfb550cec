"""Predictors: one step of the reverse-time SDE from t to t_next < t (paper section 4.2).

Each returns ``State(x, x_mean)`` where ``x_mean`` is the update before its noise; the
sampler's final denoising step returns it.
"""

import dataclasses

import jax
import jax.numpy as jnp

from sde_jax.array_types import Array, Key, ScoreFn
from sde_jax.sdes import SDE, batch_times, expand_to, reverse_drift
from sde_jax.steppers.base import Memoryless, State, register_static


def _noise(key: Key, x: Array) -> Array:
    return jax.random.normal(key, x.shape, x.dtype)


@register_static
@dataclasses.dataclass(frozen=True)
class EulerMaruyama(Memoryless):
    r"""Euler-Maruyama on the reverse SDE (eq. 6) with step :math:`\Delta t = t - t_{next}`.

    .. math:: x_{next} = x - [f(x,t) - g(t)^2 s_\theta(x,t)]\Delta t + g(t)\sqrt{\Delta t}\, z
    """

    sde: SDE
    order = 1
    nfe_per_step = 1

    def step(self, key: Key, score_fn: ScoreFn, state: State, t: Array, t_next: Array) -> State:
        """One Euler-Maruyama step of the reverse SDE."""
        x, dt = state.x, t - t_next
        x_mean = x - reverse_drift(self.sde, score_fn, x, t) * dt
        diffusion = self.sde.diffusion_coeff(batch_times(x, t))
        x = x_mean + expand_to(diffusion * jnp.sqrt(dt), x) * _noise(key, x)
        return state._replace(x=x, x_mean=x_mean)


@register_static
@dataclasses.dataclass(frozen=True)
class ReverseDiffusion(Memoryless):
    r"""The reverse of the SDE's own discretization (paper eq. 46 of appendix E).

    With the forward step :math:`x_t = x_{t-\Delta t} + f + G z` of ``sde.discretize``, the
    reverse step is :math:`x_{next} = x - f + G^2 s_\theta(x, t) + G z`: the DDPM step for VP,
    the SMLD step for VE, Euler-Maruyama for sub-VP.
    """

    sde: SDE
    order = 1
    nfe_per_step = 1

    def step(self, key: Key, score_fn: ScoreFn, state: State, t: Array, t_next: Array) -> State:
        """One reverse-diffusion step."""
        x = state.x
        t_batch = batch_times(x, t)
        f, g = self.sde.discretize(x, t_batch, t - t_next)
        x_mean = x - f + expand_to(g**2, x) * score_fn(x, t_batch)
        x = x_mean + expand_to(g, x) * _noise(key, x)
        return state._replace(x=x, x_mean=x_mean)


@register_static
@dataclasses.dataclass(frozen=True)
class AncestralSampling(Memoryless):
    r"""Ancestral sampling: :math:`x_{next} = \mu + \mathrm{std}\, z` by ``sde.ancestral_step``.

    VP (DDPM, paper eq. 47 of appendix F): :math:`x_{next} = (x + \beta_i s_\theta)/\sqrt{1 -
    \beta_i} + \sqrt{\beta_i} z`. VE (SMLD, eq. 48): :math:`x_{next} = x + (\sigma_i^2 -
    \sigma_{i-1}^2) s_\theta + \sqrt{\sigma_{i-1}^2 (\sigma_i^2 - \sigma_{i-1}^2) / \sigma_i^2}\,
    z`, with the noise levels of ``VPSDE.beta_step`` and ``VESDE.adjacent_sigma``. Every other
    SDE (sub-VP, cosine VP, EDM) draws from the exact Gaussian posterior of its forward process
    (:meth:`~sde_jax.sdes.SDE.ancestral_step`).
    """

    sde: SDE
    order = 1
    nfe_per_step = 1

    def step(self, key: Key, score_fn: ScoreFn, state: State, t: Array, t_next: Array) -> State:
        """One ancestral step."""
        x = state.x
        t_batch = batch_times(x, t)
        x_mean, std = self.sde.ancestral_step(x, score_fn(x, t_batch), t_batch, t - t_next)
        return state._replace(x=x_mean + expand_to(std, x) * _noise(key, x), x_mean=x_mean)


@register_static
@dataclasses.dataclass(frozen=True)
class NoPredictor(Memoryless):
    """Leaves the state unchanged (corrector-only sampling, e.g. NCSNv2's annealed Langevin)."""

    order = 0
    nfe_per_step = 0

    def step(self, key: Key, score_fn: ScoreFn, state: State, t: Array, t_next: Array) -> State:
        """Returns ``state``."""
        del key, score_fn, t, t_next
        return state
