"""Samplers: a stepper run over a time grid, or the adaptive probability-flow ODE, T to eps.

The API is objects. An SDE (:mod:`sde_jax.sdes`) gives the prior x_T; a stepper
(:mod:`sde_jax.steppers`) the update; a grid (:mod:`sde_jax.grids`, functions of any SDE) the
times; a final step (:class:`NoDenoising`, :class:`NoiseFreeMean`, :class:`TweedieDenoising`)
what the last step returns::

    stepper = steppers.PredictorCorrector(steppers.ReverseDiffusion(sde), steppers.Langevin(sde))
    grid = grids.uniform_grid(sde, 1000, eps=1e-3)
    out = sampling.sample(key, score_fn, stepper, grid, (8, 32, 32, 3), sde=sde)
    ode = sampling.sample_adaptive(key, score_fn, (8, 32, 32, 3), sde=sde, rtol=1e-5)

:func:`sample` and :func:`sample_adaptive` are one call each; :class:`FixedGridSampler` and
:class:`AdaptiveODESampler` hold the same arguments as a ``sampler(key, score_fn)`` built once
(what training, evaluation and the controllable builders pass around), and
:func:`sample_in_chunks` runs a fixed-grid one in compiled chunks with progress reports.

The drivers are pure functions with their loops on device (``lax.scan`` over a fixed grid,
``lax.while_loop`` inside the adaptive solver); they contain no ``jit`` and no sharding, so
the caller compiles them, vmaps them over keys, differentiates through them or shards the
batch. Reading a config is not done here: ``sde_jax.experiment.build.get_sampler`` (also
``sde_jax.get_sampler``) turns a config's sampling section (the original score_sde's names)
into these objects.
"""

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from sde_jax import ode, validation
from sde_jax.adjoint import check_adjoint
from sde_jax.array_types import Array, Key, ScoreFn
from sde_jax.sdes import SDE, probability_flow_drift
from sde_jax.steppers import State, Stepper, denoise
from sde_jax.steppers.validity import check_discrete_steps


class SampleOutput(NamedTuple):
    """What a sampler returns.

    Attributes:
      x: the samples, with the sampler's ``shape``.
      nfe: number of score-function evaluations (per example; the batch shares them).
      success: False when the samples hold a non-finite value (any sampler), or when the
        adaptive solver stopped at its step limit before reaching eps.
    """

    x: Array
    nfe: Array
    success: Array


# --------------------------------------------------------------------------------------------
# What the last step returns.


class FinalStep(Protocol):
    """Turns the state at the grid's last time into the samples.

    Attributes:
      nfe: score evaluations it costs.
    """

    nfe: int

    def __call__(self, sde: SDE, score_fn: ScoreFn, state: State, t: Array) -> Array:
        """The samples from ``state`` at time ``t`` (the grid's last time, eps)."""


@dataclasses.dataclass(frozen=True)
class NoDenoising:
    """Returns ``state.x`` as the last step left it (``noise_removal=False``)."""

    nfe = 0

    def __call__(self, sde: SDE, score_fn: ScoreFn, state: State, t: Array) -> Array:
        """``state.x``."""
        del sde, score_fn, t
        return state.x


@dataclasses.dataclass(frozen=True)
class NoiseFreeMean:
    """Returns ``state.x_mean``, the last update without its noise injection.

    The paper's denoising for predictor-corrector samplers (no extra evaluation); for the
    deterministic steppers ``x_mean`` is ``x``.
    """

    nfe = 0

    def __call__(self, sde: SDE, score_fn: ScoreFn, state: State, t: Array) -> Array:
        """``state.x_mean``."""
        del sde, score_fn, t
        return state.x_mean


@dataclasses.dataclass(frozen=True)
class TweedieDenoising:
    r"""Returns Tweedie's :math:`E[x_0 | x_t] = (x_t + s(t)^2 s_\theta(x_t, t)) / m(t)`.

    The denoising of the ODE samplers, one more evaluation; see ``steppers.denoise``.
    """

    nfe = 1

    def __call__(self, sde: SDE, score_fn: ScoreFn, state: State, t: Array) -> Array:
        """Tweedie's estimate at ``t`` from ``state.x``."""
        return denoise(sde, score_fn, state.x, t)


# --------------------------------------------------------------------------------------------
# Validation, in Python before tracing.


