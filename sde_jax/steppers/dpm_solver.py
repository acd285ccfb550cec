r"""The DPM-Solver++ family and DDIM: exponential integrators in the log-SNR, data prediction.

With :math:`\lambda = \log(m/s)` (``sde.log_snr``), :math:`h = \lambda(t') - \lambda(t) > 0` and
the data prediction :math:`D = (x + s^2 s_\theta)/m` (``predictions.from_score_fn(sde,
score_fn, "x0")``), the probability-flow ODE from t to :math:`t' < t` is exactly (the
variation-of-constants formula in data prediction of Lu et al. 2022, "DPM-Solver++")

.. math:: x_{t'} = \frac{s'}{s} x_t + m' \int_0^h e^{-(h - u)} D(\lambda + u)\, du.

Each solver integrates a polynomial interpolant of D in :math:`\lambda` exactly (from earlier
steps: multistep; from intermediate evaluations: singlestep), so the linear part is exact and
everything comes from the SDE's m, s and lambda: every SDE works, VE and EDM included. The SDE
variants add :math:`\eta h` of noise per step (the reverse SDE for :math:`\eta = 1`).

=====================  =====  ===  ================================================
stepper                order  nfe  history
=====================  =====  ===  ================================================
``DDIM``               1      1    ``()``
``DPMSolverPP2M``      2      1    ``(D_prev, h_prev)``
``DPMSolverPP3M``      3      1    ``(D_prev, D_prev2, h_prev, h_prev2)``
``DPMSolverPP2S``      2      2    ``()``
``DPMSolverPP3S``      3      3    ``()``
``DPMSolverPP2MSDE``   2      1    ``(D_prev, h_prev)``
``DPMSolverPP3MSDE``   3      1    ``(D_prev, D_prev2, h_prev, h_prev2)``
=====================  =====  ===  ================================================

In a history a step size of 0 marks "no such step yet": the multistep solvers then take the
lower-order update, as the reference codes do for their first steps. An SDE variant's order is
that of its deterministic part (``eta = 0``).
"""

import dataclasses
import math
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp

from sde_jax import predictions, validation
from sde_jax.array_types import Array, Key, ScoreFn
from sde_jax.sdes import SDE, check_log_snr_inverse
from sde_jax.steppers.base import Memoryless, State, register_static

__all__ = [
    "DDIM",
    "DPMSolverPP2M",
    "DPMSolverPP2MSDE",
    "DPMSolverPP2S",
    "DPMSolverPP3M",
    "DPMSolverPP3MSDE",
    "DPMSolverPP3S",
]

Variant = Literal["taylor", "reference"]
"""The 3M solvers' third-order term: ``'taylor'`` (order 3) or ``'reference'`` (the codes')."""


def _check_sde(sde: object) -> None:
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be an sde_jax.sdes.SDE such as VPSDE(), got {sde!r}.")


def _check_noise(stepper: object) -> None:
    _check_sde(stepper.sde)
    for name in ("eta", "s_noise"):
        value = validation.interval(name, getattr(stepper, name), 0.0, math.inf)
        object.__setattr__(stepper, name, value)


class _Geometry(NamedTuple):
    """One step's coefficients: ``s'/s``, ``m'``, ``s'`` and ``h``."""

    ratio: Array
    m_next: Array
    s_next: Array
    h: Array


def _geometry(sde: SDE, t: Array, t_next: Array) -> _Geometry:
    s_next = sde.marginal_std(t_next)
    h = sde.log_snr(t_next) - sde.log_snr(t)
    return _Geometry(s_next / sde.marginal_std(t), sde.mean_coeff(t_next), s_next, h)


def _safe_ratio(num: Array, den: Array) -> Array:
    """``num / den`` where ``den > 0``, else 0; differentiable at ``den = 0`` (double where)."""
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


def _phi_2(z: Array) -> Array:
    r""":math:`\varphi_2(z) = 1 + \mathrm{expm1}(-z)/z = \tfrac1z\int_0^z e^{-(z-u)} u\, du`."""
    return jnp.expm1(-z) / z + 1.0


