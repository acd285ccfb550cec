r"""Exact likelihood through the probability-flow ODE, and bits/dim for 8-bit images.

The PF-ODE (paper eq. 13) :math:`dx/dt = F(x, t) = f(t)x - \tfrac12 g(t)^2 \nabla\log p_t(x)`
is a continuous normalizing flow, so along its trajectories (instantaneous change of variables,
paper appendix D.2)

.. math:: \log p_\epsilon(x(\epsilon)) = \log p_T(x(T))
          + \int_\epsilon^T \nabla\cdot F(x(t), t)\,dt,

with :math:`p_T` replaced by the prior. :func:`log_likelihood` integrates :math:`x` and the
divergence integral jointly from :math:`\epsilon` to :math:`T` with the adaptive Dormand-Prince
solver of :mod:`sde_jax.ode`, on device. The divergence is the Hutchinson-Skilling estimate
:math:`v^\top (\partial F/\partial x) v` with probes :math:`v` fixed during the solve; each
:math:`(\partial F/\partial x) v` comes with :math:`F` itself from one ``jax.jvp`` (a single
forward-mode pass, about twice a network forward, where the original paid a vjp and a host
round trip per evaluation).

:func:`bits_per_dim` converts a log-density of dequantized 8-bit data to bits/dim with the
offset derived in its docstring; :func:`batch_bits_per_dim` evaluates one batch of integer
images under one draw of dequantization noise, and :func:`summarize_bits_per_dim` averages R
such passes over a split. The loop over a split (sharded, resumable) is
``sde_jax.evaluation.sharded_bits_per_dim``.
"""

import math
from collections.abc import Callable, Iterable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Float, Int

from sde_jax import ode, validation
from sde_jax.adjoint import check_adjoint
from sde_jax.array_types import Array, ArrayLike, Data, Key, PerExample, ScoreFn
from sde_jax.sdes import SDE, check_log_snr_inverse, probability_flow_drift

__all__ = [
    "BitsPerDim",
    "LikelihoodOutput",
    "batch_bits_per_dim",
    "bits_per_dim",
    "check_images",
    "dequantize",
    "divergence",
    "log_likelihood",
    "log_sigma",
    "summarize_bits_per_dim",
]

Probes = Float[Array, "num_probes batch *dims"]
Images = Int[ArrayLike, "batch *dims"]
Hutchinson = Literal["rademacher", "gaussian", "exact"]
TimeVariable = Literal["t", "log_sigma"]
HUTCHINSON_CHOICES = ("rademacher", "gaussian", "exact")
TIME_VARIABLE_CHOICES = ("t", "log_sigma")


class LikelihoodOutput(NamedTuple):
    """The result of :func:`log_likelihood`.

    Attributes:
      logp: ``[batch]`` log-density of each example in nats, in the space of ``x``; NaN for
        every example when the solver failed.
      z: the latent :math:`x(T)`, shaped like ``x``.
      nfe: int32, evaluations of the augmented ODE (drift plus divergence).
      success: bool, False when the ODE solver stopped before reaching T (``max_steps`` or
        non-finite values); ``logp`` is then NaN.
    """

    logp: PerExample
    z: Data
    nfe: Array
    success: Array


def divergence(fn: Callable[[Data], Data], x: Data, probes: Probes, *, average: bool = True):
    r"""Returns ``fn(x)`` and, per example, :math:`\tfrac1P\sum_p v_p^\top J v_p` (or the sum).

    ``J`` is the Jacobian of ``fn`` at ``x`` (block diagonal over the batch when ``fn`` acts on
    examples independently). Each :math:`J v_p` is one ``jax.jvp``; several probes are vmapped
    over the tangent only, so ``fn(x)`` itself is computed once.

    Args:
      fn: a function of the batch ``x``, shape-preserving.
      x: the point, ``[batch, ...]``.
      probes: ``[num_probes, batch, ...]``. Hutchinson probes (Rademacher or standard normal)
        give an unbiased estimate of the trace with ``average=True``; the basis vectors of the
        example space give the exact trace with ``average=False``.
      average: average over probes (True) or sum them (False).

    Returns:
      ``(fn(x), div)`` with ``div`` of shape ``[batch]``.
    """
    axes = tuple(range(1, x.ndim))
    if probes.shape[0] == 1:
        fx, jv = jax.jvp(fn, (x,), (probes[0],))
        return fx, jnp.sum(jv * probes[0], axis=axes)
    fx, jvs = jax.vmap(lambda v: jax.jvp(fn, (x,), (v,)), out_axes=(None, 0))(probes)
    per_probe = jnp.sum(jvs * probes, axis=tuple(a + 1 for a in axes))
    return fx, jnp.mean(per_probe, axis=0) if average else jnp.sum(per_probe, axis=0)


