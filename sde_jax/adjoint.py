r"""Reverse-mode differentiation of the adaptive ODE solve: pass one to ``adjoint=``.

:func:`sde_jax.ode.solve_adaptive` runs a ``lax.while_loop``, whose number of iterations is
only known at run time; JAX cannot differentiate that in reverse mode. Passing ``adjoint=`` to
it (and to :func:`sde_jax.likelihood.log_likelihood`, :func:`sde_jax.sampling.sample_adaptive`,
:class:`sde_jax.sampling.AdaptiveODESampler` and
:class:`sde_jax.controllable.latent.LatentCodec`) picks one of two ways to get
``jax.grad`` / ``jax.vjp`` with respect to the initial state and to any array the vector field
uses (closed over, or a pytree of parameters the caller differentiates):

- :class:`RecursiveCheckpoint` (discretize-then-optimize; Kidger's diffrax calls it
  ``RecursiveCheckpointAdjoint``): the exact gradient of what the solver computed. The loop
  becomes a bounded one, ``max_steps`` predicated attempts in nested scans under
  ``jax.checkpoint``; a forward-only call skips finished blocks, so it costs about what the
  ``while_loop`` costs. Memory: ``levels * checkpoints`` saved solver states plus one step's
  residuals, :math:`O(\sqrt{n})` by default and :math:`O(\log n)` with ``checkpoints=2``, for
  ``n = max_steps``; compute: the forward pass plus about ``levels`` recomputations of it.
- :class:`Backsolve` (optimize-then-discretize, the continuous adjoint of Chen et al., 2018,
  "Neural ordinary differential equations", eq. 4 and Algorithm 1): a ``jax.custom_vjp``
  whose backward pass solves the adjoint ODE from ``t1`` back to ``t0`` with the same
  adaptive solver. Memory :math:`O(1)` in the number of steps (no solver state is stored);
  the gradient is approximate: it is the gradient of the exact flow, computed to the solver's
  tolerance, not of the discrete solve, and it reconstructs ``y(t)`` backward, which an
  unstable backward flow amplifies. Measured on the tests' problems (rtol = atol = 1e-8,
  float64): relative error about 1e-7 against the closed-form derivative.

``adjoint=None`` (the default everywhere) keeps today's ``while_loop``: the fastest solve, and
no reverse mode (``jax.grad`` raises JAX's while_loop error; ``jax.jvp`` / ``jacfwd`` work).

Step sizes are constants of the gradient with either method: ``solve_adaptive`` applies
``lax.stop_gradient`` to its error norm and first step. The accept/reject decisions are
piecewise constant in the inputs, so the only dependence on them is through the step sizes,
whose effect on the result is of the order of the local error; dropping it is what diffrax
does too, and it keeps the gradient of a solve equal to the gradient of the same fixed-grid
Dormand-Prince solve over the accepted steps.
"""

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from sde_jax import ode

__all__ = ["ADJOINT_CHOICES", "Backsolve", "RecursiveCheckpoint", "check_adjoint"]

PyTree = Any
ADJOINT_CHOICES = ("None", "RecursiveCheckpoint()", "Backsolve()")


def _static(cls):
    """A frozen dataclass registered as a pytree without leaves (all fields static)."""
    cls = dataclasses.dataclass(frozen=True)(cls)
    return jax.tree_util.register_static(cls)


def check_adjoint(adjoint: object, name: str = "adjoint") -> None:
    """Raises TypeError unless ``adjoint`` is None, a RecursiveCheckpoint or a Backsolve."""
    if adjoint is not None and not isinstance(adjoint, RecursiveCheckpoint | Backsolve):
        raise TypeError(
            f"{name} must be one of {', '.join(ADJOINT_CHOICES)} (from sde_jax.adjoint), got "
            f"{name}={adjoint!r}."
        )


# --------------------------------------------------------------------------------------------
# Discretize-then-optimize: a bounded, checkpointed loop.


@_static
class RecursiveCheckpoint:
    r"""Differentiate the solver's own arithmetic, with nested checkpointing.

    The ``while_loop`` of :func:`sde_jax.ode.solve_adaptive` is replaced by ``levels`` nested
    ``lax.scan`` s of ``checkpoints`` iterations each (``checkpoints ** levels >= max_steps``);
    the innermost iteration is one solver attempt, run only while the solve is unfinished
    (``lax.cond``), and every block is wrapped in ``jax.checkpoint``. Reverse mode then stores
    the carry at the start of every block of every level and recomputes a block when it
    reaches it: ``levels * checkpoints`` stored states instead of ``max_steps``, at the cost
    of about ``levels`` extra forward passes (Griewank, 1992, "Achieving logarithmic growth of
    temporal and spatial complexity in reverse automatic differentiation"; diffrax's
    ``RecursiveCheckpointAdjoint`` uses Stumm & Walther's online binomial scheme instead).

    Values are those of the plain solve to rounding: same stages, same decisions.

    Attributes:
      checkpoints: iterations per level. None: :math:`\lceil\sqrt{n}\rceil` (two levels,
        memory :math:`O(\sqrt n)`, one recomputation); 2: :math:`\lceil\log_2 n\rceil`
        levels (memory :math:`O(\log n)`, ``log2 n`` recomputations).

    Raises:
      ValueError: if ``checkpoints`` is not None or an integer >= 2.
    """

    checkpoints: int | None = None

    def __post_init__(self):
        c = self.checkpoints
        if c is not None and (isinstance(c, bool) or not isinstance(c, int) or c < 2):
            raise ValueError(f"checkpoints must be None or an integer >= 2, got checkpoints={c!r}.")

    def schedule(self, max_steps: int) -> tuple[int, int]:
        """``(levels, checkpoints)`` for a budget of ``max_steps`` attempts."""
        per_level = self.checkpoints or max(2, math.isqrt(max_steps - 1) + 1)
        levels = 1
        while per_level**levels < max_steps:
            levels += 1
        return levels, per_level

    def while_loop(
        self,
        cond: Callable[[PyTree], Any],
        body: Callable[[PyTree], PyTree],
        init: PyTree,
        *,
        max_steps: int,
    ) -> PyTree:
        """``lax.while_loop(cond, body, init)``, reverse-mode differentiable.

        ``cond`` must turn False within ``max_steps`` iterations (the solver's budget).
        """
        levels, per_level = self.schedule(max_steps)

        def guarded(block):
            return lambda state: jax.lax.cond(cond(state), block, lambda s: s, state)

        def repeat(block):
            def run(state):
                step = lambda s, _: (block(s), None)  # noqa: E731
                return jax.lax.scan(step, state, None, length=per_level)[0]

            return run

        block = guarded(body)
        for _ in range(levels):
            block = guarded(repeat(jax.checkpoint(block, prevent_cse=False)))
        return block(init)