def _second_order_weight(big_h: Array, rule: str) -> Array:
    r"""The weight of :math:`\tfrac{h}{h_{prev}}(D - D_{prev})` in a second-order step.

    ``'midpoint'``: :math:`-\tfrac12\mathrm{expm1}(-H)` (Algorithm 2); ``'taylor'``:
    :math:`\varphi_2(H)`, the exact integral of the linear interpolant.
    """
    return -0.5 * jnp.expm1(-big_h) if rule == "midpoint" else _phi_2(big_h)


def _third_order_terms(
    d: Array, d1: Array, d2: Array, h: Array, h1: Array, h2: Array, big_h: Array, variant: Variant
) -> Array:
    r"""The third-order multistep correction :math:`\varphi_2 D_1 - c\,\varphi_3 D_2`.

    With :math:`r_0 = h_1/h`, :math:`r_1 = h_2/h` (the last two steps over this one),
    :math:`D_{1,0} = (D - D_{-1})/r_0`, :math:`D_{1,1} = (D_{-1} - D_{-2})/r_1`,
    :math:`D_1 = D_{1,0} + \tfrac{r_0}{r_0 + r_1}(D_{1,0} - D_{1,1}) \approx h D'`,
    :math:`D_2 = (D_{1,0} - D_{1,1})/(r_0 + r_1) \approx h^2 D''/2` and :math:`\varphi_3 =
    \varphi_2(H)/H - \tfrac12` (H = h for the ODE, :math:`(1+\eta)h` for the SDE). The Taylor
    expansion of the exponential integral has :math:`-\varphi_3 h^2 D''`: ``'taylor'`` takes
    c = 2. ``'reference'`` takes c = 1, as ``multistep_dpm_solver_third_update`` of the
    DPM-Solver code and k-diffusion's ``sample_dpmpp_3m_sde`` do: a local error of order
    :math:`h^3`, so second order. 0 unless both earlier steps exist; it multiplies m'.
    """
    both = (h1 > 0) & (h2 > 0)
    r0, r1 = h1 / h, h2 / h
    d1_0 = _safe_ratio(1.0, r0) * (d - d1)
    d1_1 = _safe_ratio(1.0, r1) * (d1 - d2)
    d_first = d1_0 + _safe_ratio(r0, r0 + r1) * (d1_0 - d1_1)
    d_second = _safe_ratio(1.0, r0 + r1) * (d1_0 - d1_1)
    phi_2 = _phi_2(big_h)
    phi_3 = (phi_2 / big_h - 0.5) * (2.0 if variant == "taylor" else 1.0)
    return jnp.where(both, phi_2 * d_first - phi_3 * d_second, 0.0)


def _exponential_euler(g: _Geometry, x: Array, d: Array, eta: float) -> Array:
    r""":math:`\tfrac{s'}{s} e^{-\eta h} x - m'\,\mathrm{expm1}(-(1 + \eta) h)\, D`."""
    return g.ratio * jnp.exp(-eta * g.h) * x - g.m_next * jnp.expm1(-(1.0 + eta) * g.h) * d


def _add_noise(key: Key, x_mean: Array, g: _Geometry, eta: float, s_noise: float) -> Array:
    r""":math:`\bar x + s' \sqrt{1 - e^{-2\eta h}}\, s_{noise}\, z`, z from ``key``."""
    if eta == 0.0 or s_noise == 0.0:  # no noise, and no sqrt(0) for gradients in the times
        return x_mean
    std = g.s_next * jnp.sqrt(-jnp.expm1(-2.0 * eta * g.h)) * s_noise
    return x_mean + std * jax.random.normal(key, x_mean.shape, x_mean.dtype)


# --------------------------------------------------------------------------------------------
# Multistep solvers.


@register_static
@dataclasses.dataclass(frozen=True)
class DPMSolverPP2M:
    r"""DPM-Solver++(2M): second-order multistep solver of the probability-flow ODE.

    With :math:`\lambda = \log(m/s)`, :math:`h = \lambda_{next} - \lambda` and the data
    prediction :math:`D = (x + s^2 s_\theta)/m` (:func:`sde_jax.predictions.x0_from_score`),
    one step is (Lu et al. 2022, Algorithm 2)

    .. math:: x_{next} = \frac{s_{next}}{s} x + m_{next}(1 - e^{-h})\,
              \big[(1 + \tfrac{1}{2r}) D - \tfrac{1}{2r} D_{prev}\big], \quad r = h_{prev}/h,

    and the first step uses :math:`D` alone (DDIM). Exact for the linear part of the ODE, so it
    works for every SDE here (VP and sub-VP are its usual use). History: the previous D and h.

    Raises:
      TypeError: if ``sde`` is not an SDE.
    """

    sde: SDE
    order = 2
    nfe_per_step = 1

    def __post_init__(self):
        _check_sde(self.sde)

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