def _draw_probes(key: Key, x: Data, hutchinson: str, num_probes: int) -> Probes:
    shape = (num_probes, *x.shape)
    if hutchinson == "rademacher":
        return jax.random.rademacher(key, shape, x.dtype)
    if hutchinson == "gaussian":
        return jax.random.normal(key, shape, x.dtype)
    # 'exact': one basis vector of the example space per probe, shared by the batch.
    dim = math.prod(x.shape[1:])
    basis = jnp.eye(dim, dtype=x.dtype).reshape(dim, 1, *x.shape[1:])
    return jnp.broadcast_to(basis, (dim, *x.shape))


def _batch_sharded_like(probes: Probes, x: Data) -> Probes:
    """The probes sharded like ``x`` on their batch axis, on a mesh of explicit axes.

    Elsewhere the compiler picks the layout; there the probes' type must match the state's
    for the solve's loop and its transpose. The values do not change.
    """
    sharding = jax.typeof(x).sharding
    if not ode.on_explicit_mesh(sharding):
        return probes
    spec = jax.P(None, *sharding.spec)
    return jax.sharding.reshard(probes, jax.NamedSharding(sharding.mesh, spec))


# --------------------------------------------------------------------------------------------
# Time variables. u = log(s(t)/m(t)) = -lambda(t), the log noise-to-signal ratio (EDM's log
# sigma; the log SNR is -2u). Near t = eps, s(t) ~ sqrt(t) for VP and sub-VP, so the drift in t
# varies on the scale of t itself; in u it does not. Only t(u) is needed, the SDE's closed-form
# inverse of its log-SNR: dt/du comes from its jvp.


def log_sigma(sde: SDE, t: ArrayLike) -> Array:
    r""":math:`\log(s(t)/m(t)) = -\lambda(t)`, the variable of ``time_variable='log_sigma'``."""
    return -sde.log_snr(t)


# --------------------------------------------------------------------------------------------


def _check_data(x: object) -> Array:
    """Checks rank, dtype and (when concrete) finiteness of a data batch."""
    x = jnp.asarray(x) if not isinstance(x, jax.Array) else x
    if x.ndim < 2:
        raise ValueError(
            f"x must have shape [batch, ...] with at least one data axis (rank >= 2), got "
            f"shape {x.shape} (rank {x.ndim})."
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x must be a floating-point array, got dtype {x.dtype}.")
    if not isinstance(x, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(x))):
        bad = int(jnp.sum(~jnp.isfinite(x)))
        raise ValueError(f"x must be finite, got {bad} non-finite values (NaN or inf).")
    return x


