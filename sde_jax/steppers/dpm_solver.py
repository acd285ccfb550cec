r"""The DPM-Solver++ family and DDIM: exponential integrators in the log-SNR, data prediction.

With :math:`\lambda = \log(m/s)` (``sde.log_snr``) and the data prediction :math:`D(x, t) =
(x + s^2 s_\theta)/m` (``predictions.from_score_fn(sde, score_fn, "x0")``), the
probability-flow ODE solved from t to :math:`t' < t`, :math:`h = \lambda(t') - \lambda(t) > 0`,
is exactly (Lu et al. 2022, "DPM-Solver++", eq. 9)

.. math:: x_{t'} = \frac{s'}{s} x_t + s' \int_{\lambda}^{\lambda'} e^{\ell} D(\ell)\, d\ell.

Each solver approximates D in the integral by a polynomial in :math:`\ell` (from earlier steps:
multistep; from intermediate evaluations: singlestep), so the linear part is integrated exactly.
Everything comes from the SDE's m, s and lambda, so every SDE works, VE and EDM included.

=====================  ======  ====  ============================================
stepper                order   nfe   history
=====================  ======  ====  ============================================
``DDIM``               1       1     ``()``
``DPMSolverPP2M``      2       1     ``(D_prev, h_prev)``
``DPMSolverPP3M``      3       1     ``(D_prev, D_prev2, h_prev, h_prev2)``
``DPMSolverPP2S``      2       2     ``()``
``DPMSolverPP3S``      3       3     ``()``
``DPMSolverPP2MSDE``   2       1     ``(D_prev, h_prev)``
``DPMSolverPP3MSDE``   3       1     ``(D_prev, D_prev2, h_prev, h_prev2)``
=====================  ======  ====  ============================================

In a history, a step size of 0 marks "no such step yet"; the multistep solvers then take the
lower-order update, as the reference code does for its first steps. The SDE variants' order is
that of their deterministic part (``eta = 0``).
"""

import dataclasses
import math
from typing import Literal

import jax
import jax.numpy as jnp

from sde_jax import predictions
from sde_jax.sdes import SDE, check_log_snr_inverse
from sde_jax.steppers.base import Memoryless, State, register_static
from sde_jax.typing import Array, Key, ScoreFn

__all__ = [
    "DDIM",
    "DPMSolverPP2M",
    "DPMSolverPP2MSDE",
    "DPMSolverPP2S",
    "DPMSolverPP3M",
    "DPMSolverPP3MSDE",
    "DPMSolverPP3S",
]


# --------------------------------------------------------------------------------------------
# Validation, in Python before tracing.


def _check_sde(sde: object) -> None:
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be an sde_jax.sdes.SDE such as VPSDE(), got {sde!r}.")


def _check_number(name: str, value: object, low: float, high: float, closed: bool) -> float:
    ok = not isinstance(value, bool) and isinstance(value, int | float)
    inside = ok and (low <= value <= high if closed else low < value < high)
    if not inside:
        interval = f"[{low}, {high}]" if closed else f"({low}, {high})"
        raise ValueError(f"{name} must be a number in {interval}, got {name}={value!r}.")
    return float(value)


def _check_nonnegative(name: str, value: object) -> float:
    return _check_number(name, value, 0.0, math.inf, closed=True)


# --------------------------------------------------------------------------------------------
# Shared pieces.


def _safe_ratio(num: Array, den: Array) -> Array:
    """``num / den`` where ``den > 0``, else 0; differentiable at ``den = 0`` (double where)."""
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


def _log_snr_step(sde: SDE, t: Array, t_next: Array) -> Array:
    r""":math:`h = \lambda(t') - \lambda(t)`."""
    return sde.log_snr(t_next) - sde.log_snr(t)


Variant = Literal["taylor", "reference"]
"""The 3M solvers' third-order term: ``'taylor'`` (order 3) or ``'reference'`` (the code's)."""


def _check_variant(variant: object) -> None:
    if variant not in ("taylor", "reference"):
        raise ValueError(
            f"variant must be one of ['reference', 'taylor'], got variant={variant!r}."
        )


