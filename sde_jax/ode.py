r"""On-device ODE solvers over pytrees: fixed-step Euler, Heun and RK4, and adaptive Dormand-Prince.

Every solver integrates :math:`dy/dt = f(t, y)` where ``fn(t, y)`` takes a scalar time array and
a pytree ``y`` and returns a pytree of the same structure. Everything runs inside
``lax.scan`` / ``lax.while_loop`` with no host round trips and no ``jit``: the caller compiles,
vmaps and shards. Each leaf keeps its dtype; time may be float32 while the state is float64.

- Fixed steps (:func:`euler_step`, :func:`heun_step`, :func:`rk4_step`) advance one step from
  ``t`` to ``t_next``; :data:`EULER`, :data:`HEUN` and :data:`RK4` pair each with its order
  and evaluations per step (:class:`FixedStep`), :data:`FIXED_STEPS` names them,
  and :func:`solve_fixed` runs one over a time grid (differentiable with ``jax.grad``).
- :func:`solve_adaptive` runs an embedded pair (:mod:`sde_jax.tableaux`), by default the
  Dormand-Prince 5(4) pair (Dormand & Prince, 1980; the RK45 the paper's PF-ODE sampler and
  likelihood used), also Tsitouras 5(4) (:data:`TSIT5`) and Dormand-Prince 8(5,3)
  (:data:`DOP853`), with first-same-as-last reuse and a PI step-size controller. Its error
  norm is one RMS over every element of every leaf, reduced in a fixed order, so a whole
  batch (and every device holding a shard of it) takes the same steps.
"""

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from sde_jax import validation
from sde_jax.tableaux import DOP853, DOPRI5, PAIRS, TSIT5, Tableau

__all__ = [
    "DOP853",
    "DOPRI5",
    "EULER",
    "FIXED_STEPS",
    "HEUN",
    "PAIRS",
    "RK4",
    "TSIT5",
    "FixedStep",
    "ODESolution",
    "Tableau",
    "euler_step",
    "heun_step",
    "rk4_step",
    "solve_adaptive",
    "solve_fixed",
]

PyTree = Any
Scalar = Float[ArrayLike, ""]
Grid = Float[ArrayLike, " num_times"]
VectorField = Callable[[Array, PyTree], PyTree]
"""``fn(t, y) -> dy/dt``: ``t`` a scalar array, ``y`` and the result pytrees of one structure."""


# --------------------------------------------------------------------------------------------
# Pytree arithmetic. Coefficients are Python floats and the step is cast to each leaf's dtype,
# so a float64 state stays float64 and a float32 state stays float32 whatever the time dtype.


def _axpy(y: PyTree | None, h: Array, coeffs: tuple[float, ...], ks: tuple[PyTree, ...]) -> PyTree:
    """Returns ``y + h * sum_j coeffs[j] * ks[j]`` (without ``y`` if None), skipping zeros."""
    terms = [(c, k) for c, k in zip(coeffs, ks, strict=True) if c != 0.0]

    def leaf(y_leaf, *k_leaves):
        acc = sum(c * k for (c, _), k in zip(terms, k_leaves, strict=True))
        dtype = k_leaves[0].dtype if y_leaf is None else y_leaf.dtype
        acc = h.astype(dtype) * acc
        return (acc if y_leaf is None else y_leaf + acc).astype(dtype)

    if y is None:
        return jax.tree.map(lambda *k: leaf(None, *k), *[k for _, k in terms])
    return jax.tree.map(leaf, y, *[k for _, k in terms])