# --------------------------------------------------------------------------------------------
# Optimize-then-discretize: the continuous adjoint.


def _split_consts(consts):
    """Indices of the closed-over constants that can carry a gradient (inexact dtypes)."""
    return [i for i, c in enumerate(consts) if jnp.issubdtype(jnp.result_type(c), jnp.inexact)]


def _zero_cotangent(x):
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.inexact):
        return jnp.zeros_like(x)
    return jnp.zeros(x.shape, jax.dtypes.float0)


@_static
class Backsolve:
    r"""The continuous adjoint: solve the adjoint ODE backward in time for the gradient.

    With :math:`a(t) = \partial L / \partial y(t)` and the vector field's parameters
    :math:`\theta` (every floating array it closes over, found by ``jax.closure_convert``),
    the backward pass integrates (Chen et al., 2018, eq. 4 and Algorithm 1)

    .. math:: \frac{d}{dt}\begin{pmatrix} y \\ a \\ g \end{pmatrix} =
              \begin{pmatrix} f(t, y, \theta) \\ -a^\top \partial_y f \\
              -a^\top \partial_\theta f \end{pmatrix}, \quad
              a(t_1) = \bar y_1,\ g(t_1) = 0,

    from :math:`t_1` to :math:`t_0` with :func:`sde_jax.ode.solve_adaptive` at the forward
    tolerances; :math:`a(t_0)` is the gradient with respect to ``y0`` and :math:`g(t_0)` with
    respect to :math:`\theta`. Each evaluation is one ``jax.vjp`` of ``fn``. Times get zero
    gradients. The error norm of the backward solve spans ``y``, ``a`` and ``g``.

    Attributes:
      rtol: relative tolerance of the backward solve; None: the forward one.
      atol: absolute tolerance of the backward solve; None: the forward one.

    Raises:
      ValueError: if a tolerance is given and not positive.
    """

    rtol: float | None = None
    atol: float | None = None

    def __post_init__(self):
        for name in ("rtol", "atol"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be None or > 0, got {name}={value!r}.")

    def solve(self, fn, y0, t0, t1, *, rtol, atol, max_steps, first_step) -> ode.ODESolution:
        """:func:`sde_jax.ode.solve_adaptive` with this backward pass; same arguments."""
        y0 = jax.tree.map(jnp.asarray, y0)
        time_dtype = jnp.result_type(t0, t1, float)
        t0, t1 = jnp.asarray(t0, time_dtype), jnp.asarray(t1, time_dtype)
        closed, consts = jax.closure_convert(fn, t0, y0)
        options = dict(rtol=rtol, atol=atol, max_steps=max_steps, first_step=first_step)
        back = dict(options, rtol=self.rtol or rtol, atol=self.atol or atol, first_step=None)
        return _backsolve(closed, options, back, y0, t0, t1, consts)


def _forward(closed, options, y0, t0, t1, consts):
    return ode.solve_adaptive(lambda t, y: closed(t, y, *consts), y0, t0, t1, **options)


def _backsolve(closed, options, back, y0, t0, t1, consts):
    # custom_vjp cannot take functions and dicts as differentiable inputs: close over them.
    @jax.custom_vjp
    def run(y0, t0, t1, consts):
        return _forward(closed, options, y0, t0, t1, consts)

    def run_fwd(y0, t0, t1, consts):
        solution = _forward(closed, options, y0, t0, t1, consts)
        return solution, (solution.y, t0, t1, consts)

    def run_bwd(residuals, cotangent):
        y1, t0, t1, consts = residuals
        live = _split_consts(consts)

        def field(t, y, params):
            full = list(consts)
            for i, p in zip(live, params, strict=True):
                full[i] = p
            return closed(t, y, *full)

        params = [consts[i] for i in live]

        def augmented(t, state):
            y, a, _ = state
            dy, pullback = jax.vjp(lambda y, p: field(t, y, p), y, params)
            da, dp = pullback(a)
            neg = lambda tree: jax.tree.map(jnp.negative, tree)  # noqa: E731
            return dy, neg(da), neg(dp)

        a1 = jax.tree.map(lambda c, y: jnp.asarray(c, y.dtype), cotangent.y, y1)
        g1 = jax.tree.map(jnp.zeros_like, params)
        solution = ode.solve_adaptive(augmented, (y1, a1, g1), t1, t0, **back)
        _, a0, g0 = solution.y
        grads = [_zero_cotangent(c) for c in consts]
        for i, g in zip(live, g0, strict=True):
            grads[i] = g
        return a0, jnp.zeros_like(t0), jnp.zeros_like(t1), grads

    run.defvjp(run_fwd, run_bwd)
    return run(y0, t0, t1, list(consts))
