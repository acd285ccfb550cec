r"""The forward SDEs: VP, sub-VP and VE of Song et al. (2021), cosine VP and EDM.

Every SDE here is linear in x,

.. math:: dx = f(t)\, x\, dt + g(t)\, dw,

so its transition from time 0 is Gaussian: :math:`x_t = m(t)\, x_0 + s(t)\, z`. Each class
states the four scalar functions ``drift_coeff`` (f), ``diffusion_coeff`` (g), ``mean_coeff``
(m) and ``marginal_std`` (s) of a time array, and the base class builds the original
score_sde API from them: ``sde``, ``marginal_prob``, ``prior_sampling``, ``prior_logp``,
``discretize`` and ``T``.

The SDE also owns its noise geometry, in closed form, used by the grids, the steppers, the
likelihood's time variable and the importance sampling of the losses alike:

- ``log_snr(t)``: the HALF log signal-to-noise ratio :math:`\lambda(t) = \log(m(t)/s(t))`
  (DPM-Solver's :math:`\lambda`), decreasing in t, and its inverse ``t_of_log_snr``;
- ``sigma(t)``: the noise-to-signal ratio :math:`\sigma(t) = s(t)/m(t) = e^{-\lambda(t)}`
  (EDM's sigma), and its inverse ``t_of_sigma``.

For every linear SDE :math:`g^2/s^2 = \tfrac{d}{dt}\log(s^2/m^2) = -2\lambda'(t)` (from
:math:`m' = f m` and :math:`(s^2)' = 2 f s^2 + g^2`), so :math:`\lambda` is also the potential
of the likelihood weighting's importance sampling.

What only some SDEs have is a method with a generic default or a marker base class:
``ancestral_step`` (the exact Gaussian posterior step; VP and VE keep the original's DDPM and
SMLD formulas), ``langevin_alpha`` (the original's :math:`1 - \beta_i` for the linear-beta VP
family, 1 otherwise), ``default_eps``, the network conventions ``network_labels`` and
``network_output``, and the markers :class:`DiscreteDDPM` and :class:`DiscreteSMLD` for the
original's discrete models and their tables. A new SDE is one class in this file.

An SDE holds the process only. It has no step count: a discretization takes its step ``dt``
explicitly, and the original's N=1000 tables are available through ``discrete_betas`` and
``discrete_sigmas`` for any N.

Shapes: ``x`` is ``[batch, ...]``; ``t`` is ``[batch]`` (one time per example) or a scalar
shared by the batch. Per-example coefficients come back with shape ``[batch]``.
"""

import abc
import dataclasses
import math
from typing import ClassVar, Literal

import jax
import jax.numpy as jnp

from sde_jax import validation
from sde_jax.array_types import Array, ArrayLike, Data, Key, PerExample, ScoreFn, Times

