"""The experiment layer: a config turned into objects.

- :mod:`~sde_jax.experiment.build`: the single builder, the only module that reads config
  sections (SDE, model, optimizer, sampling, training checks, the task).
- :mod:`~sde_jax.experiment.tasks`: the task objects (score model, classifier), each with its
  objective and eval metrics.
- :mod:`~sde_jax.experiment.rng`: the named random streams folded into the seed.
- :mod:`~sde_jax.experiment.state`: the train state.
- :mod:`~sde_jax.experiment.bundle`: :class:`Experiment`, the objects of one config.

``Experiment`` is imported on first use (it imports the data pipelines, hence TensorFlow), so
``import sde_jax`` stays light.
"""

from typing import Any

__all__ = ["Experiment"]


def __getattr__(name: str) -> Any:
    if name == "Experiment":
        from sde_jax.experiment.bundle import Experiment

        return Experiment
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
