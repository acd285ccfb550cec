r"""UniPC (Zhao et al. 2023): the unified predictor-corrector of the probability-flow ODE.

In the log-SNR variable :math:`\lambda = \log(m/s)` and with the data prediction
:math:`D = (x + s^2 s_\theta)/m`, the ODE's exact solution from :math:`t_0` to :math:`t` is
:math:`x_t = \frac{s_t}{s_0} x_0 + s_t \int_{\lambda_0}^{\lambda_t} e^{\lambda} D\, d\lambda`.
UniPC approximates :math:`D` by the stored evaluations at earlier times
:math:`\lambda_{0}, \lambda_{-1}, \ldots` with :math:`r_k = (\lambda_{-k} - \lambda_0)/h`,
:math:`h = \lambda_t - \lambda_0` (paper, sec. 3 and appendix C, data-prediction form;
the reference code's ``multistep_uni_pc_bh_update`` with ``predict_x0=True``):

.. math:: x_t = \frac{s_t}{s_0} x_0 - m_t \Big[ (e^{-h} - 1) D_0
          + B(h) \sum_k \rho_k \frac{D_{-k} - D_0}{r_k} \Big],

with :math:`B(h) = -h` (``'bh1'``) or :math:`B(h) = e^{-h} - 1` (``'bh2'``). The predictor
UniP-p uses the p - 1 previous evaluations, its :math:`\rho` solving
:math:`R_{p-1} \rho = b_{p-1}` (paper, eq. 8; :math:`\rho = 1/2` for p = 2, as the reference
does), where :math:`R_{ij} = r_j^{i-1}` and :math:`b_i = i!\, g_i(-h) / B(h)` with
:math:`g_i(z) = z\,\varphi_{i+1}(z) = (e^z - \sum_{j \le i} z^j/j!)/z^i`. The corrector
UniC-p adds the evaluation :math:`D_t` at the predicted point as a node with :math:`r = 1`
and solves :math:`R_p \rho = b_p` (paper, Algorithm 1 and eq. 11; :math:`\rho = 1/2` for
p = 1), which raises the order of accuracy to p + 1 (paper, Theorem 3.1). The corrector costs
no evaluation: :math:`D_t` is the one the next predictor needs.
"""

import dataclasses
import math

import jax.numpy as jnp

from sde_jax import predictions, validation
from sde_jax.array_types import Array, Key, ScoreFn
from sde_jax.sdes import SDE
from sde_jax.steppers.base import State, register_static

ORDERS = (1, 2, 3)
VARIANTS = ("bh1", "bh2")
_SERIES_TERMS = 18  # |z| < 1: the series' first omitted term is below 1 / 20! ~ 4e-19.


def phi_terms(z: Array, n: int) -> Array:
    r"""The values :math:`g_i(z) = (e^z - \sum_{j=0}^{i} z^j/j!)/z^i` for i = 1 .. n, ``[n]``.

    :math:`g_i(z) = z\varphi_{i+1}(z)`, the :math:`h\varphi_{k}` terms of UniPC's ``b``
    (Zhao et al. 2023, eq. 8). For :math:`|z| < 1` the series :math:`\sum_{l \ge 1}
    z^l/(l+i)!`, else the reference code's recurrence :math:`g_{i+1} = g_i/z - 1/(i+1)!`,
    which loses digits to cancellation as z goes to 0.
    """
    small = jnp.abs(z) < 1.0
    z_series = jnp.where(small, z, 0.0)
    z_recur = jnp.where(small, 1.0, z)  # the double-where trick: no division by 0 in grads
    powers = z_series ** jnp.arange(1, _SERIES_TERMS + 1)
    series, recur = [], []
    g = jnp.expm1(z_recur) / z_recur - 1.0
    for i in range(1, n + 1):
        inv_fact = jnp.asarray([1 / math.factorial(j + i) for j in range(1, _SERIES_TERMS + 1)])
        series.append(jnp.sum(powers * inv_fact.astype(powers.dtype)))
        recur.append(g)
        g = g / z_recur - 1.0 / math.factorial(i + 1)
    return jnp.where(small, jnp.stack(series), jnp.stack(recur))


