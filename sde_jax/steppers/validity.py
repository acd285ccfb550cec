r"""Checks, before compiling, that a stepper's discrete noise levels are valid on a grid.

The original's discrete VP steps use the DDPM table :math:`\beta_i = \beta(t_i)\,\Delta t`
(``linspace(beta_min / N, beta_max / N, N)`` for N steps), through :math:`\sqrt{1 - \beta_i}`
(``ReverseDiffusion``, ``AncestralSampling``) or :math:`\alpha_i = 1 - \beta_i`
(``Langevin``, ``AnnealedLangevin`` on VP and sub-VP). With :math:`\beta_i \ge 1`, i.e. fewer
than about :math:`\beta_{max}` steps, those are undefined and every sample is NaN.

We chose to refuse such grids rather than redefine :math:`\beta_i`. A definition valid for
any N, :math:`1 - \bar\alpha(t_i)/\bar\alpha(t_{i-1})`, differs from the table by
:math:`O(\Delta t^2)`, about 1% of :math:`\beta_i` near T at N = 1000, so it would no longer
be the original's sampler at the N the paper uses; the table also backs the DDPM loss. With
so few steps the discrete samplers are poor anyway; the continuous and ODE steppers
(``EulerMaruyama``, DDIM, DPM-Solver, UniPC, the adaptive ODE) have no such limit.
"""

import dataclasses
import math

import jax
import numpy as np

from sde_jax.sdes import VPSDE, _LinearBetaSDE
from sde_jax.steppers.correctors import _LangevinBase
from sde_jax.steppers.predictors import AncestralSampling, ReverseDiffusion

__all__ = ["beta_table_steppers", "check_discrete_steps", "min_discrete_steps"]


def beta_table_steppers(stepper: object) -> list[object]:
    """The parts of ``stepper`` (combinators searched through) that use the DDPM beta table."""
    if isinstance(stepper, ReverseDiffusion | AncestralSampling):
        return [stepper] if isinstance(stepper.sde, VPSDE) else []
    if isinstance(stepper, _LangevinBase):
        return [stepper] if isinstance(stepper.sde, _LinearBetaSDE) else []
    if not dataclasses.is_dataclass(stepper) or isinstance(stepper, type):
        return []
    found = []
    for field in dataclasses.fields(stepper):
        value = getattr(stepper, field.name)
        for part in value if isinstance(value, tuple | list) else (value,):
            if hasattr(part, "step") and hasattr(part, "init"):
                found.extend(beta_table_steppers(part))
    return found


def min_discrete_steps(beta_max: float, horizon: float) -> int:
    r"""The fewest uniform steps over ``horizon`` (= T - eps) with every :math:`\beta_i < 1`.

    The largest entry is :math:`\beta_{max} \cdot \mathrm{horizon} / N`, so
    :math:`N = \lfloor \beta_{max} \cdot \mathrm{horizon} \rfloor + 1` (20 for the paper's
    :math:`\beta_{max} = 20`, eps = 1e-3).
    """
    return math.floor(beta_max * horizon) + 1


def check_discrete_steps(stepper: object, grid: object) -> None:
    """Raises ValueError if a part of ``stepper`` would take a step with ``beta_i >= 1``.

    Args:
      stepper: any stepper, composites included.
      grid: the decreasing times ``[num_steps + 1]``; a traced grid is not checked.

    Raises:
      ValueError: naming ``num_steps`` (``sampling.num_steps`` in a config), the largest
        ``beta_i``, the smallest valid step count and the alternatives.
    """
    parts = beta_table_steppers(stepper)
    if not parts:
        return
    try:
        times = np.asarray(grid, np.float64)
    except jax.errors.TracerArrayConversionError:
        return
    t, dt = times[:-1], times[:-1] - times[1:]
    for part in parts:
        betas = np.asarray(part.sde.beta(t)) * dt
        worst = int(np.argmax(betas))
        if betas[worst] < 1.0:
            continue
        sde = part.sde
        needed = min_discrete_steps(sde.beta_max, float(times[0] - times[-1]))
        raise ValueError(
            f"num_steps={len(dt)} (sampling.num_steps) is too few for {type(part).__name__} "
            f"on {type(sde).__name__}(beta_max={sde.beta_max}): its step from t={t[worst]:.4g} "
            f"has the DDPM noise level beta_i = beta(t) dt = {betas[worst]:.4g} >= 1, where "
            "sqrt(1 - beta_i) is undefined and every sample would be NaN. Use num_steps >= "
            f"{needed} (uniform grid from {times[0]:.4g} to {times[-1]:.4g}), or a stepper "
            "without the beta table: predictor 'euler_maruyama' with corrector 'none', or "
            "sampling.method 'ode', 'ddim', 'heun' or another probability-flow method."
        )