__all__ = [
    "EDMSDE",
    "SDE",
    "VESDE",
    "VPSDE",
    "CosineVPSDE",
    "DiscreteDDPM",
    "DiscreteSMLD",
    "ScoreFn",
    "SubVPSDE",
    "check_log_snr_inverse",
    "probability_flow_drift",
    "reverse_drift",
]


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

    # ------------------------------------------------------------------------- noise geometry

    def log_snr(self, t: ArrayLike) -> Array:
        r"""The half log signal-to-noise ratio :math:`\lambda(t) = \log(m(t)/s(t))`.

        Decreasing in t. Subclasses override it with a closed form that keeps precision at
        both ends; this default takes the logs of ``mean_coeff`` and ``marginal_std``.
        """
        return jnp.log(self.mean_coeff(t)) - jnp.log(self.marginal_std(t))

    def t_of_log_snr(self, lam: ArrayLike) -> Array:
        r"""The inverse of :meth:`log_snr`: the time t with :math:`\lambda(t)` = ``lam``.

        Every SDE of sde_jax gives it in closed form; a user SDE that does not is still usable
        wherever the inverse is not needed (see :func:`check_log_snr_inverse`).

        Raises:
          NotImplementedError: in this base class.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not define t_of_log_snr, the inverse of log_snr."
        )

    def sigma(self, t: ArrayLike) -> Array:
        r"""The noise-to-signal ratio :math:`\sigma(t) = s(t)/m(t) = e^{-\lambda(t)}`."""
        return self.marginal_std(t) / self.mean_coeff(t)

    def t_of_sigma(self, sigma: ArrayLike) -> Array:
        r"""The inverse of :meth:`sigma`: :math:`t = \lambda^{-1}(-\log\sigma)`."""
        return self.t_of_log_snr(-jnp.log(sigma))

    @property
    def default_eps(self) -> float:
        """The paper's smallest sampling time: 1e-3 (VP-like SDEs); VE and EDM override it."""
        return 1e-3

    # ------------------------------------------------------------------------- generic steps

    def ancestral_step(
        self, x: Data, score: Data, t: Times, dt: float | ArrayLike
    ) -> tuple[Data, PerExample]:
        r"""Mean and std of one ancestral step from t to :math:`t - \Delta t`.

        The default draws from the exact Gaussian posterior :math:`q(x_{t'} | x_t, \hat x_0)`
        of the forward process (Ho et al. 2020, eq. 7, for any m and s), with :math:`t' = t -
        \Delta t`, Tweedie's :math:`\hat x_0 = (x_t + s(t)^2 \nabla\log p_t)/m(t)` and
        :math:`r = \sigma(t')/\sigma(t) = e^{\lambda(t) - \lambda(t')}`:

        .. math:: \mu = \frac{m(t')}{m(t)}\big(x_t + (1 - r^2)\, s(t)^2 \nabla\log p_t\big),
                  \quad \mathrm{std} = s(t')\sqrt{1 - r^2}.

        For VE it is the SMLD ancestral step (paper eq. 48), and to first order in the step it
        is DDPM's for VP (eq. 47); VPSDE and VESDE override it with the original's exact
        formulas on their discrete tables.

        Args:
          x: state at t, ``[batch, ...]``.
          score: the score at ``(x, t)``, shaped like ``x``.
          t: time, ``[batch]`` or ``()``.
          dt: the positive step.

        Returns:
          ``(mean, std)``: the mean shaped like ``x`` and the noise scale ``[batch]``.
        """
        t = batch_times(x, t)
        t_next = t - dt
        one_minus_r2 = -jnp.expm1(2.0 * (self.log_snr(t) - self.log_snr(t_next)))
        ratio = self.mean_coeff(t_next) / self.mean_coeff(t)
        scale = one_minus_r2 * self.marginal_std(t) ** 2
        mean = expand_to(ratio, x) * (x + expand_to(scale, x) * score)
        return mean, self.marginal_std(t_next) * jnp.sqrt(one_minus_r2)

    def langevin_alpha(self, t: ArrayLike, dt: float | ArrayLike) -> Array:
        r"""The original's :math:`\alpha_i` of the Langevin step size (paper algorithm 5): 1.

        The linear-beta VP family overrides it with :math:`1 - \beta(t)\Delta t`.
        """
        del dt
        return jnp.ones_like(jnp.asarray(t, dtype=jnp.result_type(t, float)))

    # ------------------------------------------------------------------------- network convention

    network_output: ClassVar[Literal["noise", "score"]] = "noise"
    r"""What the original's networks output for this SDE: ``'noise'`` (VP-like: the network
    predicts the noise :math:`-s(t)\nabla\log p_t`, so the score is ``-output / s(t)``) or
    ``'score'`` (VE-like: the network divides by sigma itself and outputs the score)."""

    def network_labels(self, t: ArrayLike) -> Array:
        """The continuous time conditioning the networks take: ``999 t`` (VP-like, DDPM's scale).

        VE-like SDEs override it with their noise level sigma(t).
        """
        return t * 999