def _order_free_sum(v: Array) -> Array:
    """The sum of the non-negative vector ``v``, the same whatever order it is added in.

    A float sum depends on the order of its additions, and a sharded array is reduced in
    another order than the same array on one device, so an adaptive solver's accept/reject
    decisions (and its step count) would depend on the device count. Here every entry is
    written as a fixed-point number relative to the (order-free) maximum, in two 16-bit-or-less
    integer parts, and the integers are summed exactly; the relative precision is about
    ``2**-2b`` with ``b = 30 - ceil(log2(len(v)))`` bits (``2**-32`` for up to 16,384 rows),
    finer than float32 rounding. A non-finite entry makes the result non-finite.
    """
    bits = min(16, 30 - math.ceil(math.log2(max(v.size, 2))))
    scale = 2.0**bits
    top = jnp.max(v)
    ref = jnp.where(jnp.isfinite(top) & (top > 0), top, 1.0)
    scaled = jnp.clip(v / ref, 0.0, 1.0) * scale
    hi = jnp.floor(scaled)
    lo = jnp.floor((scaled - hi) * scale)
    total = jnp.sum(hi.astype(jnp.int32)).astype(v.dtype) / scale
    total = total + jnp.sum(lo.astype(jnp.int32)).astype(v.dtype) / scale**2
    return jnp.where(jnp.isfinite(top), ref * total, top)


def _rms(tree: PyTree) -> Array:
    """Root mean square over all elements of all leaves (one scalar for the whole pytree)."""
    total, count = _sum_of_squares(tree)
    return jnp.sqrt(total / count)


def _sum_of_squares(tree: PyTree) -> tuple[Array, int]:
    """The sum of squares of all elements of all leaves, and their number.

    Each leaf is first reduced over all but its leading (batch) axis, so an example's sum
    stays on the device that holds it; the per-row sums are then added by
    :func:`_order_free_sum`, so 1, 2 or 8 devices holding shards of a batch compute the same
    norm to the last bit and take the same steps.
    """
    leaves = jax.tree.leaves(tree)
    rows = []
    for leaf in leaves:
        squares = jnp.square(leaf.astype(jnp.result_type(leaf, jnp.float32)))
        rows.append(jnp.reshape(jnp.sum(squares, axis=tuple(range(1, squares.ndim))), (-1,)))
    count = sum(leaf.size for leaf in leaves)
    return _order_free_sum(jnp.concatenate(_common_layout(rows))), count


def _common_layout(rows: list[Array]) -> list[Array]:
    """The rows, replicated if an explicit-axis mesh gives them different shardings.

    Under a mesh of explicit axes (``jax.make_mesh``'s default) arrays carry their sharding in
    their type, and a batch-sharded row cannot be concatenated with a replicated one (the
    continuous adjoint's parameter cotangents); the rows are per-example sums, so gathering
    them costs one small collective. Automatic-axis meshes and one device pass unchanged.
    """
    shardings = [jax.typeof(row).sharding for row in rows]
    meshes = [s.mesh for s in shardings if on_explicit_mesh(s)]
    if not meshes or len({s.spec for s in shardings}) == 1:
        return rows
    replicated = jax.NamedSharding(meshes[0], jax.P())
    return [jax.sharding.reshard(row, replicated) for row in rows]


def on_explicit_mesh(sharding) -> bool:
    """Whether ``sharding`` lies on a mesh of explicit axes (its arrays' types carry it)."""
    mesh = getattr(sharding, "mesh", None)
    return bool(mesh is not None and not mesh.empty and mesh.explicit_axes)


def _sharding(x):
    return x.sharding if isinstance(x, jax.ShapeDtypeStruct) else jax.typeof(x).sharding


def retyped(x: Array, like) -> Array:
    """``x`` resharded to the sharding type of ``like`` (an array or ShapeDtypeStruct).

    Only meshes of explicit axes (``jax.make_mesh``'s default) type arrays by their sharding;
    there a state leaf started from unsharded zeros (an accumulator) and its sharded
    derivative have different types, which loops and their transposes reject. Elsewhere this
    returns ``x`` unchanged.
    """
    want, have = _sharding(like), jax.typeof(x).sharding
    if want == have or not (on_explicit_mesh(want) or on_explicit_mesh(have)):
        return x
    mesh = want.mesh if on_explicit_mesh(want) else have.mesh
    return jax.sharding.reshard(x, jax.NamedSharding(mesh, want.spec))


