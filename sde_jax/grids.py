"""Time grids for samplers, from T down to eps, as separate functions of the SDE.

A grid is a 1-D array ``[t_0 = T, t_1, ..., t_N = eps]`` of N + 1 decreasing times; a fixed-step
sampler makes N steps, step i going from ``t_i`` to ``t_{i+1}``.
"""

import jax.numpy as jnp

from sde_jax.sdes import SDE, VESDE
from sde_jax.typing import Array


def _check(num_steps: object, eps: object, T: float) -> None:
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}.")
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not 0 < eps < T:
        raise ValueError(f"eps must be a number in (0, T={T}), got {eps!r}.")


def uniform_grid(sde: SDE, num_steps: int, eps: float) -> Array:
    """N steps uniform in t: ``linspace(T, eps, N + 1)`` (the paper's PC grid)."""
    _check(num_steps, eps, sde.T)
    return jnp.linspace(sde.T, eps, num_steps + 1)


def karras_grid(sde: VESDE, num_steps: int, eps: float, rho: float = 7.0) -> Array:
    r"""The EDM noise grid (Karras et al. 2022, eq. 5) for the VE SDE, mapped back to t.

    .. math:: \sigma_i = \big(\sigma_T^{1/\rho} + \tfrac{i}{N}(\sigma_{eps}^{1/\rho} -
              \sigma_T^{1/\rho})\big)^\rho, \quad t_i = \log(\sigma_i/\sigma_{min}) /
              \log(\sigma_{max}/\sigma_{min}).

    Steps cluster at low noise, where the probability-flow ODE curves most.

    Raises:
      ValueError: for an SDE other than VESDE, or ``rho <= 0``.
    """
    if not isinstance(sde, VESDE):
        raise ValueError(f"karras_grid needs a VESDE, got {type(sde).__name__}.")
    _check(num_steps, eps, sde.T)
    if not rho > 0:
        raise ValueError(f"rho must be > 0, got {rho!r}.")
    s_hi, s_lo = float(sde.sigma(sde.T)) ** (1 / rho), float(sde.sigma(eps)) ** (1 / rho)
    sigmas = (s_hi + jnp.linspace(0.0, 1.0, num_steps + 1) * (s_lo - s_hi)) ** rho
    t = jnp.log(sigmas / sde.sigma_min) / sde.log_sigma_ratio
    return t.at[0].set(sde.T).at[-1].set(eps)


def log_snr_grid(sde: SDE, num_steps: int, eps: float) -> Array:
    r"""N steps uniform in the half log signal-to-noise ratio :math:`\lambda(t) = \log(m(t)/s(t))`.

    DPM-Solver's recommended grid for low-resolution data. The times are found by bisection
    on the monotone :math:`\lambda(t)` (60 halvings: exact to float precision).
    """
    _check(num_steps, eps, sde.T)

    def lam(t):
        return jnp.log(sde.mean_coeff(t)) - jnp.log(sde.marginal_std(t))

    targets = jnp.linspace(lam(sde.T), lam(eps), num_steps + 1)
    lo, hi = jnp.full_like(targets, eps), jnp.full_like(targets, sde.T)
    for _ in range(60):  # lambda decreases in t
        mid = 0.5 * (lo + hi)
        above = lam(mid) > targets
        lo, hi = jnp.where(above, mid, lo), jnp.where(above, hi, mid)
    return (0.5 * (lo + hi)).at[0].set(sde.T).at[-1].set(eps)


GRIDS = {"uniform": uniform_grid, "karras": karras_grid, "log_snr": log_snr_grid}
"""Grid builders by the name ``config.grid`` uses."""

__all__ = ["GRIDS", "karras_grid", "log_snr_grid", "uniform_grid"]