def check_log_snr_inverse(sde: SDE, purpose: str) -> None:
    """Raises ValueError, before any tracing, unless ``sde`` defines :meth:`SDE.t_of_log_snr`.

    Args:
      sde: the SDE.
      purpose: what needs the inverse, for the message (e.g. ``"log_snr_grid"``).
    """
    if type(sde).t_of_log_snr is SDE.t_of_log_snr:
        raise ValueError(
            f"{purpose} needs the inverse of the log-SNR (t_of_log_snr), which "
            f"{type(sde).__name__} does not define; every SDE of sde_jax does "
            "(VPSDE, SubVPSDE, VESDE, CosineVPSDE, EDMSDE)."
        )


class DiscreteDDPM(abc.ABC):
    """Marker: the SDE has the original's discrete DDPM counterpart (Ho et al. 2020).

    It gives the beta table and step (``discrete_betas``, ``beta_step``) that the DDPM loss,
    the DDPM time labels and the discrete network outputs use.
    """

    @abc.abstractmethod
    def discrete_betas(self, num_steps: int) -> Array:
        """The DDPM beta table of ``num_steps`` entries, index 0 at t = 0."""

    @abc.abstractmethod
    def beta_step(self, t: ArrayLike, dt: float | ArrayLike) -> Array:
        """The DDPM noise level of the step of size ``dt`` ending at ``t``."""


class DiscreteSMLD(abc.ABC):
    """Marker: the SDE has the original's discrete SMLD / NCSN counterpart (Song and Ermon 2019).

    It gives the noise table and the previous level (``discrete_sigmas``, ``adjacent_sigma``)
    that the SMLD loss and the discrete VE time labels use.
    """

    @abc.abstractmethod
    def discrete_sigmas(self, num_steps: int) -> Array:
        """The SMLD noise levels of ``num_steps`` entries, ascending, index = time."""

    @abc.abstractmethod
    def adjacent_sigma(self, t: ArrayLike, dt: float | ArrayLike) -> Array:
        """The noise level of the previous entry of the table."""


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
        beta_min = validation.real("beta_min", self.beta_min)
        beta_max = validation.real("beta_max", self.beta_max)
        validation.interval("beta_min", beta_min, 0.0, math.inf)
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

    def time_of_integrated_beta(self, integrated: ArrayLike) -> Array:
        r"""Solves :math:`\beta_{min} t + \tfrac12 \Delta\beta\, t^2 = B` for :math:`t \ge 0`.

        The root :math:`2B / (\beta_{min} + \sqrt{\beta_{min}^2 + 2\Delta\beta B})` avoids the
        cancellation of the textbook formula when :math:`\Delta\beta B \ll \beta_{min}^2`.
        """
        b0, delta = self.beta_min, self.beta_max - self.beta_min
        return 2.0 * integrated / (b0 + jnp.sqrt(b0**2 + 2.0 * delta * integrated))

    def langevin_alpha(self, t: ArrayLike, dt: float | ArrayLike) -> Array:
        r"""The original's :math:`\alpha_i = 1 - \beta_i` with :math:`\beta_i = \beta(t)\Delta t`.

        For VP as in the original; for sub-VP new here (the original crashed on it).
        """
        return 1.0 - self.beta(t) * dt


