r"""The forward SDEs of Song et al. (2021): VP, sub-VP and VE.

Every SDE here is linear in x,

.. math:: dx = f(t)\, x\, dt + g(t)\, dw,

so its transition from time 0 is Gaussian: :math:`x_t = m(t)\, x_0 + s(t)\, z`. Each class
states the four scalar functions ``drift_coeff`` (f), ``diffusion_coeff`` (g), ``mean_coeff``
(m) and ``marginal_std`` (s) of a time array, and the base class builds the original
score_sde API from them: ``sde``, ``marginal_prob``, ``prior_sampling``, ``prior_logp``,
``discretize`` and ``T``.

An SDE holds the process only. It has no step count: a discretization takes its step ``dt``
explicitly, and the original's N=1000 tables are available through ``discrete_betas`` and
``discrete_sigmas`` for any N.

Shapes: ``x`` is ``[batch, ...]``; ``t`` is ``[batch]`` (one time per example) or a scalar
shared by the batch. Per-example coefficients come back with shape ``[batch]``.
"""

import abc
import dataclasses
import math

import jax
import jax.numpy as jnp

from sde_jax.typing import Array, ArrayLike, Data, Key, PerExample, ScoreFn, Times

__all__ = [
    "SDE",
    "VESDE",
    "VPSDE",
    "ScoreFn",
    "SubVPSDE",
    "probability_flow_drift",
    "reverse_drift",
]


def _check_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        kind = type(value).__name__
        raise TypeError(f"{name} must be a real number, got {value!r} of type {kind}.")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}.")
    return float(value)


def batch_times(x: ArrayLike, t: ArrayLike) -> Array:
    """Returns ``t`` as a ``[batch]`` array matching the leading axis of ``x``.

    Args:
      x: data, shape ``[batch, ...]``.
      t: times, shape ``[batch]`` or ``()`` (one time for the whole batch).

    Raises:
      ValueError: if ``x`` has no batch axis or ``t`` is neither a scalar nor ``[batch]``.
    """
    x_shape, t_shape = jnp.shape(x), jnp.shape(t)
    if len(x_shape) < 1:
        raise ValueError(f"x must have a leading batch axis, got shape {x_shape}.")
    if t_shape == ():
        return jnp.full((x_shape[0],), t, dtype=jnp.result_type(t, float))
    if t_shape != (x_shape[0],):
        raise ValueError(
            f"t must have shape () or (batch,) = ({x_shape[0]},) to match x of shape {x_shape}, "
            f"got shape {t_shape}."
        )
    return jnp.asarray(t)


def expand_to(v: Array, x: ArrayLike) -> Array:
    """Reshapes a ``[batch]`` vector to ``[batch, 1, ..., 1]`` so it broadcasts against ``x``."""
    return jnp.reshape(v, jnp.shape(v) + (1,) * (jnp.ndim(x) - jnp.ndim(v)))