def _zeros(like: jax.ShapeDtypeStruct) -> Array:
    if on_explicit_mesh(like.sharding):
        return jnp.zeros(like.shape, like.dtype, out_sharding=like.sharding)
    return jnp.zeros(like.shape, like.dtype)


# --------------------------------------------------------------------------------------------
# Fixed steps.


def euler_step(fn: VectorField, t: Scalar, t_next: Scalar, y: PyTree) -> PyTree:
    r"""One explicit Euler step, order 1: :math:`y + h f(t, y)` with :math:`h = t_{next} - t`."""
    t = jnp.asarray(t)
    h = jnp.asarray(t_next) - t
    return _axpy(y, h, (1.0,), (fn(t, y),))


def heun_step(fn: VectorField, t: Scalar, t_next: Scalar, y: PyTree) -> PyTree:
    r"""One Heun step (explicit trapezoid), order 2; the second-order step of EDM (Alg. 1).

    .. math:: d_1 = f(t, y),\quad d_2 = f(t_{next}, y + h d_1),\quad
              y_{next} = y + \tfrac{h}{2}(d_1 + d_2).
    """
    t, t_next = jnp.asarray(t), jnp.asarray(t_next)
    h = t_next - t
    d1 = fn(t, y)
    d2 = fn(t_next, _axpy(y, h, (1.0,), (d1,)))
    return _axpy(y, h, (0.5, 0.5), (d1, d2))


def rk4_step(fn: VectorField, t: Scalar, t_next: Scalar, y: PyTree) -> PyTree:
    r"""One classic fourth-order Runge-Kutta step, order 4, four evaluations.

    .. math:: y_{next} = y + \tfrac{h}{6}(k_1 + 2k_2 + 2k_3 + k_4).
    """
    t, t_next = jnp.asarray(t), jnp.asarray(t_next)
    h = t_next - t
    t_mid = t + 0.5 * h
    k1 = fn(t, y)
    k2 = fn(t_mid, _axpy(y, h, (0.5,), (k1,)))
    k3 = fn(t_mid, _axpy(y, h, (0.5,), (k2,)))
    k4 = fn(t_next, _axpy(y, h, (1.0,), (k3,)))
    return _axpy(y, h, (1 / 6, 1 / 3, 1 / 3, 1 / 6), (k1, k2, k3, k4))


StepFn = Callable[[VectorField, Scalar, Scalar, PyTree], PyTree]


class FixedStep(NamedTuple):
    """A fixed-step method: the step function, its order of accuracy, evaluations per step."""

    step: StepFn
    order: int
    nfe: int


EULER = FixedStep(euler_step, order=1, nfe=1)
HEUN = FixedStep(heun_step, order=2, nfe=2)
RK4 = FixedStep(rk4_step, order=4, nfe=4)
FIXED_STEPS: dict[str, FixedStep] = {"euler": EULER, "heun": HEUN, "rk4": RK4}
"""The fixed steps by name, with their order and number of evaluations of ``fn`` per step."""


def _resolve_step(step: str | FixedStep | StepFn) -> StepFn:
    if isinstance(step, str):
        validation.choice("step", step, FIXED_STEPS, sort=True)
        return FIXED_STEPS[step].step
    if isinstance(step, FixedStep):
        return step.step
    if not callable(step):
        raise TypeError(
            f"step must be a step function, a FixedStep or one of {sorted(FIXED_STEPS)}, "
            f"got {step!r}."
        )
    return step


