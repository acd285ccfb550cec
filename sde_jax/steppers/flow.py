r"""Deterministic steppers for the probability-flow ODE (paper eq. 13).

``ProbabilityFlow`` applies a classic fixed-step rule (``ode.EULER``, ``ode.HEUN``,
``ode.RK4``: objects carrying their order and evaluations per step) to the ODE velocity
:math:`f(x, t) - \tfrac12 g(t)^2 s_\theta(x, t)`. The exponential integrators in the log-SNR
(DPM-Solver++, DDIM) live in :mod:`sde_jax.steppers.dpm_solver`.
"""

import dataclasses
from functools import partial

from sde_jax import ode, predictions
from sde_jax.array_types import Array, Key, ScoreFn
from sde_jax.sdes import SDE, probability_flow_drift
from sde_jax.steppers.base import Memoryless, State, register_static


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