class SDE(abc.ABC):
    r"""A linear forward SDE :math:`dx = f(t) x\,dt + g(t)\,dw` on :math:`t \in [0, T]`.

    Subclasses define the scalar coefficient functions and the prior's standard deviation;
    everything else follows from them.
    """

    @property
    def T(self) -> float:
        """The time horizon; the forward process runs on ``[0, T]``."""
        return 1.0

    @property
    @abc.abstractmethod
    def prior_std(self) -> float:
        r"""Standard deviation of the Gaussian prior :math:`p_T = N(0, \sigma_T^2 I)`."""

    @abc.abstractmethod
    def drift_coeff(self, t: ArrayLike) -> Array:
        """f(t), so that the drift is f(t) x."""

    @abc.abstractmethod
    def diffusion_coeff(self, t: ArrayLike) -> Array:
        """g(t), the diffusion coefficient."""

    @abc.abstractmethod
    def mean_coeff(self, t: ArrayLike) -> Array:
        """m(t) = exp(int_0^t f), so that E[x_t | x_0] = m(t) x_0."""

    @abc.abstractmethod
    def marginal_std(self, t: ArrayLike) -> Array:
        """s(t), the standard deviation of x_t given x_0."""

    def sde(self, x: Data, t: Times) -> tuple[Data, PerExample]:
        """Drift and diffusion of the forward SDE (paper eq. 5).

        Args:
          x: state, shape ``[batch, ...]``.
          t: time, shape ``[batch]`` or ``()``.

        Returns:
          ``(drift, diffusion)``: ``f(t) x`` with the shape of ``x``, and ``g(t)`` with shape
          ``[batch]``.
        """
        t = batch_times(x, t)
        return expand_to(self.drift_coeff(t), x) * x, self.diffusion_coeff(t)

    def marginal_prob(self, x: Data, t: Times) -> tuple[Data, PerExample]:
        """Mean and standard deviation of the perturbation kernel :math:`p_{0t}(x_t | x_0)`.

        Args:
          x: clean data :math:`x_0`, shape ``[batch, ...]``.
          t: time, shape ``[batch]`` or ``()``.

        Returns:
          ``(mean, std)``: ``m(t) x`` with the shape of ``x``, and ``s(t)`` with shape ``[batch]``.
        """
        t = batch_times(x, t)
        return expand_to(self.mean_coeff(t), x) * x, self.marginal_std(t)

    def prior_sampling(
        self, key: Key, shape: tuple[int, ...], dtype: jnp.dtype = jnp.float32
    ) -> Array:
        r"""Draws from the prior :math:`N(0, \sigma_T^2 I)` with the given ``shape``."""
        return self.prior_std * jax.random.normal(key, shape, dtype)

    def prior_logp(self, z: Data) -> PerExample:
        r"""Log-density of the prior in nats, summed over all non-batch axes.

        .. math:: \log p_T(z) = -\tfrac{D}{2}\log(2\pi\sigma_T^2) - \|z\|^2 / (2\sigma_T^2)
        """
        z = jnp.asarray(z)
        if z.ndim < 1:
            raise ValueError(f"z must have a leading batch axis, got shape {z.shape}.")
        dim = math.prod(z.shape[1:])
        sq_norm = jnp.sum(jnp.reshape(z, (z.shape[0], -1)) ** 2, axis=1)
        log_norm = 0.5 * dim * math.log(2 * math.pi * self.prior_std**2)
        return -log_norm - sq_norm / (2 * self.prior_std**2)

    def discretize(self, x: Data, t: Times, dt: float | ArrayLike) -> tuple[Data, PerExample]:
        """One forward step from ``t - dt`` to ``t``: :math:`x_t = x_{t-dt} + f + G z`.

        The base rule is Euler-Maruyama, ``f = f(t) x dt`` and ``G = g(t) sqrt(dt)``. The VP and
        VE SDEs override it with the DDPM and SMLD steps (paper eqs. 7 and 8 of appendix B,
        and the reverse-diffusion predictor of section 4.2).

        Args:
          x: state, shape ``[batch, ...]``.
          t: time at the end of the step, shape ``[batch]`` or ``()``.
          dt: positive step size.

        Returns:
          ``(f, G)``: the mean increment with the shape of ``x`` and the noise scale ``[batch]``.
        """
        drift, diffusion = self.sde(x, t)
        return drift * dt, diffusion * jnp.sqrt(dt)


def reverse_drift(sde: SDE, score_fn: ScoreFn, x: Data, t: Times) -> Data:
    r"""Drift of the reverse-time SDE, :math:`f(x, t) - g(t)^2 \nabla_x \log p_t(x)` (eq. 6).

    The reverse SDE runs from ``T`` to 0 with the same diffusion ``g(t)`` as the forward one.
    """
    t = batch_times(x, t)
    drift, diffusion = sde.sde(x, t)
    return drift - expand_to(diffusion**2, x) * score_fn(x, t)


def probability_flow_drift(sde: SDE, score_fn: ScoreFn, x: Data, t: Times) -> Data:
    r"""Velocity of the probability-flow ODE (paper eq. 13).

    :math:`f(x, t) - \tfrac12 g(t)^2 \nabla_x \log p_t(x)`: the deterministic process whose
    marginals equal the SDE's at every t.
    """
    t = batch_times(x, t)
    drift, diffusion = sde.sde(x, t)
    return drift - 0.5 * expand_to(diffusion**2, x) * score_fn(x, t)


def _register(cls: type) -> type:
    """Makes a frozen SDE dataclass a pytree whose fields are static (hashable) metadata."""
    fields = [f.name for f in dataclasses.fields(cls)]
    return jax.tree_util.register_dataclass(cls, data_fields=[], meta_fields=fields)