def solve_fixed(step: str | FixedStep | StepFn, fn: VectorField, y0: PyTree, grid: Grid) -> PyTree:
    """Integrates from ``grid[0]`` to ``grid[-1]`` with one ``step`` between consecutive points.

    The grid may decrease (backward in time). The loop is a ``lax.scan``, so the result is
    differentiable with ``jax.grad`` (reverse mode through the scan) and ``jax.jvp``.

    Args:
      step: a step function ``step(fn, t, t_next, y)`` such as :func:`rk4_step`, a
        :class:`FixedStep`, or a name in :data:`FIXED_STEPS`.
      fn: the vector field ``fn(t, y)``.
      y0: the state at ``grid[0]``, any pytree of arrays.
      grid: the times, shape ``[num_times]`` with ``num_times >= 2``.

    Returns:
      The state at ``grid[-1]``, with the structure and dtypes of ``y0``.

    Raises:
      ValueError: if ``step`` is an unknown name or ``grid`` is not 1-D with at least 2 points.
    """
    step_fn = _resolve_step(step)
    grid = jnp.asarray(grid)
    if grid.ndim != 1 or grid.shape[0] < 2:
        raise ValueError(
            f"grid must have shape (num_times,) with num_times >= 2, got {grid.shape}."
        )
    y0 = jax.tree.map(jnp.asarray, y0)

    def body(y, times):
        t, t_next = times
        return step_fn(fn, t, t_next, y), None

    y_end, _ = jax.lax.scan(body, y0, (grid[:-1], grid[1:]))
    return y_end


# --------------------------------------------------------------------------------------------
# Adaptive Dormand-Prince 5(4).

# The pairs' coefficients live in sde_jax.tableaux. These are Dormand-Prince's (the default),
# row i of _TABLEAU giving stage i+2 from stages 1..7, zero-padded; its last row is b (FSAL).
_C = DOPRI5.c[1:]
_TABLEAU = DOPRI5.padded_rows()
_E = DOPRI5.b_error
_STAGES = DOPRI5.stages
_ERROR_ORDER = DOPRI5.error_order  # the local error of the embedded 4th-order solution is O(h^5)

# PI controller (Gustafsson; the constants Hairer & Wanner use for DOPRI5): on acceptance
# h <- h * safety * err^-(1/q - 0.75 beta) * err_prev^beta, with beta = 0.04 and q the pair's
# error order (5 for a 5(4) pair); on rejection the plain I-controller h <- h * safety *
# err^-(1/q). The factor is clipped to [0.2, 10].
_SAFETY = 0.9
_BETA = 0.04
_MIN_FACTOR = 0.2
_MAX_FACTOR = 10.0
_ERR_PREV_FLOOR = 1e-4


class ODESolution(NamedTuple):
    """The result of :func:`solve_adaptive`.

    Attributes:
      y: the state at the end, with the structure and dtypes of ``y0``.
      t: the time reached, equal to ``t1`` on success.
      nfe: int32, evaluations of ``fn``: ``nfe_per_step * (num_steps + num_rejected) + 1``
        (``nfe_per_step`` = 6 for Dormand-Prince), plus 1 when the initial step came from the
        heuristic (``first_step=None``).
      num_steps: int32, accepted steps.
      num_rejected: int32, rejected steps.
      success: bool, True iff ``t1`` was reached within ``max_steps`` with finite values.
    """

    y: PyTree
    t: Array
    nfe: Int[Array, ""]
    num_steps: Int[Array, ""]
    num_rejected: Int[Array, ""]
    success: Bool[Array, ""]


class _State(NamedTuple):
    t: Array
    y: PyTree
    k1: PyTree  # fn(t, y), carried over from the previous step's last stage
    h: Array  # signed step size to try next
    err_prev: Array
    num_steps: Array
    num_rejected: Array
    done: Array
    stalled: Array  # the step underflowed: t + h == t


def _scaled(tree: PyTree, y_a: PyTree, y_b: PyTree, rtol: float, atol: float) -> PyTree:
    """``tree / (atol + rtol * max(|y_a|, |y_b|))``, leaf by leaf."""
    return jax.tree.map(
        lambda e, a, b: e / (atol + rtol * jnp.maximum(jnp.abs(a), jnp.abs(b))), tree, y_a, y_b
    )