def _third_order_terms(
    d: Array, d1: Array, d2: Array, h: Array, h1: Array, h2: Array, big_h: Array, variant: Variant
) -> Array:
    r"""The third-order multistep correction :math:`\varphi_2 D_1 - c\,\varphi_3 D_2`.

    With :math:`r_0 = h_1/h`, :math:`r_1 = h_2/h` (the last two steps over this one),
    :math:`D_{1,0} = (D - D_{-1})/r_0`, :math:`D_{1,1} = (D_{-1} - D_{-2})/r_1`,
    :math:`D_1 = D_{1,0} + \tfrac{r_0}{r_0 + r_1}(D_{1,0} - D_{1,1}) \approx h D'`,
    :math:`D_2 = (D_{1,0} - D_{1,1})/(r_0 + r_1) \approx h^2 D''/2`, :math:`\varphi_2 = 1 +
    \mathrm{expm1}(-H)/H`, :math:`\varphi_3 = \varphi_2/H - \tfrac12` (``H = h`` for the ODE,
    :math:`(1+\eta)h` for the SDE). The Taylor expansion of the exponential integral gives
    :math:`-\varphi_3 h^2 D''`, so ``'taylor'`` takes c = 2; ``'reference'`` takes c = 1, as
    ``multistep_dpm_solver_third_update`` of the DPM-Solver code and k-diffusion's
    ``sample_dpmpp_3m_sde`` do (local error :math:`O(h^3)`: second order). Returns 0 unless
    both earlier steps exist. The result multiplies :math:`m(t')`.
    """
    both = (h1 > 0) & (h2 > 0)
    r0, r1 = h1 / h, h2 / h
    d1_0 = _safe_ratio(1.0, r0) * (d - d1)
    d1_1 = _safe_ratio(1.0, r1) * (d1 - d2)
    r_sum = r0 + r1
    d_first = d1_0 + _safe_ratio(r0, r_sum) * (d1_0 - d1_1)
    d_second = _safe_ratio(1.0, r_sum) * (d1_0 - d1_1)
    phi_2 = jnp.expm1(-big_h) / big_h + 1.0
    phi_3 = (phi_2 / big_h - 0.5) * (2.0 if variant == "taylor" else 1.0)
    return jnp.where(both, phi_2 * d_first - phi_3 * d_second, 0.0)


def _standard_normal(key: Key, x: Array) -> Array:
    return jax.random.normal(key, x.shape, x.dtype)


# --------------------------------------------------------------------------------------------
# Multistep ODE solvers.


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


def _init_two_back(x: Array) -> State:
    zero = jnp.zeros((), x.dtype)
    return State(x, x, (jnp.zeros_like(x), jnp.zeros_like(x), zero, zero))