class _ThreeStep:
    """Mixin of the 3M solvers: history, order, and the update before noise."""

    @property
    def order(self) -> int:
        """3 (``variant='taylor'``) or 2 (``'reference'``), of the deterministic part."""
        return 3 if self.variant == "taylor" else 2

    def init(self, x: Array) -> State:
        """No history: ``h_prev = h_prev2 = 0``."""
        zero = jnp.zeros((), x.dtype)
        return State(x, x, (jnp.zeros_like(x), jnp.zeros_like(x), zero, zero))

    def _mean(
        self, score_fn: ScoreFn, state: State, t: Array, t_next: Array, eta: float, second: str
    ) -> tuple[Array, tuple, _Geometry]:
        x, (d1, d2, h1, h2) = state.x, state.history
        d = predictions.from_score_fn(self.sde, score_fn, "x0")(x, t)
        g = _geometry(self.sde, t, t_next)
        big_h = (1.0 + eta) * g.h
        only_one = (h1 > 0) & ~(h2 > 0)
        inv_r = _safe_ratio(jnp.where(only_one, g.h, 0.0), h1)
        correction = _second_order_weight(big_h, second) * inv_r * (d - d1)
        correction += _third_order_terms(d, d1, d2, g.h, h1, h2, big_h, self.variant)
        x_mean = _exponential_euler(g, x, d, eta) + g.m_next * correction
        return x_mean, (d, d1, g.h.astype(x.dtype), h1), g


@register_static
@dataclasses.dataclass(frozen=True)
class DPMSolverPP3M(_ThreeStep):
    r"""DPM-Solver++(3M): third-order multistep solver of the probability-flow ODE.

    As the DPM-Solver code's multistep sampler of order 3 (Lu et al. 2022): DPM-Solver-1 first,
    then the 2M update of :class:`DPMSolverPP2M`, then (``multistep_dpm_solver_third_update``)

    .. math:: x_{next} = \frac{s_{next}}{s} x - m_{next}\,\mathrm{expm1}(-h) D
              + m_{next}(\varphi_2 D_1 - c\,\varphi_3 D_2)

    with the divided differences of :func:`_third_order_terms` (H = h).

    Attributes:
      sde: the forward SDE.
      variant: ``'taylor'`` (default; c = 2, the Taylor expansion's: order 3) or
        ``'reference'`` (c = 1, the reference code's: order 2, which ``order`` reports).

    Raises:
      TypeError: if ``sde`` is not an SDE.
      ValueError: for another ``variant``.
    """

    sde: SDE
    variant: Variant = "taylor"
    nfe_per_step = 1

    def __post_init__(self):
        _check_sde(self.sde)
        validation.choice("variant", self.variant, ("taylor", "reference"), sort=True)

    def step(self, key: Key, score_fn: ScoreFn, state: State, t: Array, t_next: Array) -> State:
        """One update of the highest order the history allows; ``key`` is unused."""
        del key
        x_next, history, _ = self._mean(score_fn, state, t, t_next, 0.0, "midpoint")
        return State(x_next, x_next, history)


