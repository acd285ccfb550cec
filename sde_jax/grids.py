r"""Time grids for samplers, from T down to eps, as separate functions of any SDE.

A grid is a 1-D array ``[t_0 = T, t_1, ..., t_N = eps]`` of N + 1 decreasing times; a fixed-step
sampler makes N steps, step i going from ``t_i`` to ``t_{i+1}``. Each grid is uniform in some
function of time, mapped back through the SDE's closed-form inverse:

=============  =====================================================  ==========================
grid           uniform in                                             inverse
=============  =====================================================  ==========================
``uniform``    :math:`t`                                              (none)
``quadratic``  :math:`\sqrt t` (steps :math:`\propto t` near 0)       squaring
``log_snr``    :math:`\lambda(t) = \log(m/s)`                         ``sde.t_of_log_snr``
``karras``     :math:`\sigma(t)^{1/\rho}`, :math:`\sigma = s/m`       ``sde.t_of_sigma``
=============  =====================================================  ==========================

The first and last nodes are set to T and eps exactly.
"""

import math

import jax.numpy as jnp

from sde_jax import validation
from sde_jax.array_types import Array
from sde_jax.sdes import SDE, check_log_snr_inverse


def _check(num_steps: object, eps: object, T: float) -> None:
    validation.integer("num_steps", num_steps, minimum=1)
    validation.interval("eps", eps, 0, T, closed=(False, False))


def _with_ends(t: Array, sde: SDE, eps: float) -> Array:
    return t.at[0].set(sde.T).at[-1].set(eps)


def uniform_grid(sde: SDE, num_steps: int, eps: float) -> Array:
    """N steps uniform in t: ``linspace(T, eps, N + 1)`` (the paper's PC grid)."""
    _check(num_steps, eps, sde.T)
    return jnp.linspace(sde.T, eps, num_steps + 1)


def quadratic_grid(sde: SDE, num_steps: int, eps: float) -> Array:
    r"""N steps uniform in :math:`\sqrt t`, so steps shrink in proportion to t near 0.

    .. math:: t_i = \big(\sqrt T + \tfrac{i}{N}(\sqrt\epsilon - \sqrt T)\big)^2,

    DDIM's "quadratic" time selection (Song, Meng and Ermon 2021, appendix D.2).
    """
    _check(num_steps, eps, sde.T)
    hi, lo = sde.T**0.5, eps**0.5
    return _with_ends((hi + jnp.linspace(0.0, 1.0, num_steps + 1) * (lo - hi)) ** 2, sde, eps)


def karras_grid(sde: SDE, num_steps: int, eps: float, rho: float = 7.0) -> Array:
    r"""The EDM noise grid (Karras et al. 2022, eq. 5) in :math:`\sigma(t) = s(t)/m(t)`.

    .. math:: \sigma_i = \big(\sigma_T^{1/\rho} + \tfrac{i}{N}(\sigma_{eps}^{1/\rho} -
              \sigma_T^{1/\rho})\big)^\rho, \quad t_i = \sigma^{-1}(\sigma_i),

    for every SDE through its ``sigma`` and ``t_of_sigma`` (for VE, :math:`t_i =
    \log(\sigma_i/\sigma_{min}) / \log(\sigma_{max}/\sigma_{min})`). Steps cluster at low noise,
    where the probability-flow ODE curves most.

    Raises:
      ValueError: for ``rho <= 0``, or an SDE without ``t_of_log_snr``.
    """
    _check(num_steps, eps, sde.T)
    validation.interval("rho", rho, 0, math.inf, closed=(False, True))
    check_log_snr_inverse(sde, "karras_grid")
    s_hi, s_lo = float(sde.sigma(sde.T)) ** (1 / rho), float(sde.sigma(eps)) ** (1 / rho)
    sigmas = (s_hi + jnp.linspace(0.0, 1.0, num_steps + 1) * (s_lo - s_hi)) ** rho
    return _with_ends(sde.t_of_sigma(sigmas), sde, eps)


def log_snr_grid(sde: SDE, num_steps: int, eps: float) -> Array:
    r"""N steps uniform in the half log signal-to-noise ratio :math:`\lambda(t) = \log(m(t)/s(t))`.

    DPM-Solver's recommended grid for low-resolution data; the times come from the SDE's
    closed-form inverse ``t_of_log_snr``.

    Raises:
      ValueError: for an SDE without ``t_of_log_snr``.
    """
    _check(num_steps, eps, sde.T)
    check_log_snr_inverse(sde, "log_snr_grid")
    lams = jnp.linspace(sde.log_snr(sde.T), sde.log_snr(eps), num_steps + 1)
    return _with_ends(sde.t_of_log_snr(lams), sde, eps)


GRIDS = {
    "uniform": uniform_grid,
    "quadratic": quadratic_grid,
    "karras": karras_grid,
    "log_snr": log_snr_grid,
}
"""Grid builders by the name ``config.grid`` uses."""

__all__ = ["GRIDS", "karras_grid", "log_snr_grid", "quadratic_grid", "uniform_grid"]