def check_shape(shape: object) -> None:
    """Raises ValueError unless ``shape`` is a non-empty tuple of ints ``(batch, ...)``."""
    if (
        not isinstance(shape, tuple)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
    ):
        raise ValueError(f"shape must be a non-empty tuple of ints (batch, ...), got {shape!r}.")


def _check_stepper(stepper: object) -> None:
    missing = [a for a in ("init", "step", "nfe_per_step", "order") if not hasattr(stepper, a)]
    if missing:
        raise TypeError(
            f"stepper must be a stepper (init, step, order, nfe_per_step; see "
            f"sde_jax.steppers), got {stepper!r} without {missing}."
        )


def _check_final_step(final_step: object) -> None:
    if not callable(final_step) or not isinstance(getattr(final_step, "nfe", None), int):
        raise TypeError(
            "final_step must be a final step such as sampling.NoDenoising(), NoiseFreeMean() "
            f"or TweedieDenoising(), got {final_step!r}."
        )


def _check_grid(grid: object) -> None:
    if np.ndim(grid) != 1 or np.shape(grid)[0] < 2:
        raise ValueError(
            f"grid must be 1-D with at least 2 times [T, ..., eps], got shape {np.shape(grid)}."
        )


# --------------------------------------------------------------------------------------------
# Fixed grids.


def run_steps(
    key: Key, score_fn: ScoreFn, stepper: Stepper, state: State, grid: Array, first_index: int = 0
) -> State:
    """Applies ``stepper`` over consecutive pairs of ``grid`` with ``lax.scan``.

    Step i (counting from ``first_index``) uses the key ``fold_in(key, i)``, so running a grid
    in several chunks gives exactly the result of one run.

    Args:
      key: PRNG key of the whole run.
      score_fn: ``score_fn(x, t) -> score``.
      stepper: the step rule.
      state: the state at ``grid[0]``.
      grid: decreasing times ``[n + 1]``.
      first_index: global index of the first step (for chunked runs).

    Returns:
      The state at ``grid[-1]``.
    """

    def body(state, inputs):
        index, t, t_next = inputs
        step_key = jax.random.fold_in(key, index)
        return stepper.step(step_key, score_fn, state, t, t_next), None

    indices = first_index + jnp.arange(grid.shape[0] - 1)
    state, _ = jax.lax.scan(body, state, (indices, grid[:-1], grid[1:]))
    return state


@dataclasses.dataclass(frozen=True)
class FixedGridSampler:
    """A stepper run over a fixed grid; ``sampler(key, score_fn) -> SampleOutput``.

    The key splits into one for the prior sample and one for the steps (step i uses
    ``fold_in(step_key, i)``, see :func:`run_steps`).

    Attributes:
      sde: the forward SDE (its prior gives x_T).
      stepper: the step rule (any stepper, composites included).
      grid: decreasing times from T to eps, ``[num_steps + 1]`` (from :mod:`sde_jax.grids`).
      shape: the shape of the batch to draw, ``(batch, ...)``.
      final_step: what the last step returns: :class:`NoiseFreeMean` (``x_mean``, the paper's
        denoising for PC samplers), :class:`TweedieDenoising` (E[x_0 | x_eps], one more
        evaluation: the denoising of ODE samplers) or :class:`NoDenoising` (``x``).
      dtype: the floating dtype of the samples.

    Raises:
      ValueError: for a bad ``shape`` or ``grid``, or a grid too coarse for the discrete VP
        steps of ``stepper`` (``steppers.validity.check_discrete_steps``).
      TypeError: if ``stepper`` or ``final_step`` lacks the interface.
    """

    sde: SDE
    stepper: Any
    grid: Array
    shape: tuple[int, ...]
    final_step: FinalStep = NoiseFreeMean()
    dtype: Any = jnp.float32

    def __post_init__(self):
        _check_stepper(self.stepper)
        _check_grid(self.grid)
        check_shape(self.shape)
        _check_final_step(self.final_step)
        check_discrete_steps(self.stepper, self.grid)

    @property
    def num_steps(self) -> int:
        """Number of steps of the grid."""
        return np.shape(self.grid)[0] - 1

    def init(self, key: Key) -> State:
        """Draws x_T from the prior and returns the stepper's initial state."""
        return self.stepper.init(self.sde.prior_sampling(key, self.shape, self.dtype))

    def advance(
        self, key: Key, score_fn: ScoreFn, state: State, start: int, num_steps: int
    ) -> State:
        """Runs steps ``start .. start + num_steps - 1`` (``start`` may be traced)."""
        grid = jnp.asarray(self.grid, self.dtype)
        times = jax.lax.dynamic_slice(grid, (start,), (num_steps + 1,))
        return run_steps(key, score_fn, self.stepper, state, times, start)

    def finish(self, score_fn: ScoreFn, state: State) -> SampleOutput:
        """Applies the final step and counts evaluations; success says all values are finite."""
        x = self.final_step(self.sde, score_fn, state, self.grid[-1])
        nfe = self.stepper.nfe_per_step * self.num_steps + self.final_step.nfe
        return SampleOutput(x, jnp.asarray(nfe, jnp.int32), jnp.all(jnp.isfinite(x)))

    def __call__(self, key: Key, score_fn: ScoreFn) -> SampleOutput:
        """Draws a batch: prior sample, all steps, final step."""
        init_key, step_key = jax.random.split(key)
        state = self.advance(step_key, score_fn, self.init(init_key), 0, self.num_steps)
        return self.finish(score_fn, state)