@register_static
@dataclasses.dataclass(frozen=True)
class DPMSolverPP2MSDE:
    r"""SDE-DPM-Solver++(2M) (Lu et al. 2022, sec. 5; k-diffusion's ``sample_dpmpp_2m_sde``).

    In m and s (k-diffusion's x is our x/m), with :math:`H = (1 + \eta) h`, :math:`r =
    h_{prev}/h` and the weight c of :func:`_second_order_weight`:

    .. math:: \bar x = \frac{s_{next}}{s} e^{-\eta h} x - m_{next}\,\mathrm{expm1}(-H) D
              + m_{next}\, c\, \tfrac{1}{r}(D - D_{prev}), \quad
              x_{next} = \bar x + s_{next}\sqrt{1 - e^{-2\eta h}}\, s_{noise}\, z.

    :math:`\eta = 0` is :class:`DPMSolverPP2M`. ``state.x_mean`` is :math:`\bar x`; z comes
    from the step's key.

    Attributes:
      sde: the forward SDE.
      eta: the share of the step taken stochastically, >= 0 (1: the reverse SDE).
      s_noise: scale of the injected noise, >= 0 (1: exact).
      solver_type: ``'midpoint'`` (the references' default) or ``'heun'`` (c = phi_2(H)).

    Raises:
      TypeError: if ``sde`` is not an SDE.
      ValueError: for ``eta < 0``, ``s_noise < 0`` or another ``solver_type``.
    """

    sde: SDE
    eta: float = 1.0
    s_noise: float = 1.0
    solver_type: Literal["midpoint", "heun"] = "midpoint"
    order = 2
    nfe_per_step = 1

    def __post_init__(self):
        _check_noise(self)
        validation.choice("solver_type", self.solver_type, ("midpoint", "heun"), sort=True)

    def init(self, x: Array) -> State:
        """No history yet: ``h_prev = 0`` marks the first step."""
        return State(x, x, (jnp.zeros_like(x), jnp.zeros((), x.dtype)))

    def step(self, key: Key, score_fn: ScoreFn, state: State, t: Array, t_next: Array) -> State:
        """One multistep update, then noise from ``key``."""
        x, (d_prev, h_prev) = state.x, state.history
        d = predictions.from_score_fn(self.sde, score_fn, "x0")(x, t)
        g = _geometry(self.sde, t, t_next)
        rule = "midpoint" if self.solver_type == "midpoint" else "taylor"
        c = _second_order_weight((1.0 + self.eta) * g.h, rule) * _safe_ratio(g.h, h_prev)
        x_mean = _exponential_euler(g, x, d, self.eta) + g.m_next * c * (d - d_prev)
        x_next = _add_noise(key, x_mean, g, self.eta, self.s_noise)
        return State(x_next, x_mean, (d, g.h.astype(x.dtype)))


@register_static
@dataclasses.dataclass(frozen=True)
class DPMSolverPP3MSDE(_ThreeStep):
    r"""DPM-Solver++(3M) SDE: k-diffusion's ``sample_dpmpp_3m_sde`` (after Gonzalez et al.).

    :class:`DPMSolverPP2MSDE`'s first-order part and noise, with the correction
    :math:`m_{next}\varphi_2(H)(D - D_{prev})/r` at the second step and :math:`m_{next}
    (\varphi_2 D_1 - c\,\varphi_3 D_2)` from the third on (:func:`_third_order_terms`,
    :math:`H = (1 + \eta) h`). ``state.x_mean`` is the update before noise.

    Attributes:
      sde: the forward SDE.
      eta: the share of the step taken stochastically, >= 0 (1: the reverse SDE).
      s_noise: scale of the injected noise, >= 0 (1: exact).
      variant: as :class:`DPMSolverPP3M`'s (``'reference'`` is k-diffusion's c = 1).

    Raises:
      TypeError: if ``sde`` is not an SDE.
      ValueError: for ``eta < 0``, ``s_noise < 0`` or another ``variant``.
    """

    sde: SDE
    eta: float = 1.0
    s_noise: float = 1.0
    variant: Variant = "taylor"
    nfe_per_step = 1

    def __post_init__(self):
        _check_noise(self)
        validation.choice("variant", self.variant, ("taylor", "reference"), sort=True)

    def step(self, key: Key, score_fn: ScoreFn, state: State, t: Array, t_next: Array) -> State:
        """One update of the highest order the history allows, then noise from ``key``."""
        x_mean, history, g = self._mean(score_fn, state, t, t_next, self.eta, "taylor")
        return State(_add_noise(key, x_mean, g, self.eta, self.s_noise), x_mean, history)


# --------------------------------------------------------------------------------------------
# Singlestep solvers.


def _intermediate(
    sde: SDE, x: Array, d: Array, t: Array, lam: Array, r: float, h: Array
) -> tuple[Array, Array, Array]:
    r"""The time u of log-SNR :math:`\lambda + r h`, :math:`m_u`, and DPM-Solver-1 from t to u."""
    u = sde.t_of_log_snr(lam + r * h)
    m_u = sde.mean_coeff(u)
    return u, m_u, sde.marginal_std(u) / sde.marginal_std(t) * x - m_u * jnp.expm1(-r * h) * d


