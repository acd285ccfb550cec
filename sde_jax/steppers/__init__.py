"""Steppers: predictors, correctors, ODE steps and their combinators (see ``base``)."""

from sde_jax.steppers.base import PredictorCorrector, State, Stepper
from sde_jax.steppers.correctors import AnnealedLangevin, Langevin, NoCorrector
from sde_jax.steppers.dpm_solver import DPMSolverPP2M
from sde_jax.steppers.ode import ProbabilityFlow, denoise
from sde_jax.steppers.predictors import (
    AncestralSampling,
    EulerMaruyama,
    NoPredictor,
    ReverseDiffusion,
)

__all__ = [
    "AncestralSampling",
    "AnnealedLangevin",
    "DPMSolverPP2M",
    "EulerMaruyama",
    "Langevin",
    "NoCorrector",
    "NoPredictor",
    "PredictorCorrector",
    "ProbabilityFlow",
    "ReverseDiffusion",
    "State",
    "Stepper",
    "denoise",
]