def sample(
    key: Key,
    score_fn: ScoreFn,
    stepper: Stepper,
    grid: Array,
    shape: tuple[int, ...],
    *,
    sde: SDE,
    final_step: FinalStep = NoiseFreeMean(),
    dtype: Any = jnp.float32,
) -> SampleOutput:
    """Draws a batch: x_T from ``sde``'s prior, ``stepper`` over ``grid``, ``final_step``.

    Algorithm 1 of the paper with a PC stepper; any stepper, grid and final step otherwise.
    Equal to ``FixedGridSampler(sde, stepper, grid, shape, final_step, dtype)(key, score_fn)``
    (and so to ``build.get_sampler``'s sampler of the same parts, key for key).

    Args:
      key: PRNG key (split into the prior's and the steps').
      score_fn: ``score_fn(x, t) -> score``, ``t`` of shape ``[batch]``.
      stepper: the step rule, e.g. ``steppers.PredictorCorrector(...)``.
      grid: decreasing times ``[num_steps + 1]`` from T to eps, e.g. ``grids.log_snr_grid``.
      shape: the batch shape ``(batch, ...)``.
      sde: the forward SDE, whose prior gives x_T.
      final_step: what the last step returns (default :class:`NoiseFreeMean`, the paper's
        for PC samplers and a no-op for ODE steppers; :class:`TweedieDenoising` for ODEs).
      dtype: the floating dtype of the samples (float64 needs ``jax_enable_x64``).

    Returns:
      ``SampleOutput(x [shape], nfe, success)``, success False if a value is non-finite.

    Raises:
      ValueError: for a bad ``shape`` or ``grid``.
      TypeError: if ``stepper`` or ``final_step`` lacks the interface.
    """
    return FixedGridSampler(sde, stepper, grid, shape, final_step, dtype)(key, score_fn)


def sample_in_chunks(
    sampler: FixedGridSampler,
    key: Key,
    score_fn: ScoreFn,
    chunk_steps: int,
    report: Callable[[int, int], None] | None = None,
) -> SampleOutput:
    """Runs a fixed-grid sampler in compiled chunks of steps, reporting progress between them.

    The result equals ``sampler(key, score_fn)`` exactly. Each chunk is one compiled call, so
    the loop inside stays on device; at most two chunk lengths are compiled.

    Args:
      sampler: the sampler to run.
      key: PRNG key.
      score_fn: the score function.
      chunk_steps: steps per compiled call.
      report: called as ``report(steps_done, total_steps)`` after each chunk.

    Returns:
      The sampler's output.
    """
    validation.integer("chunk_steps", chunk_steps, minimum=1)
    init_key, step_key = jax.random.split(key)
    advance = jax.jit(
        lambda state, start, n: sampler.advance(step_key, score_fn, state, start, n),
        static_argnums=2,
    )
    state = jax.jit(sampler.init)(init_key)
    done, total = 0, sampler.num_steps
    while done < total:
        n = min(chunk_steps, total - done)
        state = jax.block_until_ready(advance(state, done, n))
        done += n
        if report is not None:
            report(done, total)
    return jax.jit(lambda state: sampler.finish(score_fn, state))(state)


# --------------------------------------------------------------------------------------------
# The adaptive probability-flow ODE.