@register_static
@dataclasses.dataclass(frozen=True)
class DPMSolverPP2S(Memoryless):
    r"""DPM-Solver++(2S): second-order singlestep solver (Lu et al. 2022, Algorithm 1).

    With the intermediate time u of log-SNR :math:`\lambda + r h`:

    .. math:: x_u = \frac{s_u}{s} x - m_u\,\mathrm{expm1}(-r h)\, D, \quad
              x_{next} = \frac{s_{next}}{s} x - m_{next}\,\mathrm{expm1}(-h)
              \big[D + \tfrac{1}{2r}(D(x_u, u) - D)\big].

    Attributes:
      sde: the forward SDE (it must define ``t_of_log_snr``).
      r: the intermediate fraction of the step's log-SNR, in (0, 1); 1/2 is the midpoint.

    Raises:
      TypeError: if ``sde`` is not an SDE.
      ValueError: if ``r`` is outside (0, 1) or the SDE lacks ``t_of_log_snr``.
    """

    sde: SDE
    r: float = 0.5
    order = 2
    nfe_per_step = 2

    def __post_init__(self):
        _check_sde(self.sde)
        check_log_snr_inverse(self.sde, "DPMSolverPP2S")
        r = validation.interval("r", self.r, 0.0, 1.0, closed=(False, False))
        object.__setattr__(self, "r", r)

    def step(self, key: Key, score_fn: ScoreFn, state: State, t: Array, t_next: Array) -> State:
        """Two evaluations, at ``t`` and at u; ``key`` is unused."""
        del key
        x, r, g = state.x, self.r, _geometry(self.sde, t, t_next)
        denoise = predictions.from_score_fn(self.sde, score_fn, "x0")
        d = denoise(x, t)
        u, _, x_u = _intermediate(self.sde, x, d, t, self.sde.log_snr(t), r, g.h)
        x_next = _exponential_euler(g, x, d + (0.5 / r) * (denoise(x_u, u) - d), 0.0)
        return State(x_next, x_next)


@register_static
@dataclasses.dataclass(frozen=True)
class DPMSolverPP3S(Memoryless):
    r"""DPM-Solver++(3S): third-order singlestep solver (DPM-Solver-3 of Lu et al. 2022, in D).

    With :math:`\varphi_1(z) = \mathrm{expm1}(-z)` and the intermediate times :math:`u_i` of
    log-SNR :math:`\lambda + r_i h` (the ``'dpmsolver'`` type of the reference's
    ``singlestep_dpm_solver_third_update``):

    .. math:: x_{u_1} = \tfrac{s_{u_1}}{s} x - m_{u_1}\varphi_1(r_1 h) D, \quad
              x_{u_2} = \tfrac{s_{u_2}}{s} x - m_{u_2}\varphi_1(r_2 h) D
              + \tfrac{r_2}{r_1} m_{u_2}\varphi_2(r_2 h)(D_{u_1} - D),
    .. math:: x_{next} = \tfrac{s_{next}}{s} x - m_{next}\varphi_1(h) D
              + \tfrac{1}{r_2} m_{next}\varphi_2(h)(D_{u_2} - D).

    Third order needs :math:`r_2 = 2/3` (the default); ``order`` reports 2 otherwise.

    Attributes:
      sde: the forward SDE (it must define ``t_of_log_snr``).
      r1, r2: the intermediate fractions of the step's log-SNR, ``0 < r1 < r2 < 1``.

    Raises:
      TypeError: if ``sde`` is not an SDE.
      ValueError: unless ``0 < r1 < r2 < 1``, or if the SDE lacks ``t_of_log_snr``.
    """

    sde: SDE
    r1: float = 1.0 / 3.0
    r2: float = 2.0 / 3.0
    nfe_per_step = 3

    def __post_init__(self):
        _check_sde(self.sde)
        check_log_snr_inverse(self.sde, "DPMSolverPP3S")
        r1 = validation.interval("r1", self.r1, 0.0, 1.0, closed=(False, False))
        r2 = validation.interval("r2", self.r2, 0.0, 1.0, closed=(False, False))
        if not r1 < r2:
            raise ValueError(f"r1 must be smaller than r2, got r1={r1}, r2={r2}.")
        object.__setattr__(self, "r1", r1)
        object.__setattr__(self, "r2", r2)

    @property
    def order(self) -> int:
        """3 for ``r2 = 2/3``, else 2."""
        return 3 if math.isclose(self.r2, 2.0 / 3.0) else 2

    def step(self, key: Key, score_fn: ScoreFn, state: State, t: Array, t_next: Array) -> State:
        """Three evaluations, at ``t`` and the two intermediate times; ``key`` is unused."""
        del key
        sde, x, r1, r2 = self.sde, state.x, self.r1, self.r2
        denoise = predictions.from_score_fn(sde, score_fn, "x0")
        g, lam, d = _geometry(sde, t, t_next), sde.log_snr(t), denoise(x, t)
        u1, _, x_u1 = _intermediate(sde, x, d, t, lam, r1, g.h)
        u2, m_u2, x_u2 = _intermediate(sde, x, d, t, lam, r2, g.h)
        x_u2 = x_u2 + (r2 / r1) * m_u2 * _phi_2(r2 * g.h) * (denoise(x_u1, u1) - d)
        correction = (1.0 / r2) * g.m_next * _phi_2(g.h) * (denoise(x_u2, u2) - d)
        x_next = _exponential_euler(g, x, d, 0.0) + correction
        return State(x_next, x_next)


