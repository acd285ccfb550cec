"""The train state, defined in :mod:`sde_jax.experiment.state` (re-exported here)."""

from sde_jax.experiment.state import TrainState, create_state, update_ema

__all__ = ["TrainState", "create_state", "update_ema"]