def _probe_step(y0, f0, direction, span, rtol, atol):
    """The heuristic's first guess ``h0`` and the point it probes (Hairer et al., II.4)."""
    d0 = _rms(_scaled(y0, y0, y0, rtol, atol))
    d1 = _rms(_scaled(f0, y0, y0, rtol, atol))
    h0 = jnp.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / d1).astype(span.dtype)
    # Never probe fn outside [t0, t1]: it may not be defined there.
    h0 = jax.lax.stop_gradient(jnp.minimum(h0, span))  # a step size: constant to gradients
    return h0, d1, _axpy(y0, direction * h0, (1.0,), (f0,))


def _start(fn, t0, y0, direction, span, rtol, atol, heuristic: bool, error_order=_ERROR_ORDER):
    """``(f0, h)``: ``fn(t0, y0)`` and the starting step (None unless ``heuristic``).

    The step is Hairer, Nørsett & Wanner's (1993, II.4) heuristic. It needs ``fn`` at a second
    point that depends on ``f0``; both evaluations run in one two-iteration ``lax.scan``, so
    the program holds one more copy of ``fn``, not two.
    """
    if not heuristic:
        return fn(t0, y0), None

    def evaluate(f0, first):
        h0, _, y1 = _probe_step(y0, f0, direction, span, rtol, atol)
        t = jnp.where(first, t0, t0 + direction * h0)
        y = jax.tree.map(lambda a, b: jnp.where(first, a, b), y0, y1)
        f = fn(t, y)
        return jax.tree.map(lambda a, b: jnp.where(first, a, b), f, f0), f

    zeros = jax.eval_shape(fn, t0, y0)
    zeros = jax.tree.map(_zeros, zeros)
    f0, both = jax.lax.scan(evaluate, zeros, jnp.array([True, False]))
    f1 = jax.tree.map(lambda b: b[1], both)
    h0, d1, _ = _probe_step(y0, f0, direction, span, rtol, atol)
    diff = jax.tree.map(lambda a, b: a - b, f1, f0)
    d2 = _rms(_scaled(diff, y0, y0, rtol, atol)) / h0
    d12 = jnp.maximum(d1, d2)
    h1 = jnp.where(
        d12 <= 1e-15,
        jnp.maximum(1e-6, 1e-3 * h0),
        (0.01 / d12) ** (1.0 / error_order),
    ).astype(t0.dtype)
    h = jnp.minimum(100.0 * h0, h1)
    return f0, jnp.where(jnp.isfinite(h) & (h > 0), h, h0)


def _combine(y: PyTree | None, h: Array, coeffs: Array, ks: tuple[PyTree, ...]) -> PyTree:
    """``y + h * sum_j coeffs[j] * ks[j]`` (without ``y`` if None); ``coeffs`` an array."""

    def leaf(y_leaf, *k_leaves):
        dtype = k_leaves[0].dtype if y_leaf is None else y_leaf.dtype
        c = coeffs.astype(dtype)
        acc = h.astype(dtype) * sum(c[j] * k for j, k in enumerate(k_leaves))
        return acc if y_leaf is None else (y_leaf + acc).astype(dtype)

    if y is None:
        return jax.tree.map(lambda *k: leaf(None, *k), *ks)
    return jax.tree.map(leaf, y, *ks)


def _error_norm(tableau: Tableau, h, ks, y, y_new, rtol, atol) -> Array:
    r"""The pair's error norm: the RMS of the scaled estimate, or DOP853's 5/3 combination.

    With a second (third-order) estimate :math:`e_3` it is
    :math:`\|e_5\|^2 / \sqrt{N(\|e_5\|^2 + 0.01\|e_3\|^2)}` (Hairer et al., II.10), sums of
    squares over all elements, each reduced in a fixed order.
    """

    def scaled(coeffs):
        return _scaled(_combine(None, h, jnp.asarray(coeffs), ks), y, y_new, rtol, atol)

    if tableau.b_error_low is None:
        return _rms(scaled(tableau.b_error))
    high, count = _sum_of_squares(scaled(tableau.b_error))
    low, _ = _sum_of_squares(scaled(tableau.b_error_low))
    denom = high + 0.01 * low
    positive = denom > 0
    safe = jnp.where(positive, denom, 1.0)  # no 0/0 in the value or its gradient
    return jnp.where(positive, high / jnp.sqrt(count * safe), 0.0)