@dataclasses.dataclass(frozen=True)
class AdaptiveODESampler:
    """The probability-flow ODE (eq. 13) solved by adaptive Dormand-Prince 5(4) from T to eps.

    ``sampler(key, score_fn) -> SampleOutput``; the whole key draws the prior sample.

    Attributes:
      sde: the forward SDE.
      shape: ``(batch, ...)``.
      eps: the final time, in (0, T).
      rtol: relative tolerance.
      atol: absolute tolerance.
      max_steps: step limit; past it the output reports ``success=False``.
      final_step: :class:`TweedieDenoising` (default: one more evaluation at eps) or
        :class:`NoDenoising`.
      dtype: the floating dtype of the samples.
      adjoint: reverse mode through the solve (:mod:`sde_jax.adjoint`): None (default, no
        ``jax.grad``), ``RecursiveCheckpoint()`` or ``Backsolve()``.

    Raises:
      ValueError: for a bad ``shape``, ``eps``, tolerance or ``max_steps``.
      TypeError: if ``final_step`` lacks the interface or ``adjoint`` is not a choice.
    """

    sde: SDE
    shape: tuple[int, ...]
    eps: float
    rtol: float = 1e-5
    atol: float = 1e-5
    max_steps: int = 4096
    final_step: FinalStep = TweedieDenoising()
    dtype: Any = jnp.float32
    adjoint: Any = None

    def __post_init__(self):
        check_shape(self.shape)
        check_adjoint(self.adjoint)
        validation.interval("eps", self.eps, 0, self.sde.T, closed=(False, False))
        for name in ("rtol", "atol"):
            validation.interval(name, getattr(self, name), 0, math.inf, closed=(False, True))
        validation.integer("max_steps", self.max_steps, minimum=1)
        _check_final_step(self.final_step)

    def __call__(self, key: Key, score_fn: ScoreFn) -> SampleOutput:
        """Draws a batch by solving the probability-flow ODE from a prior sample."""

        def velocity(t, x):
            return probability_flow_drift(self.sde, score_fn, x, t)

        x_init = self.sde.prior_sampling(key, self.shape, self.dtype)
        solution = ode.solve_adaptive(
            velocity,
            x_init,
            jnp.asarray(self.sde.T, x_init.dtype),
            jnp.asarray(self.eps, x_init.dtype),
            rtol=self.rtol,
            atol=self.atol,
            max_steps=self.max_steps,
            adjoint=self.adjoint,
        )
        state = State(solution.y, solution.y)
        x = self.final_step(self.sde, score_fn, state, self.eps)
        success = solution.success & jnp.all(jnp.isfinite(x))
        return SampleOutput(x, solution.nfe + self.final_step.nfe, success)


def sample_adaptive(
    key: Key,
    score_fn: ScoreFn,
    shape: tuple[int, ...],
    *,
    sde: SDE,
    eps: float | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 4096,
    final_step: FinalStep = TweedieDenoising(),
    dtype: Any = jnp.float32,
    adjoint: Any = None,
) -> SampleOutput:
    """Draws a batch by the adaptive probability-flow ODE (the paper's RK45 sampler).

    Equal to ``AdaptiveODESampler(sde, shape, eps, rtol, atol, max_steps, final_step,
    dtype, adjoint)(key, score_fn)``.

    Args:
      key: PRNG key of the prior sample.
      score_fn: ``score_fn(x, t) -> score``.
      shape: the batch shape ``(batch, ...)``.
      sde: the forward SDE, whose prior gives x_T.
      eps: the final time; None: :func:`default_eps` of ``sde``.
      rtol: relative tolerance of Dormand-Prince 5(4).
      atol: absolute tolerance.
      max_steps: step limit; past it ``success`` is False.
      final_step: :class:`TweedieDenoising` (default) or :class:`NoDenoising`.
      dtype: the floating dtype of the samples.
      adjoint: None (default: no ``jax.grad``), ``sde_jax.adjoint.RecursiveCheckpoint()``
        (exact gradient of the discrete solve) or ``sde_jax.adjoint.Backsolve()``.

    Returns:
      ``SampleOutput(x [shape], nfe, success)``; the batch shares the steps (one error norm).

    Raises:
      ValueError: for a bad ``shape``, ``eps``, tolerance or ``max_steps``.
    """
    eps = default_eps(sde) if eps is None else eps
    sampler = AdaptiveODESampler(sde, shape, eps, rtol, atol, max_steps, final_step, dtype, adjoint)
    return sampler(key, score_fn)


def default_eps(sde: SDE) -> float:
    """The SDE's smallest sampling time, ``sde.default_eps``.

    1e-5 for VE and 1e-3 for VP and sub-VP (the paper's), 1e-3 for cosine VP, sigma_min for EDM.
    """
    return sde.default_eps