@register_static
@dataclasses.dataclass(frozen=True)
class DPMSolverPP3M:
    r"""DPM-Solver++(3M): third-order multistep solver of the probability-flow ODE.

    As the DPM-Solver reference code's multistep sampler of order 3 (Lu et al. 2022): the first
    step is DPM-Solver-1 (DDIM), the second the 2M update of :class:`DPMSolverPP2M`, and from
    the third on (``multistep_dpm_solver_third_update``)

    .. math:: x_{next} = \frac{s_{next}}{s} x - m_{next}\varphi_1 D
              + m_{next}(\varphi_2 D_1 - \varphi_3 D_2), \quad \varphi_1 = \mathrm{expm1}(-h),

    with :math:`D_1, D_2, \varphi_2, \varphi_3` the divided differences and coefficients of
    :func:`_third_order_terms` (:math:`H = h`). History: D at the last two steps and their h.

    Attributes:
      sde: the forward SDE.
      variant: ``'taylor'`` (default): the :math:`D_2` coefficient of the Taylor expansion,
        order 3; ``'reference'``: the reference code's, half of it, order 2 (``order`` says).

    Raises:
      TypeError: if ``sde`` is not an SDE.
      ValueError: for another ``variant``.
    """

    sde: SDE
    variant: Variant = "taylor"
    nfe_per_step = 1

    def __post_init__(self):
        _check_sde(self.sde)
        _check_variant(self.variant)

    @property
    def order(self) -> int:
        """3 (``'taylor'``) or 2 (``'reference'``)."""
        return 3 if self.variant == "taylor" else 2

    def init(self, x: Array) -> State:
        """No history: ``h_prev = h_prev2 = 0``."""
        return _init_two_back(x)

    def step(self, key: Key, score_fn: ScoreFn, state: State, t: Array, t_next: Array) -> State:
        """One multistep update of the highest order the history allows; ``key`` is unused."""
        del key
        x, (d1, d2, h1, h2) = state.x, state.history
        s = self.sde.marginal_std(t)
        m_next, s_next = self.sde.mean_coeff(t_next), self.sde.marginal_std(t_next)
        h = _log_snr_step(self.sde, t, t_next)
        d = predictions.from_score_fn(self.sde, score_fn, "x0")(x, t)
        phi_1 = jnp.expm1(-h)
        second = (h1 > 0) & ~(h2 > 0)
        half_inv_r = 0.5 * _safe_ratio(jnp.where(second, h, 0.0), h1)
        x_next = (s_next / s) * x - m_next * phi_1 * (d + half_inv_r * (d - d1))
        x_next = x_next + m_next * _third_order_terms(d, d1, d2, h, h1, h2, h, self.variant)
        return State(x_next, x_next, (d, d1, h.astype(x.dtype), h1))


# --------------------------------------------------------------------------------------------
# Singlestep ODE solvers.


def _intermediate(sde: SDE, lam: Array, fraction: float, h: Array) -> Array:
    r"""The time of log-SNR :math:`\lambda + r h` (``sde.t_of_log_snr``)."""
    return sde.t_of_log_snr(lam + fraction * h)