def _dopri_attempt(fn, t, y, k1, h, rtol, atol, tableau: Tableau = DOPRI5):
    """One trial step of size ``h`` from ``(t, y)`` with the pair ``tableau``, given ``k1``.

    ``k1 = fn(t, y)``. The stages 2..S run in a ``lax.fori_loop`` over the rows of the
    tableau, so the program holds one copy of ``fn`` (a network, or its jvp) instead of S - 1:
    compilation takes a fraction of the time, and each evaluation costs the same. The stages
    stay separate arrays (no stacked buffer), so a sharded batch keeps its sharding.

    Returns the high-order state, ``fn`` there (the next step's ``k1``) and the error norm.
    """
    stages = tableau.stages
    zero = jax.tree.map(jnp.zeros_like, k1)
    rows, nodes = jnp.asarray(tableau.padded_rows()), jnp.asarray(tableau.c[1:])

    def stage(i, ks):
        k = fn(t + nodes[i].astype(t.dtype) * h, _combine(y, h, rows[i], ks))
        put = lambda j, old: jax.tree.map(lambda a, b: jnp.where(i + 1 == j, a, b), k, old)  # noqa: E731
        return tuple(put(j, old) if j > 0 else old for j, old in enumerate(ks))

    ks = jax.lax.fori_loop(0, stages - 1, stage, (k1,) + (zero,) * (stages - 1))
    # The last row of the tableau is the high-order solution (FSAL); its stage is f at the
    # new point, which the next step reuses as its first stage.
    y_new = _combine(y, h, rows[-1], ks)
    err = _error_norm(tableau, h, ks, y, y_new, rtol, atol)
    return y_new, ks[-1], jnp.where(jnp.isfinite(err), err, jnp.inf)


def _step_factor(err, err_prev, accept, error_order: int = _ERROR_ORDER):
    """The PI controller's step-size factor (I-controller after a rejection)."""
    err = jnp.maximum(err, 1e-10)
    factor_accept = _SAFETY * err ** (-(1 / error_order - 0.75 * _BETA)) * err_prev**_BETA
    factor_reject = _SAFETY * err ** (-1.0 / error_order)
    factor = jnp.where(accept, factor_accept, factor_reject)
    # Never grow after a rejection; a non-finite error shrinks by the largest allowed factor.
    factor = jnp.clip(factor, _MIN_FACTOR, jnp.where(accept, _MAX_FACTOR, 1.0))
    return jnp.where(jnp.isfinite(factor), factor, _MIN_FACTOR)


def resolve_pair(method: str | Tableau) -> Tableau:
    """The pair ``method`` names (a key of :data:`PAIRS`) or is; errors name the choices."""
    if isinstance(method, str):
        validation.choice("method", method, PAIRS, sort=True)
        return PAIRS[method]
    if isinstance(method, Tableau):
        return method
    raise TypeError(
        f"method must be a Tableau such as ode.DOPRI5, ode.TSIT5 or ode.DOP853, or one of "
        f"{sorted(PAIRS)}, got method={method!r}."
    )