@dataclasses.dataclass(frozen=True)
class _LinearBetaSDE(SDE):
    r"""Shared by VP and sub-VP: :math:`\beta(t) = \beta_{min} + t(\beta_{max} - \beta_{min})`."""

    beta_min: float = 0.1
    beta_max: float = 20.0

    def __post_init__(self):
        beta_min = _check_number("beta_min", self.beta_min)
        beta_max = _check_number("beta_max", self.beta_max)
        if beta_min < 0:
            raise ValueError(f"beta_min must be >= 0, got beta_min={beta_min}.")
        if beta_min >= beta_max:
            raise ValueError(
                f"beta_min must be smaller than beta_max, got beta_min={beta_min} >= "
                f"beta_max={beta_max}."
            )
        object.__setattr__(self, "beta_min", beta_min)
        object.__setattr__(self, "beta_max", beta_max)

    @property
    def prior_std(self) -> float:
        """The prior is N(0, I)."""
        return 1.0

    def beta(self, t: ArrayLike) -> Array:
        r""":math:`\beta(t)`, linear in t."""
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def integrated_beta(self, t: ArrayLike) -> Array:
        r""":math:`B(t) = \int_0^t \beta(s) ds = \beta_{min} t + \tfrac12 t^2 \Delta\beta`."""
        return self.beta_min * t + 0.5 * t**2 * (self.beta_max - self.beta_min)

    def drift_coeff(self, t: ArrayLike) -> Array:
        r""":math:`f(t) = -\beta(t)/2`."""
        return -0.5 * self.beta(t)

    def mean_coeff(self, t: ArrayLike) -> Array:
        """:math:`m(t) = e^{-B(t)/2}`."""
        return jnp.exp(-0.5 * self.integrated_beta(t))


@_register
@dataclasses.dataclass(frozen=True)
class VPSDE(_LinearBetaSDE):
    r"""Variance-preserving SDE, the continuous limit of DDPM (paper eq. 11).

    .. math:: dx = -\tfrac12 \beta(t) x\,dt + \sqrt{\beta(t)}\,dw, \quad
              \beta(t) = \beta_{min} + t(\beta_{max} - \beta_{min}).

    Attributes:
      beta_min: :math:`\beta(0)`, default 0.1.
      beta_max: :math:`\beta(1)`, default 20.
    """

    def diffusion_coeff(self, t: ArrayLike) -> Array:
        r""":math:`g(t) = \sqrt{\beta(t)}`."""
        return jnp.sqrt(self.beta(t))

    def marginal_std(self, t: ArrayLike) -> Array:
        r""":math:`s(t) = \sqrt{1 - e^{-B(t)}}`, with expm1 so that small t keeps its precision."""
        return jnp.sqrt(-jnp.expm1(-self.integrated_beta(t)))

    def beta_step(self, t: ArrayLike, dt: float | ArrayLike) -> Array:
        r"""The DDPM noise level of the step ending at t: :math:`\beta_i = \beta(t)\,\Delta t`.

        With ``t = i / (N - 1)`` and ``dt = 1 / N`` this is entry ``i`` of
        :meth:`discrete_betas` ``(N)``, the original's table.
        """
        return self.beta(t) * dt

    def discrete_betas(self, num_steps: int) -> Array:
        """The DDPM schedule ``linspace(beta_min / N, beta_max / N, N)``, index 0 at t = 0."""
        n = _check_num_steps(num_steps)
        return jnp.linspace(self.beta_min / n, self.beta_max / n, n)

    def discretize(self, x, t, dt):
        r"""The DDPM step (paper appendix B, eq. 8).

        :math:`x_i = \sqrt{1-\beta_i}\, x_{i-1} + \sqrt{\beta_i}\, z`, written as
        :math:`x_i = x_{i-1} + f + G z` with :math:`f = (\sqrt{1-\beta_i} - 1) x_{i-1}` and
        :math:`G = \sqrt{\beta_i}`, where :math:`\beta_i` is :meth:`beta_step` ``(t, dt)``.
        """
        t = batch_times(x, t)
        beta = self.beta_step(t, dt)
        f = expand_to(jnp.sqrt(1.0 - beta) - 1.0, x) * x
        return f, jnp.sqrt(beta)


@_register
@dataclasses.dataclass(frozen=True)
class SubVPSDE(_LinearBetaSDE):
    r"""Sub-VP SDE (paper eq. 12); its variance is below the VP SDE's at every t.

    .. math:: dx = -\tfrac12 \beta(t) x\,dt + \sqrt{\beta(t)(1 - e^{-2B(t)})}\,dw.

    Its marginal standard deviation is :math:`1 - e^{-B(t)}` (no square root).
    It discretizes with Euler-Maruyama: the original has no discrete counterpart.

    Attributes:
      beta_min: :math:`\beta(0)`, default 0.1.
      beta_max: :math:`\beta(1)`, default 20.
    """

    def diffusion_coeff(self, t: ArrayLike) -> Array:
        r""":math:`g(t) = \sqrt{\beta(t) (1 - e^{-2 B(t)})}`."""
        return jnp.sqrt(-self.beta(t) * jnp.expm1(-2.0 * self.integrated_beta(t)))

    def marginal_std(self, t: ArrayLike) -> Array:
        """:math:`s(t) = 1 - e^{-B(t)}`."""
        return -jnp.expm1(-self.integrated_beta(t))


