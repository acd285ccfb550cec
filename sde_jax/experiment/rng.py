"""The named random streams of an experiment, each folded into the run's seed.

Every random draw of a run (parameter initialization, training, the eval loss during training,
snapshot grids, evaluation, the CLI's sampling commands) takes its key from one stream of
:data:`STREAMS`: ``fold_in(key(seed), index of the name)``. Streams of one seed are
independent, and so are the streams of two seeds: seed 43's init key is not seed 42's eval-loss
key, as it was when each site drew ``key(seed + k)``. Append new names at the end: an index
that moves changes the draws of every stream after it.
"""

from collections.abc import Sequence

import jax

from sde_jax import validation
from sde_jax.array_types import Key

STREAMS = (
    "init",  # the network's initial parameters
    "train",  # the train state's key, split at every step
    "train_eval_loss",  # the eval loss logged during training (folded with the step)
    "snapshot",  # the sample grids written during training (folded with the step)
    "eval_samples",  # `evaluate` and `sample`: samples for FID/IS/KID and the .npz files
    "eval_bpd",  # `evaluate`: bits/dim of the eval split
    "eval_loss",  # `evaluate`: the eval loss
    "eval_bpd_train",  # `evaluate`: bits/dim of the train split
    "class_samples",  # `sample --class`
    "inpainting",  # `inpaint`
    "colorization",  # `colorize`
)
"""The stream names, in the order of their index."""

STREAMS_VERSION = "streams-v1"
"""The version of :data:`STREAMS` and :func:`stream_key`; cached results record it, so that
results drawn from other streams are recomputed rather than reused."""

STEP_STREAMS = ("loss", "dropout", "labels")
"""The keys one train step splits its key into: the loss's times and noise, the network's
dropout, and label dropout (:func:`split_named`)."""


def stream_key(seed: int, name: str) -> Key:
    """The key of stream ``name`` of the run with ``seed``.

    Args:
      seed: the run's ``config.seed``.
      name: one of :data:`STREAMS`.

    Raises:
      ValueError: for a seed that is not an integer, or a name not in :data:`STREAMS`,
        listing the names.
    """
    seed = validation.integer("seed", seed)
    validation.choice("stream", name, STREAMS)
    return jax.random.fold_in(jax.random.key(seed), STREAMS.index(name))


def split_named(key: Key, names: Sequence[str]) -> dict[str, Key]:
    """``key`` split into one key per name: ``{name: jax.random.split(key, len(names))[i]}``.

    With JAX's partitionable Threefry (the default), the key of the i-th name does not depend
    on the names after it, so appending a name keeps the draws of the others.
    """
    return dict(zip(names, jax.random.split(key, len(names)), strict=True))
