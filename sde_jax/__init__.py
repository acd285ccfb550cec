"""sde_jax: score-based generative modeling through stochastic differential equations in JAX.

Song, Sohl-Dickstein, Kingma, Kumar, Ermon and Poole, "Score-Based Generative Modeling through
Stochastic Differential Equations", ICLR 2021.

The public surface, in one place:

- ``sdes``: ``VPSDE``, ``SubVPSDE``, ``VESDE``, ``CosineVPSDE`` (Nichol and Dhariwal 2021) and
  ``EDMSDE`` (Karras et al. 2022), each with its noise geometry in closed form (``log_snr``,
  ``sigma`` and their inverses), and the reverse-time and probability-flow drifts of any of
  them given a ``score_fn(x, t)``.
- ``steppers``, ``grids``, ``sampling``: predictors, correctors, ODE steps and their
  combinators; time grids; the on-device sampling drivers (``sampling.sample(key, score_fn,
  stepper, grid, shape, sde=...)``, ``sampling.sample_adaptive``) and their final steps.
- ``predictions``: score, noise (eps), data (x0, the denoiser) and velocity (v) predictions
  converted into one another given the SDE, and the EDM preconditioning (Karras et al. 2022)
  that turns a raw network into a denoiser or a ``score_fn`` for any SDE.
- ``ode``: adaptive embedded Runge-Kutta (Dormand-Prince 5(4) by default; Tsitouras 5(4),
  Dormand-Prince 8(5,3)) and fixed-step solvers over pytrees, on device; ``adjoint``: the
  reverse-mode methods through its adaptive solve (``RecursiveCheckpoint``, ``Backsolve``).
- ``controllable``: inpainting, colorization, class-conditional sampling (classifier and
  classifier-free guidance) and probability-flow latents, built from a sampler.
- ``likelihood``: exact log-likelihood through the probability-flow ODE; bits/dim.
- ``losses``: denoising score matching (continuous, SMLD, DDPM).
- ``models``: NCSN++ / DDPM++ (optionally class-conditional), DDPM, NCSNv2 and the
  noise-conditional Wide-ResNet classifier in Flax; ``compat.score_sde`` loads the original
  code's checkpoints and configs.
- ``classifier``: the noise-conditional classifier's loss on noisy data (its guidance
  interface is ``controllable.classifier_log_prob_fn``).
- ``validation``: the input checks every layer uses; ``sharding``: the device mesh and the
  shardings of batches and states; ``images``: uint8 conversion and image grids.

Layers
------
Each folder is one layer. A module imports its own layer and the layers below, never above
(``tests/test_layers.py`` parses every import to hold this):

.. code-block:: text

    apps        sde_jax.apps: the sde-jax commands and the files they write
      |
    evaluation  sde_jax.evaluation: bits/dim, eval loss, sample chunks, FID / IS / KID,
      |         Inception, reference statistics, the fingerprinted result store
    training    sde_jax.training: train state, step, checkpoints, the loop
      |
    experiment  sde_jax.experiment: build (the one module that reads config sections and
      |         turns them into objects), the Experiment bundle, tasks, RNG streams;
      |         sde_jax.compat (the original code's checkpoints and configs)
    data        sde_jax.data: TensorFlow input pipelines
      |
    library     everything else: sdes, grids, steppers, sampling, predictions, ode, adjoint,
                likelihood, losses, classifier, models, controllable, validation, sharding

The library takes objects, never a config: it imports no ml_collections, TensorFlow, orbax or
clu. This module re-exports the library, plus ``get_sampler`` from
``sde_jax.experiment.build`` (a config's sampling section to a sampler). It imports them on
first use, so ``import sde_jax`` (and ``sde-jax --help``) does not start JAX.
"""

import importlib as _importlib
from typing import TYPE_CHECKING

from sde_jax import runtime as _runtime

_runtime.apply_xla_cpu_workarounds()

# Imported on first use (PEP 562): JAX starts when a name below is first looked up.
_SUBMODULES = (
    "adjoint",
    "controllable",
    "grids",
    "likelihood",
    "losses",
    "ode",
    "predictions",
    "sampling",
    "steppers",
)
# Reachable as attributes too (``sde_jax.models``), though not re-exported by ``import *``.
_OTHER_SUBMODULES = (
    "apps",
    "array_types",
    "classifier",
    "compat",
    "data",
    "evaluation",
    "experiment",
    "images",
    "models",
    "sdes",
    "sharding",
    "tableaux",
    "training",
    "validation",
)
_NAMES = {
    "get_sampler": "sde_jax.experiment.build",
    "bits_per_dim": "sde_jax.likelihood",
    "log_likelihood": "sde_jax.likelihood",
    "get_loss_fn": "sde_jax.losses",
    "SampleOutput": "sde_jax.sampling",
    **{
        name: "sde_jax.sdes"
        for name in (
            "EDMSDE",
            "SDE",
            "VESDE",
            "VPSDE",
            "CosineVPSDE",
            "ScoreFn",
            "SubVPSDE",
            "probability_flow_drift",
            "reverse_drift",
        )
    },
}

__version__ = "0.1.0"

__all__ = [  # the same names as _SUBMODULES and _NAMES (tests/test_layers.py checks)
    "EDMSDE",
    "SDE",
    "VESDE",
    "VPSDE",
    "CosineVPSDE",
    "SampleOutput",
    "ScoreFn",
    "SubVPSDE",
    "__version__",
    "adjoint",
    "bits_per_dim",
    "controllable",
    "get_loss_fn",
    "get_sampler",
    "grids",
    "likelihood",
    "log_likelihood",
    "losses",
    "ode",
    "predictions",
    "probability_flow_drift",
    "reverse_drift",
    "sampling",
    "steppers",
]


def __getattr__(name: str):
    """Imports a public submodule or name on first use (PEP 562)."""
    if name in _SUBMODULES or name in _OTHER_SUBMODULES:
        return _importlib.import_module(f"sde_jax.{name}")
    if name in _NAMES:
        value = getattr(_importlib.import_module(_NAMES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sde_jax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:
    from sde_jax import (
        adjoint,
        controllable,
        grids,
        likelihood,
        losses,
        ode,
        predictions,
        sampling,
        steppers,
    )
    from sde_jax.experiment.build import get_sampler
    from sde_jax.likelihood import bits_per_dim, log_likelihood
    from sde_jax.losses import get_loss_fn
    from sde_jax.sampling import SampleOutput
    from sde_jax.sdes import (
        EDMSDE,
        SDE,
        VESDE,
        VPSDE,
        CosineVPSDE,
        ScoreFn,
        SubVPSDE,
        probability_flow_drift,
        reverse_drift,
    )