# --------------------------------------------------------------------------------------------
# DDIM.


@register_static
@dataclasses.dataclass(frozen=True)
class DDIM(Memoryless):
    r"""DDIM with :math:`\eta` (Song, Meng and Ermon 2021, eq. 12), for any SDE through m, s.

    With :math:`\hat\epsilon = (x - m D)/s` and :math:`c = \eta\, s_{next}\sqrt{1 - e^{-2h}}`:

    .. math:: x_{next} = m_{next} D + \sqrt{s_{next}^2 - c^2}\,\hat\epsilon + c\, z
              = \frac{s_{next}}{s} k\, x + m_{next}(1 - k e^{-h}) D + c\, z,
              \quad k = \sqrt{1 - \eta^2 + \eta^2 e^{-2h}}.

    For VP (:math:`m^2 = \bar\alpha`, :math:`s^2 = 1 - \bar\alpha`), :math:`1 - e^{-2h} =
    (m_{next}^2 - m^2)/(s^2 m_{next}^2)`, so :math:`c = \eta \tfrac{s_{next}}{s}\sqrt{1 -
    \bar\alpha_t/\bar\alpha_{t-1}}`: DDIM's :math:`\sigma_t(\eta)`. :math:`\eta = 0` is
    DPM-Solver-1, the first step of :class:`DPMSolverPP2M`; :math:`\eta = 1` draws from the
    forward process's posterior :math:`q(x_{next} | x, D)` (DDPM's ancestral step, Ho et al.
    2020, eq. 7). ``state.x_mean`` is the update before :math:`c z`; z comes from the key.

    Attributes:
      sde: the forward SDE.
      eta: the noise share, in [0, 1] (beyond 1, :math:`c > s_{next}` for long steps).

    Raises:
      TypeError: if ``sde`` is not an SDE.
      ValueError: if ``eta`` is outside [0, 1].
    """

    sde: SDE
    eta: float = 0.0
    order = 1
    nfe_per_step = 1

    def __post_init__(self):
        _check_sde(self.sde)
        object.__setattr__(self, "eta", validation.interval("eta", self.eta, 0.0, 1.0))

    def step(self, key: Key, score_fn: ScoreFn, state: State, t: Array, t_next: Array) -> State:
        """One DDIM step; ``key`` draws z (unused for ``eta = 0``)."""
        x, eta, g = state.x, self.eta, _geometry(self.sde, t, t_next)
        d = predictions.from_score_fn(self.sde, score_fn, "x0")(x, t)
        k = jnp.sqrt((1.0 - eta**2) + eta**2 * jnp.exp(-2.0 * g.h))
        x_mean = (g.ratio * k) * x + g.m_next * (-jnp.expm1(-g.h) + (1.0 - k) * jnp.exp(-g.h)) * d
        if eta == 0.0:
            return State(x_mean, x_mean)
        return State(_add_noise(key, x_mean, g, 1.0, eta), x_mean)