def _vandermonde(nodes: Array) -> Array:
    """``R[i, j] = nodes[j] ** i``."""
    return jnp.stack([nodes**i for i in range(nodes.shape[0])])


def predictor_rhos(rks: Array, b: Array) -> Array:
    """UniP's ``rho`` for the previous nodes ``rks`` ``[p - 1]`` (eq. 8; 1/2 for p = 2)."""
    if rks.shape[0] == 0:
        return jnp.zeros((0,), b.dtype)
    if rks.shape[0] == 1:
        return jnp.full((1,), 0.5, b.dtype)
    return jnp.linalg.solve(_vandermonde(rks), b[: rks.shape[0]])


def corrector_rhos(rks: Array, b: Array) -> Array:
    """UniC's ``rho`` ``[p]`` for the nodes ``rks`` ``[p - 1]`` and the new one (1/2 for p = 1)."""
    if rks.shape[0] == 0:
        return jnp.full((1,), 0.5, b.dtype)
    nodes = jnp.concatenate([rks, jnp.ones((1,), rks.dtype)])
    return jnp.linalg.solve(_vandermonde(nodes), b[: nodes.shape[0]])


def _weights(h: Array, rks: Array, order: int, variant: str, corrector: bool) -> Array:
    """Weights of ``[D_0, D_-1, .., D_-(P-1), D_t]`` in the bracket of the module docstring.

    ``rks`` ``[P - 1]`` holds every stored node; the first ``order - 1`` are used, the rest get
    weight 0. The result has ``P + 1`` entries whatever ``order`` is.
    """
    z = -h
    b_h = z if variant == "bh1" else jnp.expm1(z)
    factorials = jnp.asarray([math.factorial(i) for i in range(1, order + 1)], h.dtype)
    b = phi_terms(z, order) * factorials / b_h
    used = rks[: order - 1]
    rhos = (corrector_rhos if corrector else predictor_rhos)(used, b)
    w_prev = b_h * rhos[: order - 1] / used
    w_new = b_h * rhos[order - 1] if corrector else jnp.zeros((), h.dtype)
    w_0 = jnp.expm1(z) - jnp.sum(w_prev) - w_new
    pad = jnp.zeros((rks.shape[0] - (order - 1),), h.dtype)
    return jnp.concatenate([w_0[None], w_prev, pad, w_new[None]])