def log_likelihood(
    key: Key,
    sde: SDE,
    score_fn: ScoreFn,
    x: Data,
    *,
    hutchinson: Hutchinson = "rademacher",
    num_probes: int = 1,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float = 1e-5,
    time_variable: TimeVariable = "t",
    max_steps: int = 4096,
    adjoint: Any = None,
    method: str | ode.Tableau = "dopri5",
) -> LikelihoodOutput:
    r"""Log-density of each example under the probability-flow ODE, in nats.

    .. math:: \log p(x) = \log p_T(z) + \int_\epsilon^T \nabla\cdot F(x(t), t)\,dt,
              \quad z = x(T),\ x(\epsilon) = x,

    with the prior as :math:`p_T` (paper section 4.3 and appendix D.2). The result is the
    density in the space of ``x`` itself: no dequantization and no scaling offset; see
    :func:`bits_per_dim` for those. The solve runs on device in one ``lax.while_loop``; call it
    under ``jit`` (and ``vmap`` or a batch sharding) as needed. All examples share one step
    sequence (the error norm spans the batch).

    Args:
      key: PRNG key for the probes, which stay fixed during the solve.
      sde: the forward SDE.
      score_fn: ``score_fn(x, t) -> score`` with ``x`` ``[batch, ...]`` and ``t`` ``[batch]``.
      x: data, ``[batch, ...]`` (rank >= 2), finite.
      hutchinson: the divergence estimator: ``'rademacher'`` or ``'gaussian'`` probes (unbiased
        Hutchinson-Skilling), or ``'exact'``, the full trace from one jvp per data dimension
        (for small data and for checking the estimator). Every estimator takes ``score_fn`` to
        treat examples independently (no batch statistics): the 'exact' probes are shared by
        the batch, so cross-example Jacobian terms would leak into it.
      num_probes: probes averaged inside one solve (ignored by ``'exact'``).
      rtol: relative tolerance of the ODE solver.
      atol: absolute tolerance of the ODE solver.
      eps: the start time :math:`\epsilon`, in (0, T).
      time_variable: ``'t'`` integrates in the SDE's time as the paper did; ``'log_sigma'``
        integrates in :math:`u = \log(s(t)/m(t)) = -\lambda(t)` (``-sde.log_snr``, mapped back
        by the SDE's closed-form ``t_of_log_snr``) instead. Both
        compute the same quantity, :math:`\int F\,dt = \int F\,(dt/du)\,du`, and agree to
        solver accuracy. (The log SNR is :math:`-2u`, an affine change of ``u``, so it gives
        the same solve.) Log sigma takes fewer evaluations at equal tolerance for VP, but in
        our measurements (benchmarks/likelihood.md, table 3) it was less accurate per
        evaluation on Gaussian data for VP and sub-VP, so ``'t'`` stays the default; for VE
        the two are the same ODE up to an affine change of variable.
      max_steps: the most solver steps attempted before reporting failure.
      adjoint: reverse mode through the solve (:mod:`sde_jax.adjoint`): None (default, the
        fastest, no ``jax.grad``), ``RecursiveCheckpoint()`` (the exact gradient of the
        discrete solve with respect to ``x`` and the score's parameters, memory
        O(sqrt(max_steps))) or ``Backsolve()`` (continuous adjoint, memory O(1), accurate to
        the tolerance). The probes get gradients too; the ``key`` does not.
      method: the embedded Runge-Kutta pair (:mod:`sde_jax.tableaux`): ``'dopri5'``
        (Dormand-Prince 5(4), the default and scipy's RK45), ``'tsit5'`` or ``'dop853'``, or a
        :class:`~sde_jax.tableaux.Tableau`. Measured at equal accuracy
        (benchmarks/ode_pairs.md): no pair beats Dormand-Prince for VP in ``t``; for VE both
        others take 1.49x fewer evaluations.

    Returns:
      A :class:`LikelihoodOutput` ``(logp, z, nfe, success)``.

    Raises:
      TypeError: if ``adjoint`` or ``method`` is not one of the choices.
      ValueError: for an unknown ``hutchinson``, ``method`` or ``time_variable``,
        ``num_probes < 1``, ``eps`` outside (0, T), ``x`` of rank < 2, not floating, or (when
        concrete) not finite, or ``time_variable='log_sigma'`` with an SDE that has no
        ``t_of_log_snr``.
    """
    validation.choice("hutchinson", hutchinson, HUTCHINSON_CHOICES)
    check_adjoint(adjoint)
    method = ode.resolve_pair(method)
    validation.choice("time_variable", time_variable, TIME_VARIABLE_CHOICES)
    num_probes = validation.integer("num_probes", num_probes, minimum=1)
    if not 0.0 < eps < sde.T:
        raise ValueError(f"eps must lie in (0, T) = (0, {sde.T}), got eps={eps!r}.")
    if time_variable == "log_sigma":
        check_log_snr_inverse(sde, "time_variable='log_sigma'")
    x = _check_data(x)
    batch = x.shape[0]

    probes = _batch_sharded_like(_draw_probes(key, x, hutchinson, num_probes), x)
    average = hutchinson != "exact"

    def augmented(t, x_t):
        drift = lambda y: probability_flow_drift(sde, score_fn, y, jnp.full((batch,), t))  # noqa: E731
        return divergence(drift, x_t, probes, average=average)

    if time_variable == "t":
        start, end = eps, sde.T

        def fn(t, state):
            return augmented(t, state[0])

    else:
        start, end = log_sigma(sde, eps), log_sigma(sde, sde.T)

        def time_of(u):
            return sde.t_of_log_snr(-u)

        def fn(u, state):
            t, dt_du = jax.jvp(time_of, (u,), (jnp.ones_like(u),))
            dx, div = augmented(t, state[0])
            return dx * dt_du.astype(dx.dtype), div * dt_du.astype(div.dtype)

    state0 = (x, jnp.zeros((batch,), x.dtype))
    sol = ode.solve_adaptive(
        fn,
        state0,
        start,
        end,
        rtol=rtol,
        atol=atol,
        max_steps=max_steps,
        adjoint=adjoint,
        method=method,
    )
    z, delta = sol.y
    logp = sde.prior_logp(z).astype(x.dtype) + delta
    logp = jnp.where(sol.success, logp, jnp.nan)
    return LikelihoodOutput(logp=logp, z=z, nfe=sol.nfe, success=sol.success)


