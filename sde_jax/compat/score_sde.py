"""Compatibility with the original score_sde code (github yang-song/score_sde).

- ``load_checkpoint`` reads its msgpack checkpoints (a flax ``State(step, optimizer, lr,
  model_state, ema_rate, params_ema, rng)`` with a ``flax.optim.Adam`` optimizer) into plain
  parameter trees. Our modules use the original's parameter names, so no key mapping is needed.
- ``model_from_config`` takes one of its configs (ConfigDict or nested dict, original key
  names) and returns our module; ``score_kwargs`` gives the score wrapper's options of that
  config. The module's output, through ``sde_jax.models.divide_by_sigma`` when the config sets
  ``model.scale_by_sigma``, equals the original network's for the same params, x (NHWC) and
  labels; ``get_score_fn(sde, model.apply, params, **score_kwargs(config))`` equals the
  original ``get_score_fn``.
"""

import os
import re
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from sde_jax import validation
from sde_jax.experiment.build import SCALE_BY_SIGMA, build_model, check_training_compatible

__all__ = ["load_checkpoint", "model_from_config", "score_kwargs"]

_REQUIRED_KEYS = ("step", "optimizer", "params_ema")


def _latest_checkpoint_file(directory: str) -> str:
    """The ``checkpoint_<n>`` file with the largest n in ``directory`` (flax's naming)."""
    numbered = []
    for entry in os.listdir(directory):
        match = re.fullmatch(r"checkpoint_(\d+)", entry)
        if match and os.path.isfile(os.path.join(directory, entry)):
            numbered.append((int(match.group(1)), entry))
    if not numbered:
        raise FileNotFoundError(f"no checkpoint_<n> file in directory {directory!r}.")
    return os.path.join(directory, max(numbered)[1])


def _float32_tree(tree: Any) -> Any:
    return jax.tree_util.tree_map(lambda a: np.asarray(a, dtype=np.float32), tree)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Reads an original score_sde checkpoint into parameter trees for our modules.

    Args:
      path: a msgpack checkpoint file, or a directory of ``checkpoint_<n>`` files (the one
        with the largest n is read).

    Returns:
      ``{'params': optimizer.target, 'params_ema': params_ema, 'step': int}``; the trees are
      nested dicts of float32 numpy arrays without the outer ``'params'`` key, to be used as
      ``model.apply({'params': tree}, ...)``. Sample and evaluate with ``params_ema``.

    Raises:
      FileNotFoundError: if ``path`` does not exist or a directory holds no checkpoint.
      ValueError: if the file is not a score_sde checkpoint (required keys missing).
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        path = _latest_checkpoint_file(path)
    with open(path, "rb") as f:
        state = serialization.msgpack_restore(f.read())
    missing = [k for k in _REQUIRED_KEYS if not isinstance(state, Mapping) or k not in state]
    if missing or not isinstance(state["optimizer"], Mapping) or "target" not in state["optimizer"]:
        found = sorted(state) if isinstance(state, Mapping) else type(state).__name__
        raise ValueError(
            f"{path!r} is not a score_sde checkpoint: expected keys {list(_REQUIRED_KEYS)} and "
            f"optimizer.target, found {found}."
        )
    # Scalars went through pmap/unreplicate in training: they may be 0-d arrays.
    return {
        "params": _float32_tree(state["optimizer"]["target"]),
        "params_ema": _float32_tree(state["params_ema"]),
        "step": int(np.asarray(state["step"])),
    }


def _section(config: Any, name: str) -> Any:
    if isinstance(config, Mapping):
        if name not in config:
            raise ValueError(f"config has no {name!r} section; found {sorted(config)}.")
        return config[name]
    if not hasattr(config, name):
        raise ValueError(f"config has no {name!r} section.")
    return getattr(config, name)


def model_from_config(config: Any, *, dtype: Any = jnp.float32, remat: bool = False) -> nn.Module:
    """Returns our module for an original score_sde config.

    Args:
      config: the original config (ml_collections ConfigDict or nested dict) with its ``model``
        and ``data`` sections, original key names; ``training.continuous`` is checked when
        present.
      dtype: compute dtype of activations (parameters stay float32).
      remat: rematerialize residual blocks in the backward pass.

    Returns:
      A module with ``model.apply({'params': params}, x, labels, train=False)`` equal to the
      original network output for the same params, NHWC ``x`` and time-conditioning labels,
      before the original's division by sigma (``model.scale_by_sigma``: see
      :func:`score_kwargs`).

    Raises:
      ValueError: if a section is missing, the model name is unknown, an option is invalid,
        or an NCSN++ / DDPM++ Fourier embedding is combined with discrete training (as the
        original forbids; DDPM, NCSN and NCSNv2 do not read ``embedding_type``).
    """
    model = _section(config, "model")
    data = _section(config, "data")
    centered = data["centered"] if isinstance(data, Mapping) else data.centered
    training = config.get("training") if hasattr(config, "get") else None
    continuous = None if training is None else training.get("continuous", None)
    check_training_compatible(model, continuous=continuous)
    return build_model(model, centered=centered, dtype=dtype, remat=remat)


def score_kwargs(config: Any) -> dict[str, Any]:
    """The ``get_score_fn`` options of an original score_sde config.

    ``continuous`` (``training.continuous``, True when absent, the original's default),
    ``num_scales`` (``model.num_scales``, 1000 when absent) and ``scale_by_sigma``
    (``model.scale_by_sigma``; when absent, the default of the ``model.name`` architecture).

    Raises:
      ValueError: if the ``model`` section is missing or names an unknown model.
    """
    model = _section(config, "model")
    training = config.get("training") if hasattr(config, "get") else None
    continuous = True if training is None else training.get("continuous", True)
    name = validation.choice("model.name", model.get("name", None), SCALE_BY_SIGMA, sort=True)
    return {
        "continuous": bool(continuous),
        "num_scales": int(model.get("num_scales", 1000)),
        "scale_by_sigma": bool(model.get("scale_by_sigma", SCALE_BY_SIGMA[name])),
    }