@register_static
@dataclasses.dataclass(frozen=True)
class UniPC:
    r"""Multistep UniPC: predictor UniP-p with the corrector UniC (Zhao et al. 2023).

    One evaluation per step. Step i evaluates :math:`D` at its (predicted) point
    :math:`\tilde x_i`, corrects it with UniC (``corrector=True``) into :math:`x_i` from
    :math:`x_{i-1}` and the stored evaluations, then predicts :math:`\tilde x_{i+1}` with UniP
    from :math:`x_i`; the result of a run is the last prediction (the reference corrects after
    every step but the last). The update rules are in the module docstring. The first steps
    use lower orders (step i predicts with order min(i + 1, p) and corrects with the order of
    the prediction it corrects), as the reference code's warm-up does; unlike the reference's
    default ``lower_order_final``, the last steps keep order p (a stepper does not know how
    many steps remain).

    Order: UniP-p has order p; UniC lifts the result to p + 1 (paper, Theorem 3.1), and the
    convergence tests measure p + 1 with the corrector and p without. ``order`` is the
    predictor's p, the guaranteed one.

    With ``order=1, corrector=False`` this is DDIM (DPM-Solver-1); with ``order=2,
    corrector=False, variant='bh2'`` it is DPM-Solver++(2M) (the predictor's
    :math:`\rho = 1/2` and :math:`B(h) = e^{-h} - 1` give Lu et al.'s update exactly).

    Attributes:
      sde: the forward SDE; every coefficient comes from its :math:`\lambda`, m and s, so VE,
        VP, sub-VP, cosine VP and EDM all work.
      order: the predictor's order p, 1, 2 or 3.
      variant: ``'bh1'`` (:math:`B(h) = h`) or ``'bh2'`` (:math:`B(h) = e^h - 1`, the
        reference's recommended one for few steps); sign conventions of the paper's
        :math:`h_i = -h` of data prediction.
      corrector: whether to apply UniC.

    History: ``(x_prev, ds, ts, count)``: the corrected point of the previous step (the base of
    the prediction UniC corrects), the last p data predictions ``[p, batch, ...]`` newest first,
    their times ``[p]``, and the number of steps taken.

    Raises:
      ValueError: for an ``order`` or ``variant`` outside the choices.
      TypeError: if ``sde`` is not an SDE or ``corrector`` not a bool.
    """

    sde: SDE
    order: int = 2
    variant: str = "bh2"
    corrector: bool = True
    nfe_per_step = 1

    def __post_init__(self):
        if not isinstance(self.sde, SDE):
            raise TypeError(f"sde must be an sde_jax.SDE, got {self.sde!r}.")
        validation.integer("order", self.order, min(ORDERS), max(ORDERS))
        validation.choice("variant", self.variant, VARIANTS)
        if not isinstance(self.corrector, bool):
            raise TypeError(f"corrector must be a bool, got {self.corrector!r}.")

    def init(self, x: Array) -> State:
        """No history yet (``count = 0``); the stored times are set to T, a finite placeholder."""
        p = self.order
        ts = jnp.full((p,), self.sde.T, x.dtype)
        history = (x, jnp.zeros((p, *x.shape), x.dtype), ts, jnp.zeros((), jnp.int32))
        return State(x, x, history)

    def _update(self, x0: Array, ds: Array, ts: Array, t: Array, count: Array, d_new) -> Array:
        """From ``x0`` at ``ts[0]`` to ``t`` with the ``min(count, p)`` valid evaluations."""
        p = self.order
        lams = self.sde.log_snr(ts)
        h = self.sde.log_snr(t) - lams[0]
        index = jnp.arange(1, p)
        valid = index < count
        # Unused nodes get distinct placeholders, so no solve or division meets a zero.
        rks = jnp.where(valid, (lams[1:] - lams[0]) / h, -index.astype(h.dtype))
        corrector = d_new is not None
        table = jnp.stack([_weights(h, rks, k, self.variant, corrector) for k in range(1, p + 1)])
        w = table[jnp.clip(count, 1, p) - 1]
        d_all = ds if d_new is None else jnp.concatenate([ds, d_new[None]])
        combined = jnp.tensordot(w[: d_all.shape[0]], d_all, axes=1)
        s0, s_t, m_t = (
            self.sde.marginal_std(ts[0]),
            self.sde.marginal_std(t),
            self.sde.mean_coeff(t),
        )
        return (s_t / s0) * x0 - m_t * combined

    def step(self, key: Key, score_fn: ScoreFn, state: State, t: Array, t_next: Array) -> State:
        """UniC at ``t`` (from the second step on), then UniP to ``t_next``; ``key`` is unused."""
        del key
        x_prev, ds, ts, count = state.history
        d_new = predictions.from_score_fn(self.sde, score_fn, "x0")(state.x, t)
        x = state.x
        if self.corrector:
            # At the first step there is nothing to correct; a target below T keeps h > 0.
            t_safe = jnp.where(count > 0, t, 0.5 * self.sde.T)
            corrected = self._update(x_prev, ds, ts, t_safe, count, d_new)
            x = jnp.where(count > 0, corrected, x)
        ds = jnp.concatenate([d_new[None], ds[:-1]])
        ts = jnp.concatenate([jnp.asarray(t, ts.dtype)[None], ts[:-1]])
        x_next = self._update(x, ds, ts, t_next, count + 1, None)
        return State(x_next, x_next, (x, ds, ts, count + 1))


__all__ = ["ORDERS", "VARIANTS", "UniPC", "phi_terms"]
