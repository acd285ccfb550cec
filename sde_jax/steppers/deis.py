r"""DEIS and iPNDM (Zhang & Chen 2023): exponential-integrator multistep solvers in eps.

With :math:`\sigma = s/m` and the noise prediction :math:`\epsilon = -s\, s_\theta`, the
probability-flow ODE reads :math:`d(x/m)/d\sigma = \epsilon` (DEIS, eq. 11 in the
:math:`\rho = \sigma` variable), so a step from t to :math:`t_{next}` is exactly

.. math:: x_{next} = \frac{m_{next}}{m} x + m_{next} \int_t^{t_{next}} \sigma'(\tau)\,
          \epsilon(x_\tau, \tau)\, d\tau.

DEIS "tAB" (DEIS, eq. 14) replaces :math:`\epsilon` by its Lagrange polynomial in
:math:`\tau` through the current and the previous evaluations; iPNDM (DEIS, appendix; as
k-diffusion's ``sample_ipndm``) replaces the integral by
:math:`(\sigma_{next} - \sigma)` times the fixed 4-step Adams-Bashforth combination of the
last evaluations.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from sde_jax import predictions, validation
from sde_jax.array_types import Array, Key, ScoreFn
from sde_jax.sdes import SDE
from sde_jax.steppers.base import State, register_static

DEIS_ORDERS = (1, 2, 3, 4)
IPNDM_COEFFICIENTS = (
    (1.0,),
    (3 / 2, -1 / 2),
    (23 / 12, -16 / 12, 5 / 12),
    (55 / 24, -59 / 24, 37 / 24, -9 / 24),
)
"""Adams-Bashforth weights of the newest first evaluations, for 1 to 4 of them."""


def _check_sde(sde: object) -> None:
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be an sde_jax.SDE, got {sde!r}.")


def _init_history(x: Array, size: int, t_fill: float) -> tuple:
    """``(eps [size, batch, ...], ts [size], count = 0)``; ``t_fill`` is a placeholder time."""
    return (
        jnp.zeros((size, *x.shape), x.dtype),
        jnp.full((size,), t_fill, x.dtype),
        jnp.zeros((), jnp.int32),
    )


def lagrange_basis(nodes: Array, taus: Array) -> Array:
    r"""The Lagrange basis :math:`L_j(\tau) = \prod_{l \ne j} (\tau - u_l)/(u_j - u_l)`.

    Args:
      nodes: the interpolation nodes ``[k]`` (distinct).
      taus: where to evaluate ``[q]``.

    Returns:
      ``[k, q]``.
    """
    k = nodes.shape[0]
    rows = []
    for j in range(k):
        others = [nodes[n] for n in range(k) if n != j]
        row = jnp.ones_like(taus)
        for u in others:
            row = row * (taus - u) / (nodes[j] - u)
        rows.append(row)
    return jnp.stack(rows)


def deis_coefficients(sde: SDE, nodes: Array, t: Array, t_next: Array, num_points: int) -> Array:
    r"""DEIS tAB weights :math:`C_j = m_{next} \int_t^{t_{next}} \sigma'(\tau) L_j(\tau)\, d\tau`.

    Gauss-Legendre quadrature with ``num_points`` nodes on :math:`[t_{next}, t]`, on device;
    :math:`\sigma'` by forward-mode autodiff of ``sde.sigma``. Since :math:`\sum_j L_j = 1`,
    :math:`C_0` is set to :math:`m_{next}(\sigma_{next} - \sigma) - \sum_{j>0} C_j`, so the
    rule is exact (DDIM) for a constant :math:`\epsilon` whatever the quadrature error.

    Args:
      sde: the forward SDE.
      nodes: ``[k]``, ``nodes[0] = t`` and the earlier times of the stored evaluations.
      t: the current time.
      t_next: the next time.
      num_points: Gauss-Legendre points.

    Returns:
      ``[k]``.
    """
    xi, w = np.polynomial.legendre.leggauss(num_points)
    half = 0.5 * (t_next - t)
    taus = 0.5 * (t_next + t) + half * jnp.asarray(xi, half.dtype)
    dsigma = jax.jvp(sde.sigma, (taus,), (jnp.ones_like(taus),))[1]
    m_next = sde.mean_coeff(t_next)
    integrals = half * jnp.sum(
        jnp.asarray(w, half.dtype) * dsigma * lagrange_basis(nodes, taus), -1
    )
    rest = m_next * integrals[1:]
    first = m_next * (sde.sigma(t_next) - sde.sigma(t)) - jnp.sum(rest)
    return jnp.concatenate([first[None], rest])


def _pad(c: Array, size: int) -> Array:
    return jnp.concatenate([c, jnp.zeros((size - c.shape[0],), c.dtype)])


@register_static
@dataclasses.dataclass(frozen=True)
class DEIS:
    r"""DEIS-tAB (Zhang & Chen 2023, eq. 14): exponential-integrator Adams-Bashforth in t.

    One evaluation per step. Step i fits the Lagrange polynomial in t through the noise
    predictions at the current time and the ``min(i, order - 1)`` previous ones (lower orders
    for the first steps), and integrates it against :math:`\sigma'(t)` exactly in the module
    docstring's formula, by Gauss-Legendre quadrature on device (jit-able with a traced grid,
    differentiable). Works for every SDE through its ``sigma`` and ``mean_coeff``.

    ``order`` is the order of accuracy, the number of points of the polynomial: the reference
    code's ``ab_order`` is ``order - 1`` (its default tAB-3 is ``order=4`` here).

    Attributes:
      sde: the forward SDE.
      order: 1 (DDIM) to 4.
      quadrature_points: Gauss-Legendre points per step (8: exact to rounding for the smooth
        weights of these SDEs at the step sizes where the solver converges).

    History: ``(eps, ts, count)``: the last ``order - 1`` noise predictions
    ``[order - 1, batch, ...]`` newest first, their times, and the number of steps taken.

    Raises:
      ValueError: for an ``order`` outside 1-4 or ``quadrature_points < 1``.
      TypeError: if ``sde`` is not an SDE.
    """

    sde: SDE
    order: int = 3
    quadrature_points: int = 8
    nfe_per_step = 1

    def __post_init__(self):
        _check_sde(self.sde)
        validation.integer("order", self.order, min(DEIS_ORDERS), max(DEIS_ORDERS))
        validation.integer("quadrature_points", self.quadrature_points, minimum=1)

    def init(self, x: Array) -> State:
        """No history yet; stored times are placeholders until ``count`` says otherwise."""
        return State(x, x, _init_history(x, self.order - 1, self.sde.T))

    def coefficients(self, ts: Array, count: Array, t: Array, t_next: Array) -> Array:
        """The weights ``[order]`` of ``[eps_t, stored eps ...]``, zero beyond the warm-up's."""
        p = self.order
        index = jnp.arange(1, p)
        valid = index <= count
        # Unused nodes get distinct placeholders above t, so no division meets a zero.
        nodes = jnp.concatenate([t[None], jnp.where(valid, ts, t + index.astype(t.dtype))])
        table = jnp.stack(
            [
                _pad(deis_coefficients(self.sde, nodes[:k], t, t_next, self.quadrature_points), p)
                for k in range(1, p + 1)
            ]
        )
        return table[jnp.minimum(count, p - 1)]

    def step(self, key: Key, score_fn: ScoreFn, state: State, t: Array, t_next: Array) -> State:
        """One tAB step; ``key`` is unused."""
        del key
        eps_prev, ts, count = state.history
        t = jnp.asarray(t, state.x.dtype)
        eps = predictions.from_score_fn(self.sde, score_fn, "eps")(state.x, t)
        c = self.coefficients(ts, count, t, jnp.asarray(t_next, t.dtype))
        all_eps = jnp.concatenate([eps[None], eps_prev])
        ratio = self.sde.mean_coeff(t_next) / self.sde.mean_coeff(t)
        x = ratio * state.x + jnp.tensordot(c, all_eps, axes=1)
        history = (all_eps[:-1], jnp.concatenate([t[None], ts])[:-1], count + 1)
        return State(x, x, history)


