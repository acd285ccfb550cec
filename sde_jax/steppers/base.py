"""The stepper interface, and the predictor-corrector combinator.

A stepper moves a batch from time ``t`` to an earlier time ``t_next`` (a sampler runs from T
down to eps). It is a frozen dataclass with

- ``init(x) -> State``: the state to start from, given the batch at time T;
- ``step(key, score_fn, state, t, t_next) -> State``: one step; ``t`` and ``t_next`` are
  scalars shared by the batch; ``key`` is used only by stochastic steppers;
- ``order``: the order of accuracy of the deterministic part (0 for a corrector, which does
  not move in time);
- ``nfe_per_step``: score evaluations per step.

A combinator takes steppers and returns a stepper, so composites compose again.
"""

import dataclasses
from typing import Any, NamedTuple, Protocol

import jax

from sde_jax.array_types import Array, Key, ScoreFn


class State(NamedTuple):
    """What a stepper carries from one step to the next.

    Attributes:
      x: the current batch, ``[batch, ...]``.
      x_mean: ``x`` before the last noise injection; the final denoising step returns it.
      history: memory of multistep solvers (a pytree, ``()`` when unused).
    """

    x: Array
    x_mean: Array
    history: Any = ()


class Stepper(Protocol):
    """One step of a sampler; see the module docstring."""

    order: int
    nfe_per_step: int

    def init(self, x: Array) -> State:
        """Returns the state at time T for the batch ``x``."""

    def step(self, key: Key, score_fn: ScoreFn, state: State, t: Array, t_next: Array) -> State:
        """Advances ``state`` from ``t`` to ``t_next < t``."""


class Memoryless:
    """Mixin for steppers whose state is just the batch."""

    def init(self, x: Array) -> State:
        """Returns ``State(x, x)``."""
        return State(x, x)


def register_static(cls: type) -> type:
    """Registers a frozen stepper dataclass as a pytree with all fields static."""
    fields = [f.name for f in dataclasses.fields(cls)]
    return jax.tree_util.register_dataclass(cls, data_fields=[], meta_fields=fields)


@register_static
@dataclasses.dataclass(frozen=True)
class PredictorCorrector:
    """Algorithm 1 of the paper: at each time, ``corrector`` first, then ``predictor``.

    The corrector runs at ``t`` (it refines the sample at a fixed noise level); the predictor
    then moves it to ``t_next``. The corrector's own ``n_steps`` sets how many corrector
    iterations run per predictor step.

    Attributes:
      predictor: a stepper that moves in time.
      corrector: a stepper that acts at a fixed time.
    """

    predictor: Any
    corrector: Any

    @property
    def order(self) -> int:
        """The predictor's order."""
        return self.predictor.order

    @property
    def nfe_per_step(self) -> int:
        """Evaluations of both parts."""
        return self.predictor.nfe_per_step + self.corrector.nfe_per_step

    def init(self, x: Array) -> State:
        """The predictor's initial state."""
        return self.predictor.init(x)

    def step(self, key: Key, score_fn: ScoreFn, state: State, t: Array, t_next: Array) -> State:
        """Corrector at ``t``, then predictor from ``t`` to ``t_next``."""
        corrector_key, predictor_key = jax.random.split(key)
        state = self.corrector.step(corrector_key, score_fn, state, t, t_next)
        return self.predictor.step(predictor_key, score_fn, state, t, t_next)
