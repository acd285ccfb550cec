r"""Deterministic steppers for the probability-flow ODE (paper eq. 13).

``ProbabilityFlow`` applies a classic fixed-step rule (``ode.EULER``, ``ode.HEUN``,
``ode.RK4``: objects carrying their order and evaluations per step) to the ODE velocity
:math:`f(x, t) - \tfrac12 g(t)^2 s_\theta(x, t)`. ``DPMSolverPP2M`` is the multistep
DPM-Solver++ (Lu et al., 2022), which integrates the linear part exactly in the log-SNR
variable and needs one score evaluation per step.
"""

import dataclasses
from functools import partial

import jax.numpy as jnp

from sde_jax import ode, predictions
from sde_jax.sdes import SDE, probability_flow_drift
from sde_jax.steppers.base import Memoryless, State, register_static
from sde_jax.typing import Array, Key, ScoreFn


@register_static
@dataclasses.dataclass(frozen=True)
class ProbabilityFlow(Memoryless):
    """One fixed step of the probability-flow ODE with the rule ``rule``.

    ``ProbabilityFlow(sde, ode.HEUN)`` is EDM's second-order step; any
    :class:`~sde_jax.ode.FixedStep` works, a user-written one included.

    Attributes:
      sde: the forward SDE.
      rule: the fixed-step rule with its order and evaluations per step: ``ode.EULER``
        (order 1), ``ode.HEUN`` (order 2) or ``ode.RK4`` (order 4).

    Raises:
      TypeError: if ``rule`` is not an ``ode.FixedStep`` (a name such as 'heun' included:
        ``ode.FIXED_STEPS[name]`` gives the rule of a name).
    """

    sde: SDE
    rule: ode.FixedStep = ode.HEUN

    def __post_init__(self):
        if not isinstance(self.rule, ode.FixedStep):
            raise TypeError(
                "rule must be an ode.FixedStep such as ode.EULER, ode.HEUN or ode.RK4 "
                f"(ode.FIXED_STEPS[name] for a name in {sorted(ode.FIXED_STEPS)}), "
                f"got {self.rule!r}."
            )

    @property
    def order(self) -> int:
        """The rule's order of accuracy."""
        return self.rule.order

    @property
    def nfe_per_step(self) -> int:
        """The rule's evaluations per step."""
        return self.rule.nfe

    def step(self, key: Key, score_fn: ScoreFn, state: State, t: Array, t_next: Array) -> State:
        """Advances the ODE from ``t`` to ``t_next``; ``key`` is unused."""
        del key
        velocity = partial(_velocity, self.sde, score_fn)
        x = self.rule.step(velocity, t, t_next, state.x)
        return state._replace(x=x, x_mean=x)


def _velocity(sde: SDE, score_fn: ScoreFn, t: Array, x: Array) -> Array:
    return probability_flow_drift(sde, score_fn, x, t)


def denoise(sde: SDE, score_fn: ScoreFn, x: Array, t: Array) -> Array:
    r"""Tweedie's estimate :math:`E[x_0 | x_t] = (x_t + s(t)^2 \nabla \log p_t(x_t)) / m(t)`.

    The final denoising step of the ODE samplers; for the VE SDE it equals the original's
    single reverse-diffusion step at eps, :math:`x + \sigma(\epsilon)^2 s_\theta`. The
    data prediction of :mod:`sde_jax.predictions` (``from_score_fn(sde, score_fn, "x0")``).
    """
    return predictions.from_score_fn(sde, score_fn, "x0")(x, t)


@register_static
@dataclasses.dataclass(frozen=True)
class DPMSolverPP2M:
    r"""DPM-Solver++(2M): second-order multistep solver of the probability-flow ODE.

    With :math:`\lambda = \log(m/s)`, :math:`h = \lambda_{next} - \lambda` and the data
    prediction :math:`D = (x + s^2 s_\theta)/m` (:func:`sde_jax.predictions.x0_from_score`),
    one step is

    .. math:: x_{next} = \frac{s_{next}}{s} x + m_{next}(1 - e^{-h})\,
              \big[(1 + \tfrac{1}{2r}) D - \tfrac{1}{2r} D_{prev}\big], \quad r = h_{prev}/h,

    and the first step uses :math:`D` alone (DDIM). Exact for the linear part of the ODE, so it
    works for every SDE here (VP and sub-VP are its usual use). History: the previous D and h.
    """

    sde: SDE
    order = 2
    nfe_per_step = 1

    def init(self, x: Array) -> State:
        """No history yet: ``h_prev = 0`` marks the first step."""
        return State(x, x, (jnp.zeros_like(x), jnp.zeros((), x.dtype)))

    def step(self, key: Key, score_fn: ScoreFn, state: State, t: Array, t_next: Array) -> State:
        """One multistep update; ``key`` is unused."""
        del key
        x, (d_prev, h_prev) = state.x, state.history
        s = self.sde.marginal_std(t)
        m_next, s_next = self.sde.mean_coeff(t_next), self.sde.marginal_std(t_next)
        h = self.sde.log_snr(t_next) - self.sde.log_snr(t)
        d = predictions.from_score_fn(self.sde, score_fn, "x0")(x, t)
        half_inv_r = jnp.where(h_prev > 0, 0.5 * h / jnp.where(h_prev > 0, h_prev, 1.0), 0.0)
        d_combined = (1.0 + half_inv_r) * d - half_inv_r * d_prev
        x = (s_next / s) * x - m_next * jnp.expm1(-h) * d_combined
        return State(x, x, (d, h.astype(x.dtype)))