@register_static
@dataclasses.dataclass(frozen=True)
class IPNDM:
    r"""iPNDM (Zhang & Chen 2023; k-diffusion's ``sample_ipndm``): 4-step Adams-Bashforth in eps.

    .. math:: x_{next} = \frac{m_{next}}{m} x + m_{next}(\sigma_{next} - \sigma)
              \textstyle\sum_j a_j \epsilon_{-j},

    with the constant-step Adams-Bashforth weights of 1, 2, 3, then 4 evaluations
    (``IPNDM_COEFFICIENTS``: lower orders for the first three steps). For VE and EDM (m = 1)
    this is k-diffusion's update with :math:`d = (x - D)/\sigma = \epsilon`. The weights assume
    equal steps in :math:`\sigma`; on the grids used in practice (log-SNR, Karras) the steps
    are not equal, and the order measured on the Gaussian flow map is ``order`` = 2, not 4
    (the step-ratio error of the fixed weights is first order in the step).

    Attributes:
      sde: the forward SDE.

    History: ``(eps, ts, count)`` as :class:`DEIS`'s, three evaluations deep (``ts`` unused).

    Raises:
      TypeError: if ``sde`` is not an SDE.
    """

    sde: SDE
    order = 2
    nfe_per_step = 1

    def __post_init__(self):
        _check_sde(self.sde)

    def init(self, x: Array) -> State:
        """No history yet."""
        return State(x, x, _init_history(x, 3, self.sde.T))

    def step(self, key: Key, score_fn: ScoreFn, state: State, t: Array, t_next: Array) -> State:
        """One iPNDM step; ``key`` is unused."""
        del key
        eps_prev, ts, count = state.history
        t = jnp.asarray(t, state.x.dtype)
        eps = predictions.from_score_fn(self.sde, score_fn, "eps")(state.x, t)
        table = jnp.asarray([_pad_list(c, 4) for c in IPNDM_COEFFICIENTS], state.x.dtype)
        all_eps = jnp.concatenate([eps[None], eps_prev])
        combined = jnp.tensordot(table[jnp.minimum(count, 3)], all_eps, axes=1)
        m, m_next = self.sde.mean_coeff(t), self.sde.mean_coeff(t_next)
        dsigma = self.sde.sigma(t_next) - self.sde.sigma(t)
        x = (m_next / m) * state.x + m_next * dsigma * combined
        history = (all_eps[:-1], jnp.concatenate([t[None], ts])[:-1], count + 1)
        return State(x, x, history)


def _pad_list(c: tuple, size: int) -> list:
    return list(c) + [0.0] * (size - len(c))


__all__ = ["DEIS", "DEIS_ORDERS", "IPNDM", "IPNDM_COEFFICIENTS", "deis_coefficients"]