@_register
@dataclasses.dataclass(frozen=True)
class VPSDE(_LinearBetaSDE, DiscreteDDPM):
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

    def log_snr(self, t: ArrayLike) -> Array:
        r""":math:`\lambda = -\tfrac12 \log(e^B - 1) = -\tfrac12(B + \log(1 - e^{-B}))`."""
        integrated = self.integrated_beta(t)
        return -0.5 * (integrated + jnp.log(-jnp.expm1(-integrated)))

    def t_of_log_snr(self, lam: ArrayLike) -> Array:
        r""":math:`B = \log(1 + e^{-2\lambda})` (a softplus), then t from B."""
        return self.time_of_integrated_beta(jax.nn.softplus(-2.0 * jnp.asarray(lam)))

    def sigma(self, t: ArrayLike) -> Array:
        r""":math:`\sigma = \sqrt{e^B - 1}`."""
        return jnp.sqrt(jnp.expm1(self.integrated_beta(t)))

    def ancestral_step(self, x, score, t, dt):
        r"""The original's DDPM ancestral step (paper eq. 47 of appendix F).

        :math:`\mu = (x + \beta_i s_\theta)/\sqrt{1 - \beta_i}`, std :math:`\sqrt{\beta_i}`,
        with :math:`\beta_i` = :meth:`beta_step` ``(t, dt)``.
        """
        t = batch_times(x, t)
        beta = self.beta_step(t, dt)
        mean = (x + expand_to(beta, x) * score) / expand_to(jnp.sqrt(1.0 - beta), x)
        return mean, jnp.sqrt(beta)

    def beta_step(self, t: ArrayLike, dt: float | ArrayLike) -> Array:
        r"""The DDPM noise level of the step ending at t: :math:`\beta_i = \beta(t)\,\Delta t`.

        With ``t = i / (N - 1)`` and ``dt = 1 / N`` this is entry ``i`` of
        :meth:`discrete_betas` ``(N)``, the original's table.
        """
        return self.beta(t) * dt

    def discrete_betas(self, num_steps: int) -> Array:
        """The DDPM schedule ``linspace(beta_min / N, beta_max / N, N)``, index 0 at t = 0."""
        n = validation.integer("num_steps", num_steps, minimum=2)
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

    def log_snr(self, t: ArrayLike) -> Array:
        r""":math:`\lambda = -\log(2\sinh(B/2)) = -(B/2 + \log(1 - e^{-B}))`."""
        integrated = self.integrated_beta(t)
        return -(0.5 * integrated + jnp.log(-jnp.expm1(-integrated)))

    def t_of_log_snr(self, lam: ArrayLike) -> Array:
        r""":math:`B = 2\,\mathrm{asinh}(e^{-\lambda}/2)`, then t from B."""
        integrated = 2.0 * jnp.arcsinh(0.5 * jnp.exp(-jnp.asarray(lam)))
        return self.time_of_integrated_beta(integrated)

    def sigma(self, t: ArrayLike) -> Array:
        r""":math:`\sigma = 2\sinh(B/2) = e^{B/2}(1 - e^{-B})`."""
        integrated = self.integrated_beta(t)
        return jnp.exp(0.5 * integrated) * -jnp.expm1(-integrated)