# --------------------------------------------------------------------------------------------
# Bits per dimension for 8-bit images.


def _check_range(data_range: tuple[float, float]) -> tuple[float, float]:
    lo, hi = (float(v) for v in data_range)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"data_range must be (low, high) with low < high, got {data_range!r}.")
    return lo, hi


def bits_per_dim(
    logp: PerExample,
    num_dims: int,
    *,
    data_range: tuple[float, float] = (0.0, 1.0),
    num_levels: int = 256,
) -> PerExample:
    r"""Bits per dimension of dequantized integer images from a log-density in data space.

    Let :math:`k \in \{0, \dots, L-1\}^D` be an image with :math:`L` = ``num_levels`` levels
    (256 for 8 bits), :math:`y = k + u`, :math:`u \sim U[0, 1)^D`, its uniform dequantization
    on :math:`[0, L)^D`, and :math:`x = \ell + a\,y` with :math:`a = (h - \ell)/L` the data the
    model sees, in ``data_range`` :math:`= (\ell, h)` (:func:`dequantize`). A density
    :math:`p_x` on x is the density :math:`p_y(y) = p_x(x)\,a^D` on y, and

    .. math:: \mathrm{bpd} = -\frac{\log_2 p_y(y)}{D}
              = -\frac{\log p_x(x)}{D \ln 2} - \log_2 a
              = -\frac{\log p_x(x)}{D \ln 2} + \log_2 \frac{L}{h - \ell}.

    For 8-bit data scaled to [0, 1] the offset is :math:`\log_2 256 = 8` bits; scaled to
    [-1, 1] it is :math:`\log_2 128 = 7`. (These are the paper's +8 / +7, derived here.)
    Because :math:`\log P(k) \ge E_u[\log p_y(k + u)]` (Jensen), the expectation over the
    dequantization noise is an upper bound on the code length of the discrete images (Theis
    et al., 2016).

    Args:
      logp: ``[batch]`` log-density :math:`\log p_x(x)` in nats (:func:`log_likelihood`).
      num_dims: D, the number of dimensions per example (e.g. 32 * 32 * 3).
      data_range: ``(low, high)``, the interval the levels were scaled to.
      num_levels: L, the number of integer levels (256 for 8-bit data).

    Returns:
      ``[batch]`` bits/dim.
    """
    lo, hi = _check_range(data_range)
    if num_dims < 1 or num_levels < 2:
        raise ValueError(f"need num_dims >= 1 and num_levels >= 2, got {num_dims}, {num_levels}.")
    offset = math.log2(num_levels / (hi - lo))
    return -jnp.asarray(logp) / (num_dims * math.log(2.0)) + offset


def dequantize(
    key: Key,
    images: Images,
    *,
    data_range: tuple[float, float] = (0.0, 1.0),
    num_levels: int = 256,
    dtype: jnp.dtype = jnp.float32,
) -> Data:
    """Uniform dequantization: ``low + (high - low) * (k + U[0, 1)) / num_levels``.

    See :func:`bits_per_dim` for the matching change of variables.
    """
    lo, hi = _check_range(data_range)
    noise = jax.random.uniform(key, jnp.shape(images), dtype)
    return lo + (hi - lo) * (jnp.asarray(images).astype(dtype) + noise) / num_levels