@register_static
@dataclasses.dataclass(frozen=True)
class DPMSolverPP2S(Memoryless):
    r"""DPM-Solver++(2S): second-order singlestep solver (Lu et al. 2022, Algorithm 1).

    An intermediate time :math:`u` with :math:`\lambda_u = \lambda + r h` (``sde.t_of_log_snr``):

    .. math:: x_u = \frac{s_u}{s} x - m_u\,\mathrm{expm1}(-r h)\, D(x, t),
    .. math:: x_{next} = \frac{s_{next}}{s} x - m_{next}\,\mathrm{expm1}(-h)
              \big[D + \tfrac{1}{2r}(D(x_u, u) - D)\big],

    the ``'dpmsolver'`` type of the reference's ``singlestep_dpm_solver_second_update``.

    Attributes:
      sde: the forward SDE (it must define ``t_of_log_snr``).
      r: where the intermediate evaluation sits in the step's log-SNR, in (0, 1); 1/2 is the
        midpoint rule.

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
        object.__setattr__(self, "r", _check_number("r", self.r, 0.0, 1.0, closed=False))

    def step(self, key: Key, score_fn: ScoreFn, state: State, t: Array, t_next: Array) -> State:
        """Two evaluations, at ``t`` and at the intermediate time; ``key`` is unused."""
        del key
        sde, x, r = self.sde, state.x, self.r
        denoise = predictions.from_score_fn(sde, score_fn, "x0")
        lam = sde.log_snr(t)
        h = sde.log_snr(t_next) - lam
        s = sde.marginal_std(t)
        u = _intermediate(sde, lam, r, h)
        d = denoise(x, t)
        x_u = (sde.marginal_std(u) / s) * x - sde.mean_coeff(u) * jnp.expm1(-r * h) * d
        d_u = denoise(x_u, u)
        m_next, s_next = sde.mean_coeff(t_next), sde.marginal_std(t_next)
        x_next = (s_next / s) * x - m_next * jnp.expm1(-h) * (d + (0.5 / r) * (d_u - d))
        return State(x_next, x_next)


@register_static
@dataclasses.dataclass(frozen=True)
class DPMSolverPP3S(Memoryless):
    r"""DPM-Solver++(3S): third-order singlestep solver (Lu et al. 2022, DPM-Solver-3 with D).

    Intermediate times :math:`u_1, u_2` at :math:`\lambda + r_1 h`, :math:`\lambda + r_2 h`;
    with :math:`\varphi_1(z) = \mathrm{expm1}(-z)` and :math:`\varphi_2(z) = 1 + \varphi_1(z)/z`
    (the ``'dpmsolver'`` type of the reference's ``singlestep_dpm_solver_third_update``):

    .. math:: x_{u_1} = \tfrac{s_{u_1}}{s} x - m_{u_1}\varphi_1(r_1 h) D,
    .. math:: x_{u_2} = \tfrac{s_{u_2}}{s} x - m_{u_2}\varphi_1(r_2 h) D
              + \tfrac{r_2}{r_1} m_{u_2}\varphi_2(r_2 h)(D_{u_1} - D),
    .. math:: x_{next} = \tfrac{s_{next}}{s} x - m_{next}\varphi_1(h) D
              + \tfrac{1}{r_2} m_{next}\varphi_2(h)(D_{u_2} - D).

    Third order needs :math:`r_2 = 2/3` (the default); another :math:`r_2` gives order 2, which
    ``order`` then reports.

    Attributes:
      sde: the forward SDE (it must define ``t_of_log_snr``).
      r1, r2: the intermediate fractions of the step's log-SNR, ``0 < r1 < r2 < 1``.

    Raises:
      TypeError: if ``sde`` is not an SDE.
      ValueError: if ``r1``, ``r2`` break ``0 < r1 < r2 < 1`` or the SDE lacks
        ``t_of_log_snr``.
    """

    sde: SDE
    r1: float = 1.0 / 3.0
    r2: float = 2.0 / 3.0
    nfe_per_step = 3

    def __post_init__(self):
        _check_sde(self.sde)
        check_log_snr_inverse(self.sde, "DPMSolverPP3S")
        r1 = _check_number("r1", self.r1, 0.0, 1.0, closed=False)
        r2 = _check_number("r2", self.r2, 0.0, 1.0, closed=False)
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
        lam = sde.log_snr(t)
        h = sde.log_snr(t_next) - lam
        s = sde.marginal_std(t)
        u1, u2 = _intermediate(sde, lam, r1, h), _intermediate(sde, lam, r2, h)
        d = denoise(x, t)
        x_u1 = (sde.marginal_std(u1) / s) * x - sde.mean_coeff(u1) * jnp.expm1(-r1 * h) * d
        d_u1 = denoise(x_u1, u1)
        m_u2 = sde.mean_coeff(u2)
        phi_22 = jnp.expm1(-r2 * h) / (r2 * h) + 1.0
        x_u2 = (
            (sde.marginal_std(u2) / s) * x
            - m_u2 * jnp.expm1(-r2 * h) * d
            + (r2 / r1) * m_u2 * phi_22 * (d_u1 - d)
        )
        d_u2 = denoise(x_u2, u2)
        m_next, s_next = sde.mean_coeff(t_next), sde.marginal_std(t_next)
        phi_2 = jnp.expm1(-h) / h + 1.0
        x_next = (
            (s_next / s) * x - m_next * jnp.expm1(-h) * d + (1.0 / r2) * m_next * phi_2 * (d_u2 - d)
        )
        return State(x_next, x_next)


# --------------------------------------------------------------------------------------------
# Stochastic solvers.


@register_static
@dataclasses.dataclass(frozen=True)
class DPMSolverPP2MSDE:
    r"""SDE-DPM-Solver++(2M): the multistep solver of the reverse SDE (Lu et al. 2022, sec. 5).

    With :math:`H = (1 + \eta) h` and :math:`r = h_{prev}/h`, as k-diffusion's
    ``sample_dpmpp_2m_sde`` written in m and s (its x is our :math:`x/m`):

    .. math:: \bar x = \frac{s_{next}}{s} e^{-\eta h} x - m_{next}\,\mathrm{expm1}(-H)\, D
              + m_{next}\, c(H)\, \tfrac{1}{r} (D - D_{prev}),
    .. math:: x_{next} = \bar x + s_{next}\sqrt{-\mathrm{expm1}(-2\eta h)}\; s_{noise}\, z,

    with :math:`c = -\tfrac12\mathrm{expm1}(-H)` (``'midpoint'``) or :math:`c = 1 +
    \mathrm{expm1}(-H)/H` (``'heun'``, the exact integral of the linear interpolant of D). The
    first step has no correction. :math:`\eta = 1` is the paper's SDE solver (the reverse SDE
    of eq. 6); :math:`\eta = 0` is :class:`DPMSolverPP2M`. ``order`` is that of the
    deterministic part. ``state.x_mean`` is :math:`\bar x`; z comes from the step's key.

    Attributes:
      sde: the forward SDE.
      eta: the share of the step taken stochastically, >= 0 (1: the reverse SDE).
      s_noise: scale of the injected noise, >= 0 (1: exact).
      solver_type: ``'midpoint'`` (the default of the references) or ``'heun'``.

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
        _check_sde(self.sde)
        object.__setattr__(self, "eta", _check_nonnegative("eta", self.eta))
        object.__setattr__(self, "s_noise", _check_nonnegative("s_noise", self.s_noise))
        if self.solver_type not in ("midpoint", "heun"):
            raise ValueError(
                "solver_type must be one of ['heun', 'midpoint'], "
                f"got solver_type={self.solver_type!r}."
            )

    def init(self, x: Array) -> State:
        """No history yet: ``h_prev = 0`` marks the first step."""
        return State(x, x, (jnp.zeros_like(x), jnp.zeros((), x.dtype)))

    def step(self, key: Key, score_fn: ScoreFn, state: State, t: Array, t_next: Array) -> State:
        """One multistep update, then noise from ``key``."""
        x, (d_prev, h_prev) = state.x, state.history
        s = self.sde.marginal_std(t)
        m_next, s_next = self.sde.mean_coeff(t_next), self.sde.marginal_std(t_next)
        h = _log_snr_step(self.sde, t, t_next)
        big_h = (1.0 + self.eta) * h
        d = predictions.from_score_fn(self.sde, score_fn, "x0")(x, t)
        if self.solver_type == "midpoint":
            c = -0.5 * jnp.expm1(-big_h)
        else:
            c = jnp.expm1(-big_h) / big_h + 1.0
        inv_r = _safe_ratio(h, h_prev)
        x_mean = (
            (s_next / s) * jnp.exp(-self.eta * h) * x
            - m_next * jnp.expm1(-big_h) * d
            + m_next * c * inv_r * (d - d_prev)
        )
        noise_std = s_next * jnp.sqrt(-jnp.expm1(-2.0 * self.eta * h)) * self.s_noise
        x_next = x_mean + noise_std * _standard_normal(key, x)
        return State(x_next, x_mean, (d, h.astype(x.dtype)))