@_register
@dataclasses.dataclass(frozen=True)
class VESDE(SDE, DiscreteSMLD):
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
    network_output = "score"

    def __post_init__(self):
        sigma_min = validation.real("sigma_min", self.sigma_min)
        sigma_max = validation.real("sigma_max", self.sigma_max)
        validation.positive("sigma_min", sigma_min)
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

    @property
    def default_eps(self) -> float:
        """The paper's smallest sampling time for VE: 1e-5."""
        return 1e-5

    def sigma(self, t: ArrayLike) -> Array:
        r""":math:`\sigma(t) = \sigma_{min} (\sigma_{max}/\sigma_{min})^t` (m = 1, so s/m = s)."""
        return self.sigma_min * jnp.exp(t * self.log_sigma_ratio)

    def t_of_sigma(self, sigma: ArrayLike) -> Array:
        r""":math:`t = \log(\sigma/\sigma_{min}) / \log(\sigma_{max}/\sigma_{min})`."""
        return jnp.log(sigma / self.sigma_min) / self.log_sigma_ratio

    def log_snr(self, t: ArrayLike) -> Array:
        r""":math:`\lambda = -\log\sigma(t) = -\log\sigma_{min} - t \log r`.

        With :math:`r = \sigma_{max}/\sigma_{min}`; m is 1 and s is sigma(t).
        """
        return -math.log(self.sigma_min) - jnp.asarray(t) * self.log_sigma_ratio

    def t_of_log_snr(self, lam: ArrayLike) -> Array:
        r""":math:`t = (-\lambda - \log\sigma_{min}) / \log(\sigma_{max}/\sigma_{min})`."""
        return (-jnp.asarray(lam) - math.log(self.sigma_min)) / self.log_sigma_ratio

    def network_labels(self, t: ArrayLike) -> Array:
        """sigma(t), by the original's formula ``sigma_min * (sigma_max / sigma_min) ** t``.

        Written as the original did (not as :meth:`sigma`) so that labels agree bit for bit.
        """
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

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

        The original kept a second, descending table for its models (``get_sigmas``, by which
        its ``scale_by_sigma`` networks divided their output); sde_jax has only this one,
        indexed like time: the networks hold no sigmas, and the score wrapper's
        ``scale_by_sigma`` reads step label ``i`` as entry ``N - 1 - i`` of this table
        (``sde_jax.models.score.label_sigmas``).
        """
        n = validation.integer("num_steps", num_steps, minimum=2)
        return jnp.exp(jnp.linspace(math.log(self.sigma_min), math.log(self.sigma_max), n))

    def discretize(self, x, t, dt):
        r"""The SMLD step (paper appendix B, eq. 7).

        :math:`x_i = x_{i-1} + \sqrt{\sigma_i^2 - \sigma_{i-1}^2}\, z` with
        :math:`\sigma_i = \sigma(t)` and :math:`\sigma_{i-1}` = :meth:`adjacent_sigma` ``(t, dt)``.
        """
        t = batch_times(x, t)
        sigma, adjacent = self.sigma(t), self.adjacent_sigma(t, dt)
        return jnp.zeros_like(x), jnp.sqrt(sigma**2 - adjacent**2)

    def ancestral_step(self, x, score, t, dt):
        r"""The original's SMLD ancestral step (paper eq. 48 of appendix F).

        :math:`\mu = x + (\sigma_i^2 - \sigma_{i-1}^2) s_\theta`, std
        :math:`\sqrt{\sigma_{i-1}^2 (\sigma_i^2 - \sigma_{i-1}^2) / \sigma_i^2}`, with
        :math:`\sigma_{i-1}` = :meth:`adjacent_sigma` ``(t, dt)``: the generic posterior step
        with the original's table (0 below the first entry).
        """
        t = batch_times(x, t)
        sigma, previous = self.sigma(t), self.adjacent_sigma(t, dt)
        mean = x + expand_to(sigma**2 - previous**2, x) * score
        return mean, jnp.sqrt(previous**2 * (sigma**2 - previous**2) / sigma**2)


@_register
@dataclasses.dataclass(frozen=True)
class CosineVPSDE(SDE):
    r"""Variance-preserving SDE with the cosine schedule of Nichol and Dhariwal (2021, eq. 17).

    .. math:: \bar\alpha(t) = \frac{\cos^2\phi(t)}{\cos^2\phi(0)}, \quad
              \phi(t) = \frac{t + s}{1 + s}\,\frac{\pi}{2},

    with :math:`m = \sqrt{\bar\alpha}`, :math:`s(t) = \sqrt{1 - \bar\alpha}` and
    :math:`\beta(t) = -\tfrac{d}{dt}\log\bar\alpha = \tfrac{\pi}{1 + s}\tan\phi(t)`, so
    :math:`f = -\beta/2`, :math:`g = \sqrt\beta` as for VP. :math:`1 - \bar\alpha` is written
    :math:`\sin(\phi - \phi_0)\sin(\phi + \phi_0)/\cos^2\phi_0` so that small t keeps its
    precision.

    At t = 1, :math:`\bar\alpha = 0` and :math:`\beta = \infty`. As the continuous cosine
    schedule of DPM-Solver (Lu et al. 2022), the horizon stops short of it: T = ``t_max`` =
    0.9946, where :math:`m(T) \approx 0.0084`, :math:`\beta(T) \approx 370` and the prior
    N(0, I) differs from :math:`p_T` by about :math:`m(T)^2`. The original's discrete
    counterpart (clipping :math:`\beta_i` at 0.999) is not modelled; the Langevin corrector
    uses :math:`\alpha = 1`.

    Attributes:
      offset: s, default 0.008.
      t_max: the horizon T, in (0, 1), default 0.9946.
    """

    offset: float = 0.008
    t_max: float = 0.9946

    def __post_init__(self):
        offset = validation.real("offset", self.offset)
        t_max = validation.real("t_max", self.t_max)
        validation.positive("offset", offset)
        if not 0 < t_max < 1:
            raise ValueError(f"t_max must lie in (0, 1) (alpha_bar(1) = 0), got t_max={t_max}.")
        object.__setattr__(self, "offset", offset)
        object.__setattr__(self, "t_max", t_max)

    @property
    def T(self) -> float:
        """The horizon ``t_max``, below the singular t = 1."""
        return self.t_max

    @property
    def prior_std(self) -> float:
        """The prior is N(0, I)."""
        return 1.0

    @property
    def _rate(self) -> float:
        r""":math:`d\phi/dt = \pi / (2(1 + s))`."""
        return 0.5 * math.pi / (1.0 + self.offset)

    @property
    def _phi0(self) -> float:
        return self.offset * self._rate

    def _phi(self, t: ArrayLike) -> Array:
        return self._phi0 + self._rate * jnp.asarray(t, dtype=jnp.result_type(t, float))

    def _std_times_cos_phi0_squared(self, t: ArrayLike) -> Array:
        r""":math:`s(t)^2 \cos^2\phi_0 = \sin(\phi - \phi_0) \sin(\phi + \phi_0)`."""
        t = jnp.asarray(t, dtype=jnp.result_type(t, float))
        return jnp.sin(self._rate * t) * jnp.sin(self._phi(t) + self._phi0)

    def beta(self, t: ArrayLike) -> Array:
        r""":math:`\beta(t) = \pi \tan\phi(t) / (1 + s)`."""
        return 2.0 * self._rate * jnp.tan(self._phi(t))

    def drift_coeff(self, t: ArrayLike) -> Array:
        r""":math:`f(t) = -\beta(t)/2`."""
        return -0.5 * self.beta(t)

    def diffusion_coeff(self, t: ArrayLike) -> Array:
        r""":math:`g(t) = \sqrt{\beta(t)}`."""
        return jnp.sqrt(self.beta(t))

    def mean_coeff(self, t: ArrayLike) -> Array:
        r""":math:`m(t) = \cos\phi(t) / \cos\phi_0`."""
        return jnp.cos(self._phi(t)) / math.cos(self._phi0)

    def marginal_std(self, t: ArrayLike) -> Array:
        r""":math:`s(t) = \sqrt{\sin(\phi - \phi_0)\sin(\phi + \phi_0)} / \cos\phi_0`."""
        return jnp.sqrt(self._std_times_cos_phi0_squared(t)) / math.cos(self._phi0)

    def log_snr(self, t: ArrayLike) -> Array:
        r""":math:`\lambda = \log\cos\phi - \tfrac12 \log(\sin(\phi-\phi_0) \sin(\phi+\phi_0))`."""
        return jnp.log(jnp.cos(self._phi(t))) - 0.5 * jnp.log(self._std_times_cos_phi0_squared(t))

    def sigma(self, t: ArrayLike) -> Array:
        r""":math:`\sigma = \sqrt{\sin(\phi - \phi_0)\sin(\phi + \phi_0)} / \cos\phi`."""
        return jnp.sqrt(self._std_times_cos_phi0_squared(t)) / jnp.cos(self._phi(t))

    def _t_of_sigma_squared(self, sigma2: Array) -> Array:
        r"""From :math:`\tan^2\phi = (\sigma^2 + \sin^2\phi_0)/\cos^2\phi_0`, without cancellation.

        With :math:`a = \sqrt{\sigma^2 + \sin^2\phi_0}`, :math:`\tan(\phi - \phi_0) =
        \sigma^2 \cos\phi_0 / ((a + \sin\phi_0)(\cos^2\phi_0 + a \sin\phi_0))`, and
        :math:`t = (\phi - \phi_0) / (d\phi/dt)`.
        """
        c0, s0 = math.cos(self._phi0), math.sin(self._phi0)
        a = jnp.sqrt(sigma2 + s0**2)
        return jnp.arctan2(sigma2 * c0, (a + s0) * (c0**2 + a * s0)) / self._rate

    def t_of_log_snr(self, lam: ArrayLike) -> Array:
        r"""The inverse of :meth:`log_snr`, through :math:`\sigma^2 = e^{-2\lambda}`."""
        return self._t_of_sigma_squared(jnp.exp(-2.0 * jnp.asarray(lam)))

    def t_of_sigma(self, sigma: ArrayLike) -> Array:
        """The inverse of :meth:`sigma`."""
        return self._t_of_sigma_squared(jnp.square(sigma))


@_register
@dataclasses.dataclass(frozen=True)
class EDMSDE(SDE):
    r"""The SDE of EDM (Karras et al. 2022, table 1): :math:`\sigma(t) = t`, :math:`m = 1`.

    .. math:: dx = \sqrt{2t}\,dw, \quad x_t = x_0 + t\,z,

    so :math:`s(t) = \sigma(t) = t`, :math:`f = 0`, :math:`g = \sqrt{2t}`, and time IS the noise
    level. The horizon is :math:`T = \sigma_{max}` (not 1), the prior :math:`N(0,
    \sigma_{max}^2 I)`, and the smallest sampling time :math:`\sigma_{min}`. Unlike VESDE, the
    data are clean at t = 0. Networks are conditioned on sigma and output the score, as for VE
    (EDM's own preconditioning is a wrapper, not part of the SDE).

    Attributes:
      sigma_min: the smallest sampling noise level (``default_eps``), default 0.002.
      sigma_max: the horizon T and the prior's standard deviation, default 80.
    """

    sigma_min: float = 0.002
    sigma_max: float = 80.0
    network_output = "score"

    def __post_init__(self):
        sigma_min = validation.real("sigma_min", self.sigma_min)
        sigma_max = validation.real("sigma_max", self.sigma_max)
        if not 0 < sigma_min < sigma_max:
            raise ValueError(
                f"sigma_min and sigma_max must satisfy 0 < sigma_min < sigma_max, got "
                f"sigma_min={sigma_min}, sigma_max={sigma_max}."
            )
        object.__setattr__(self, "sigma_min", sigma_min)
        object.__setattr__(self, "sigma_max", sigma_max)

    @property
    def T(self) -> float:
        """The horizon: sigma_max."""
        return self.sigma_max

    @property
    def prior_std(self) -> float:
        """The prior is N(0, sigma_max^2 I)."""
        return self.sigma_max

    @property
    def default_eps(self) -> float:
        """EDM's smallest noise level, sigma_min."""
        return self.sigma_min

    def drift_coeff(self, t: ArrayLike) -> Array:
        """:math:`f(t) = 0`."""
        return jnp.zeros_like(jnp.asarray(t, dtype=jnp.result_type(t, float)))

    def diffusion_coeff(self, t: ArrayLike) -> Array:
        r""":math:`g(t) = \sqrt{2t}`."""
        return jnp.sqrt(2.0 * jnp.asarray(t, dtype=jnp.result_type(t, float)))

    def mean_coeff(self, t: ArrayLike) -> Array:
        """:math:`m(t) = 1`."""
        return jnp.ones_like(jnp.asarray(t, dtype=jnp.result_type(t, float)))

    def marginal_std(self, t: ArrayLike) -> Array:
        """:math:`s(t) = t`."""
        return jnp.asarray(t, dtype=jnp.result_type(t, float))

    def sigma(self, t: ArrayLike) -> Array:
        r""":math:`\sigma(t) = t`."""
        return jnp.asarray(t, dtype=jnp.result_type(t, float))

    def t_of_sigma(self, sigma: ArrayLike) -> Array:
        r""":math:`t = \sigma`."""
        return jnp.asarray(sigma, dtype=jnp.result_type(sigma, float))

    def log_snr(self, t: ArrayLike) -> Array:
        r""":math:`\lambda = -\log t`."""
        return -jnp.log(t)

    def t_of_log_snr(self, lam: ArrayLike) -> Array:
        r""":math:`t = e^{-\lambda}`."""
        return jnp.exp(-jnp.asarray(lam))

    def network_labels(self, t: ArrayLike) -> Array:
        r"""The noise level :math:`\sigma(t) = t`."""
        return self.sigma(t)