def check_images(images: object, index: int, num_levels: int) -> np.ndarray:
    """``images`` as numpy; ValueError naming batch ``index`` unless integer levels in range."""
    images = np.asarray(images)
    if not np.issubdtype(images.dtype, np.integer):
        raise ValueError(
            f"batch {index}: images must hold integer levels (uint8 for 8-bit data), got dtype "
            f"{images.dtype}."
        )
    if images.ndim < 2:
        raise ValueError(f"batch {index}: images must have shape [batch, ...], got {images.shape}.")
    lo, hi = int(images.min()), int(images.max())
    if lo < 0 or hi > num_levels - 1:
        raise ValueError(
            f"batch {index}: image values must lie in [0, {num_levels - 1}], got values in "
            f"[{lo}, {hi}]."
        )
    return images


class BitsPerDim(NamedTuple):
    """Bits/dim of a data split (:func:`summarize_bits_per_dim`).

    Attributes:
      mean: bits/dim averaged over examples and repeats.
      stderr: standard error of ``mean``: the standard deviation over examples of each
        example's repeat-averaged bits/dim, divided by sqrt(num_examples).
      repeat_means: the mean bits/dim of each repeat, shape ``[num_repeats]``.
      num_examples: examples evaluated.
      mean_nfe: average evaluations of the augmented ODE per solve.
    """

    mean: float
    stderr: float
    repeat_means: np.ndarray
    num_examples: int
    mean_nfe: float


def check_num_repeats(num_repeats: object) -> None:
    """Raises ValueError unless ``num_repeats`` is an int >= 1."""
    validation.integer("num_repeats", num_repeats, minimum=1)


def check_success(success: ArrayLike, index: int, repeat: int) -> None:
    """Raises RuntimeError naming the batch and repeat when the ODE solve failed."""
    if not bool(success):
        raise RuntimeError(
            f"the likelihood ODE solve failed on batch {index}, repeat {repeat} (max_steps "
            f"reached or non-finite values); raise max_steps or check the model."
        )


def batch_bits_per_dim(
    key: Key,
    sde: SDE,
    score_fn: ScoreFn,
    images: Images,
    *,
    data_range: tuple[float, float] = (0.0, 1.0),
    num_levels: int = 256,
    **likelihood_kwargs,
) -> tuple[PerExample, Array, Array]:
    """Bits/dim of one batch of integer images under one draw of dequantization noise.

    Dequantizes ``images`` (:func:`dequantize`), solves :func:`log_likelihood` with fresh
    probes and converts with :func:`bits_per_dim`. Pure and unjitted: callers compile and
    shard it (the batch may be split over devices: the solver's error norm spans the whole
    batch either way).

    Args:
      key: PRNG key, split into the dequantization and probe keys.
      sde: the forward SDE.
      score_fn: the model's score.
      images: integer levels ``[batch, ...]`` in ``[0, num_levels - 1]``.
      data_range: the interval the model's data are scaled to.
      num_levels: levels of the integer data.
      **likelihood_kwargs: passed to :func:`log_likelihood`.

    Returns:
      ``(bpd [batch], nfe, success)``.
    """
    dequant_key, probe_key = jax.random.split(key)
    x = dequantize(dequant_key, images, data_range=data_range, num_levels=num_levels)
    out = log_likelihood(probe_key, sde, score_fn, x, **likelihood_kwargs)
    num_dims = math.prod(images.shape[1:])
    bpd = bits_per_dim(out.logp, num_dims, data_range=data_range, num_levels=num_levels)
    return bpd, out.nfe, out.success


def summarize_bits_per_dim(per_example: np.ndarray, nfes: Iterable[int]) -> BitsPerDim:
    """The :class:`BitsPerDim` of ``per_example`` ``[num_repeats, num_examples]`` bits/dim.

    Args:
      per_example: bits/dim of every example under every repeat of the noise.
      nfes: the evaluations of each ODE solve.
    """
    values = np.asarray(per_example, np.float64)
    if values.ndim != 2 or values.shape[1] == 0:
        raise ValueError(
            f"per_example must have shape [num_repeats, num_examples] with examples, got "
            f"{values.shape}."
        )
    example_means = values.mean(axis=0)
    n = example_means.size
    stderr = float(example_means.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return BitsPerDim(
        mean=float(example_means.mean()),
        stderr=stderr,
        repeat_means=values.mean(axis=1),
        num_examples=int(n),
        mean_nfe=float(np.mean(list(nfes))),
    )