@register_static
@dataclasses.dataclass(frozen=True)
class DPMSolverPP3MSDE:
    r"""DPM-Solver++(3M) SDE: k-diffusion's ``sample_dpmpp_3m_sde`` (Gonzalez et al. 2023).

    With :math:`H = (1 + \eta) h`, :math:`\varphi_2 = 1 + \mathrm{expm1}(-H)/H`:

    .. math:: \bar x = \frac{s_{next}}{s} e^{-\eta h} x - m_{next}\,\mathrm{expm1}(-H)\, D
              + m_{next}\,T,
    .. math:: x_{next} = \bar x + s_{next}\sqrt{-\mathrm{expm1}(-2\eta h)}\; s_{noise}\, z,

    where T is 0 at the first step, :math:`\varphi_2 (D - D_{prev})/r` at the second, and
    :math:`\varphi_2 D_1 - \varphi_3 D_2` after (:func:`_third_order_terms`). With
    :math:`\eta = 0`, from the third step on it is :class:`DPMSolverPP3M`'s update. ``order``
    is that of the deterministic part; ``state.x_mean`` is :math:`\bar x`.

    Attributes:
      sde: the forward SDE.
      eta: the share of the step taken stochastically, >= 0 (1: the reverse SDE).
      s_noise: scale of the injected noise, >= 0 (1: exact).
      variant: the third-order term, as :class:`DPMSolverPP3M`'s (``'reference'`` is
        k-diffusion's).

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
        _check_sde(self.sde)
        object.__setattr__(self, "eta", _check_nonnegative("eta", self.eta))
        object.__setattr__(self, "s_noise", _check_nonnegative("s_noise", self.s_noise))
        _check_variant(self.variant)

    @property
    def order(self) -> int:
        """3 (``'taylor'``) or 2 (``'reference'``), of the deterministic part."""
        return 3 if self.variant == "taylor" else 2

    def init(self, x: Array) -> State:
        """No history: ``h_prev = h_prev2 = 0``."""
        return _init_two_back(x)

    def step(self, key: Key, score_fn: ScoreFn, state: State, t: Array, t_next: Array) -> State:
        """One multistep update of the highest order the history allows, then noise."""
        x, (d1, d2, h1, h2) = state.x, state.history
        s = self.sde.marginal_std(t)
        m_next, s_next = self.sde.mean_coeff(t_next), self.sde.marginal_std(t_next)
        h = _log_snr_step(self.sde, t, t_next)
        big_h = (1.0 + self.eta) * h
        d = predictions.from_score_fn(self.sde, score_fn, "x0")(x, t)
        phi_2 = jnp.expm1(-big_h) / big_h + 1.0
        second = (h1 > 0) & ~(h2 > 0)
        inv_r = _safe_ratio(jnp.where(second, h, 0.0), h1)
        correction = phi_2 * inv_r * (d - d1) + _third_order_terms(
            d, d1, d2, h, h1, h2, big_h, self.variant
        )
        x_mean = (
            (s_next / s) * jnp.exp(-self.eta * h) * x
            - m_next * jnp.expm1(-big_h) * d
            + m_next * correction
        )
        noise_std = s_next * jnp.sqrt(-jnp.expm1(-2.0 * self.eta * h)) * self.s_noise
        x_next = x_mean + noise_std * _standard_normal(key, x)
        return State(x_next, x_mean, (d, d1, h.astype(x.dtype), h1))


@register_static
@dataclasses.dataclass(frozen=True)
class DDIM(Memoryless):
    r"""DDIM with :math:`\eta` (Song, Meng and Ermon 2021, eq. 12), for any SDE through m, s.

    With :math:`\hat\epsilon = (x - m D)/s` and :math:`c = \eta\, s_{next}\sqrt{1 -
    e^{-2h}}`:

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
        object.__setattr__(self, "eta", _check_number("eta", self.eta, 0.0, 1.0, closed=True))

    def step(self, key: Key, score_fn: ScoreFn, state: State, t: Array, t_next: Array) -> State:
        """One DDIM step; ``key`` draws z (unused for ``eta = 0``)."""
        x, eta = state.x, self.eta
        s = self.sde.marginal_std(t)
        m_next, s_next = self.sde.mean_coeff(t_next), self.sde.marginal_std(t_next)
        h = _log_snr_step(self.sde, t, t_next)
        d = predictions.from_score_fn(self.sde, score_fn, "x0")(x, t)
        k = jnp.sqrt((1.0 - eta**2) + eta**2 * jnp.exp(-2.0 * h))
        x_mean = (s_next / s * k) * x + m_next * (-jnp.expm1(-h) + (1.0 - k) * jnp.exp(-h)) * d
        if eta == 0.0:
            return State(x_mean, x_mean)
        noise_std = eta * s_next * jnp.sqrt(-jnp.expm1(-2.0 * h))
        return State(x_mean + noise_std * _standard_normal(key, x), x_mean)
