"""Steppers: predictors, correctors, ODE steps and their combinators (see ``base``).

=========================  ===========================================================  =====
family                     steppers                                                     order
=========================  ===========================================================  =====
the paper's PC samplers    ``ReverseDiffusion``, ``EulerMaruyama``, ``AncestralSampling``    1
                           with ``Langevin`` / ``AnnealedLangevin`` correctors
probability flow in t      ``ProbabilityFlow(sde, ode.EULER | ode.HEUN | ode.RK4)``      1/2/4
exponential integrators    ``DDIM(eta)``, ``DPMSolverPP2M``, ``DPMSolverPP3M``,          1-3
(data prediction, in       ``DPMSolverPP2S``, ``DPMSolverPP3S``, ``DPMSolverPP2MSDE``,
lambda = log(m/s))         ``DPMSolverPP3MSDE`` (:mod:`.dpm_solver`); ``UniPC``
                           (:mod:`.unipc`); ``DEIS``, ``IPNDM`` (:mod:`.deis`)
EDM (in sigma = s/m)       ``EDMHeun`` (Algorithm 1), ``EDMStochastic`` (Algorithm 2)       2
=========================  ===========================================================  =====
"""

from sde_jax.steppers.base import PredictorCorrector, State, Stepper
from sde_jax.steppers.correctors import AnnealedLangevin, Langevin, NoCorrector
from sde_jax.steppers.deis import DEIS, IPNDM
from sde_jax.steppers.dpm_solver import (
    DDIM,
    DPMSolverPP2M,
    DPMSolverPP2MSDE,
    DPMSolverPP2S,
    DPMSolverPP3M,
    DPMSolverPP3MSDE,
    DPMSolverPP3S,
)
from sde_jax.steppers.edm import EDMHeun, EDMStochastic
from sde_jax.steppers.flow import ProbabilityFlow, denoise
from sde_jax.steppers.predictors import (
    AncestralSampling,
    EulerMaruyama,
    NoPredictor,
    ReverseDiffusion,
)
from sde_jax.steppers.unipc import UniPC

__all__ = [
    "DDIM",
    "DEIS",
    "IPNDM",
    "AncestralSampling",
    "AnnealedLangevin",
    "DPMSolverPP2M",
    "DPMSolverPP2MSDE",
    "DPMSolverPP2S",
    "DPMSolverPP3M",
    "DPMSolverPP3MSDE",
    "DPMSolverPP3S",
    "EDMHeun",
    "EDMStochastic",
    "EulerMaruyama",
    "Langevin",
    "NoCorrector",
    "NoPredictor",
    "PredictorCorrector",
    "ProbabilityFlow",
    "ReverseDiffusion",
    "State",
    "Stepper",
    "UniPC",
    "denoise",
]
