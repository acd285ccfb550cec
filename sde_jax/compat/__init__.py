"""Compatibility layers for code and checkpoints of other implementations."""

from sde_jax.compat import score_sde
from sde_jax.compat.score_sde import load_checkpoint, model_from_config, score_kwargs

__all__ = ["load_checkpoint", "model_from_config", "score_kwargs", "score_sde"]