def solve_adaptive(
    fn: VectorField,
    y0: PyTree,
    t0: Scalar,
    t1: Scalar,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 4096,
    first_step: float | None = None,
    method: str | Tableau = DOPRI5,
    adjoint: Any = None,
) -> ODESolution:
    r"""Integrates ``dy/dt = fn(t, y)`` from ``t0`` to ``t1`` with an adaptive embedded pair.

    The pair is Dormand-Prince 5(4) by default (``method``; see :mod:`sde_jax.tableaux`).
    Each attempted step evaluates ``fn`` ``method.nfe_per_step`` times (stages 2..S: six for
    Dormand-Prince); stage S is ``fn`` at the new point and becomes stage 1 of the next step
    (FSAL). The step is accepted when

    .. math:: \mathrm{err} = \sqrt{\tfrac1N \textstyle\sum_i
              \big(e_i / (\mathrm{atol} + \mathrm{rtol}\max(|y_i|, |\hat y_i|))\big)^2} \le 1,

    where the sum runs over all N elements of all leaves, :math:`e = h\sum_j (b_j - b^*_j) k_j`
    and :math:`\hat y` the new high-order state (DOP853 combines two estimates instead, see
    :mod:`sde_jax.tableaux`). The whole batch therefore shares one step
    sequence, the right thing under data parallelism. The step size follows a PI controller.

    The loop is a ``lax.while_loop``: no host round trips, jittable, vmappable (each vmapped
    problem then has its own steps), but not reverse-mode differentiable unless ``adjoint``
    is given (:mod:`sde_jax.adjoint`). Step sizes are constants of every derivative (the
    error norm and the first step pass through ``lax.stop_gradient``).

    Args:
      fn: the vector field ``fn(t, y)``; ``t`` is a scalar array of the time dtype.
      y0: the state at ``t0``, any pytree of floating arrays.
      t0: the start time.
      t1: the end time; ``t1 < t0`` integrates backward.
      rtol: relative tolerance.
      atol: absolute tolerance.
      max_steps: the most steps attempted (accepted plus rejected) before giving up with
        ``success=False``.
      first_step: the size of the first step tried; by default chosen from ``fn`` with the
        Hairer-Nørsett-Wanner heuristic, at the cost of one evaluation.
      method: the embedded pair, a :class:`~sde_jax.tableaux.Tableau` (:data:`DOPRI5`,
        :data:`TSIT5`, :data:`DOP853`) or its name in :data:`PAIRS`. At the likelihood's
        tolerance 1e-5 the pairs' evaluations and errors are compared in
        benchmarks/ode_pairs.md.
      adjoint: how ``jax.grad`` differentiates the solve. None (default): not at all, the
        fastest solve (forward mode still works); ``sde_jax.adjoint.RecursiveCheckpoint()``:
        the exact gradient of the discrete solve, memory O(sqrt(max_steps)) states, a few
        times the forward compute; ``sde_jax.adjoint.Backsolve()``: the continuous adjoint,
        memory O(1) in the steps, cheaper, accurate to the solver tolerance.

    Returns:
      An :class:`ODESolution`. ``nfe = method.nfe_per_step * (num_steps + num_rejected) + 1 +
      (first_step is None)``. On failure (``max_steps`` reached, the step size underflowed, or
      ``fn`` was not finite at the start) ``success`` is False and ``y``, ``t`` hold the last
      accepted state.

    Raises:
      ValueError: if a tolerance is not positive, ``max_steps < 1``, ``first_step <= 0`` or
        ``method`` is an unknown name.
      TypeError: if ``method`` is neither a Tableau nor a name, or ``adjoint`` is not None,
        a ``RecursiveCheckpoint`` or a ``Backsolve``.
    """
    pair = resolve_pair(method)
    for name, value in (("rtol", rtol), ("atol", atol)):
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {name}={value!r}.")
    validation.integer("max_steps", max_steps, minimum=1)
    if first_step is not None and not first_step > 0:
        raise ValueError(f"first_step must be > 0 or None, got first_step={first_step!r}.")
    while_loop = jax.lax.while_loop
    if callable(getattr(adjoint, "solve", None)):  # a custom_vjp around this solve
        options = dict(rtol=rtol, atol=atol, max_steps=max_steps, first_step=first_step)
        return adjoint.solve(fn, y0, t0, t1, method=method, **options)
    if callable(getattr(adjoint, "while_loop", None)):  # a bounded, checkpointed loop
        while_loop = functools.partial(adjoint.while_loop, max_steps=max_steps)
    elif adjoint is not None:
        raise TypeError(
            "adjoint must be one of None, RecursiveCheckpoint(), Backsolve() (from "
            f"sde_jax.adjoint), got adjoint={adjoint!r}."
        )

    y0 = jax.tree.map(jnp.asarray, y0)
    time_dtype = jnp.result_type(t0, t1, float)
    t0 = jnp.asarray(t0, time_dtype)
    t1 = jnp.asarray(t1, time_dtype)
    if any(on_explicit_mesh(jax.typeof(leaf).sharding) for leaf in jax.tree.leaves(y0)):
        y0 = jax.tree.map(retyped, y0, jax.eval_shape(fn, t0, y0))
    direction = jnp.where(t1 >= t0, 1.0, -1.0).astype(time_dtype)
    span = jnp.abs(t1 - t0)

    f0, h_abs = _start(
        fn, t0, y0, direction, span, rtol, atol, first_step is None, pair.error_order
    )
    if first_step is not None:
        h_abs = jnp.asarray(first_step, time_dtype)
    h_abs = jax.lax.stop_gradient(jnp.minimum(h_abs, span))
    start_ok = jnp.isfinite(_rms(f0))

    def cond(state: _State):
        n = state.num_steps + state.num_rejected
        return (~state.done) & (~state.stalled) & (n < max_steps) & start_ok

    def body(state: _State) -> _State:
        y_new, k_last, err = _dopri_attempt(
            fn, state.t, state.y, state.k1, state.h, rtol, atol, pair
        )
        err = jax.lax.stop_gradient(err)  # step sizes are constants of the gradient
        accept = err <= 1.0
        t_try = state.t + state.h
        # Land exactly on t1, also when t + h rounds onto or past it.
        last = (jnp.abs(state.h) >= jnp.abs(t1 - state.t)) | (direction * (t1 - t_try) <= 0)
        t_new = jnp.where(last, t1, t_try)

        factor = _step_factor(err, state.err_prev, accept, pair.error_order).astype(time_dtype)

        t_next = jnp.where(accept, t_new, state.t)
        h_abs_next = jnp.minimum(jnp.abs(state.h) * factor, jnp.abs(t1 - t_next))
        h_next = direction * h_abs_next
        done = accept & last
        pick = lambda new, old: jax.tree.map(lambda a, b: jnp.where(accept, a, b), new, old)  # noqa: E731
        return _State(
            t=t_next,
            y=pick(y_new, state.y),
            k1=pick(k_last, state.k1),
            h=h_next,
            err_prev=jnp.where(accept, jnp.maximum(err, _ERR_PREV_FLOOR), state.err_prev),
            num_steps=state.num_steps + accept.astype(jnp.int32),
            num_rejected=state.num_rejected + (~accept).astype(jnp.int32),
            done=done,
            stalled=(~done) & ~(t_next + h_next != t_next),  # also catches a NaN step
        )

    err_dtype = jnp.result_type(_rms(f0))
    init = _State(
        t=t0,
        y=y0,
        k1=f0,
        h=direction * h_abs,
        err_prev=jnp.asarray(1.0, err_dtype),
        num_steps=jnp.asarray(0, jnp.int32),
        num_rejected=jnp.asarray(0, jnp.int32),
        done=span == 0,
        stalled=jnp.asarray(False),
    )
    final = while_loop(cond, body, init)
    attempts = final.num_steps + final.num_rejected
    nfe = pair.nfe_per_step * attempts + 1 + (1 if first_step is None else 0)
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(final.y)]))
    return ODESolution(
        y=final.y,
        t=final.t,
        nfe=nfe.astype(jnp.int32),
        num_steps=final.num_steps,
        num_rejected=final.num_rejected,
        success=final.done & finite & start_ok,
    )