@_register
@dataclasses.dataclass(frozen=True)
class VESDE(SDE):
    r"""Variance-exploding SDE, the continuous limit of SMLD / NCSN (paper eq. 9).

    .. math:: dx = \sqrt{\tfrac{d\sigma^2(t)}{dt}}\,dw, \quad
              \sigma(t) = \sigma_{min} (\sigma_{max} / \sigma_{min})^t.

    ``marginal_std`` is :math:`\sigma(t)`, the paper's convention: the data are taken to carry
    :math:`N(0, \sigma_{min}^2)` noise at t = 0, so the exact variance added between 0 and t,
    :math:`\sigma(t)^2 - \sigma_{min}^2`, brings the total to :math:`\sigma(t)^2`.

    Attributes:
      sigma_min: :math:`\sigma(0)`, default 0.01.
      sigma_max: :math:`\sigma(1)` and the prior's standard deviation, default 50 (CIFAR-10).
    """

    sigma_min: float = 0.01
    sigma_max: float = 50.0

    def __post_init__(self):
        sigma_min = _check_number("sigma_min", self.sigma_min)
        sigma_max = _check_number("sigma_max", self.sigma_max)
        if sigma_min <= 0:
            raise ValueError(f"sigma_min must be > 0, got sigma_min={sigma_min}.")
        if sigma_min >= sigma_max:
            raise ValueError(
                f"sigma_min must be smaller than sigma_max, got sigma_min={sigma_min} >= "
                f"sigma_max={sigma_max}."
            )
        object.__setattr__(self, "sigma_min", sigma_min)
        object.__setattr__(self, "sigma_max", sigma_max)

    @property
    def prior_std(self) -> float:
        """The prior is N(0, sigma_max^2 I)."""
        return self.sigma_max

    @property
    def log_sigma_ratio(self) -> float:
        r""":math:`\log(\sigma_{max} / \sigma_{min})`."""
        return math.log(self.sigma_max / self.sigma_min)

    def sigma(self, t: ArrayLike) -> Array:
        r""":math:`\sigma(t) = \sigma_{min} (\sigma_{max}/\sigma_{min})^t`."""
        return self.sigma_min * jnp.exp(t * self.log_sigma_ratio)

    def drift_coeff(self, t: ArrayLike) -> Array:
        """:math:`f(t) = 0`."""
        return jnp.zeros_like(jnp.asarray(t, dtype=jnp.result_type(t, float)))

    def diffusion_coeff(self, t: ArrayLike) -> Array:
        r""":math:`g(t) = \sigma(t) \sqrt{2 \log(\sigma_{max}/\sigma_{min})}`."""
        return self.sigma(t) * math.sqrt(2.0 * self.log_sigma_ratio)

    def mean_coeff(self, t: ArrayLike) -> Array:
        """:math:`m(t) = 1`."""
        return jnp.ones_like(jnp.asarray(t, dtype=jnp.result_type(t, float)))

    def marginal_std(self, t: ArrayLike) -> Array:
        r""":math:`s(t) = \sigma(t)`."""
        return self.sigma(t)

    def adjacent_sigma(self, t: ArrayLike, dt: float | ArrayLike) -> Array:
        r""":math:`\sigma(t - \Delta t)`, or 0 where ``t - dt < 0`` (the step out of clean data).

        With ``t = i / (N - 1)`` and ``dt = 1 / (N - 1)`` this is entry ``i - 1`` of
        :meth:`discrete_sigmas` ``(N)``, and 0 for ``i = 0``, as in the original.
        """
        prev = t - dt
        # Half a step of slack: a t on the grid's first node minus dt lands near -dt.
        return jnp.where(prev < -0.5 * dt, 0.0, self.sigma(jnp.maximum(prev, 0.0)))

    def discrete_sigmas(self, num_steps: int) -> Array:
        r"""The SMLD noise levels, ASCENDING: entry i is :math:`\sigma(i / (N - 1))`.

        The original kept a second, descending table for its models (``get_sigmas``); sde_jax
        has only this one, indexed like time.
        """
        n = _check_num_steps(num_steps)
        return jnp.exp(jnp.linspace(math.log(self.sigma_min), math.log(self.sigma_max), n))

    def discretize(self, x, t, dt):
        r"""The SMLD step (paper appendix B, eq. 7).

        :math:`x_i = x_{i-1} + \sqrt{\sigma_i^2 - \sigma_{i-1}^2}\, z` with
        :math:`\sigma_i = \sigma(t)` and :math:`\sigma_{i-1}` = :meth:`adjacent_sigma` ``(t, dt)``.
        """
        t = batch_times(x, t)
        sigma, adjacent = self.sigma(t), self.adjacent_sigma(t, dt)
        return jnp.zeros_like(x), jnp.sqrt(sigma**2 - adjacent**2)


def _check_num_steps(num_steps: object) -> int:
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 2:
        raise ValueError(f"num_steps must be an integer >= 2, got {num_steps!r}.")
    return num_steps
