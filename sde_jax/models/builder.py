"""Turns a ``model`` config section into a Flax module: the one place models meet configs.

The section uses the original score_sde key names (``nf``, ``ch_mult``, ``resblock_type``,
``progressive_input`` ...); ``name`` picks the architecture. Keys a module has no field for
(``ema_rate``, ``beta_min``, ``conv_size`` ...) describe training or the SDE and are ignored.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sde_jax.models.ddpm import DDPM
from sde_jax.models.ncsnpp import NCSNpp
from sde_jax.models.ncsnv2 import NCSN, NCSNv2
from sde_jax.models.wideresnet import WideResNet

MODELS: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
    "ncsnpp": (NCSNpp, {}),
    "ddpm": (DDPM, {}),
    "ncsnv2_64": (NCSNv2, {"variant": 64}),
    "ncsnv2_128": (NCSNv2, {"variant": 128}),
    "ncsnv2_256": (NCSNv2, {"variant": 256}),
    "ncsn": (NCSN, {}),
    "wideresnet": (WideResNet, {}),
}
"""Architectures by the original ``model.name``: the class and the fields the name fixes."""

# Fields that come from outside the model section (data, run-time options) or from flax.
_NOT_FROM_SECTION = {"parent", "name", "centered", "dtype", "remat", "variant"}
# The original lower-cased these option strings before comparing them.
_CASE_INSENSITIVE = {
    "resblock_type",
    "progressive",
    "progressive_input",
    "progressive_combine",
    "embedding_type",
    "nonlinearity",
}

# Models that read ``embedding_type``: a Fourier embedding of log sigma needs the continuous
# noise level as its label. DDPM, NCSN and NCSNv2 never read the field (the original's
# defaults set it to 'fourier' in every config, discrete ones included).
_READS_EMBEDDING_TYPE = {"ncsnpp"}

__all__ = ["MODELS", "build_model", "check_training_compatible", "module_kwargs"]


def _plain(value: Any) -> Any:
    """Lists (as ConfigDicts and JSON give them) become tuples, so modules stay hashable."""
    if isinstance(value, list | tuple):
        return tuple(_plain(v) for v in value)
    return value


def module_kwargs(cls: type[nn.Module], section: Mapping[str, Any]) -> dict[str, Any]:
    """Returns the constructor arguments of ``cls`` found in ``section`` (others ignored)."""
    names = {f.name for f in dataclasses.fields(cls)} - _NOT_FROM_SECTION
    kwargs = {key: _plain(section[key]) for key in names if key in section}
    for key in _CASE_INSENSITIVE & kwargs.keys():
        if isinstance(kwargs[key], str):
            kwargs[key] = kwargs[key].lower()
    return kwargs


def check_training_compatible(section: Mapping[str, Any], *, continuous: bool | None) -> None:
    """Checks the model section against ``training.continuous``, for the fields it reads.

    Args:
      section: the ``model`` section; ``name`` picks the model, and only a model that reads
        ``embedding_type`` (NCSN++ / DDPM++) is checked.
      continuous: ``training.continuous``; None (unknown) skips the check.

    Raises:
      ValueError: if NCSN++ / DDPM++ has ``embedding_type='fourier'`` with discrete training.
    """
    name = section.get("name", None) if hasattr(section, "get") else section["name"]
    if name not in _READS_EMBEDDING_TYPE or continuous is None:
        return
    embedding = str(section.get("embedding_type", "")).lower()
    if embedding == "fourier" and not continuous:
        raise ValueError(
            f"model.embedding_type='fourier' of model.name={name!r} needs "
            "training.continuous=True (the network embeds log sigma), got "
            "training.continuous=False; use embedding_type='positional' for discrete training."
        )


def build_model(
    section: Mapping[str, Any],
    *,
    centered: bool,
    dtype: Any = jnp.float32,
    remat: bool = False,
) -> nn.Module:
    """Builds the module described by a model config section.

    Args:
      section: the ``model`` section (a ConfigDict or a dict), original key names; ``name``
        chooses the architecture (one of ``MODELS``).
      centered: whether the data are in [-1, 1] (``data.centered``); otherwise the network
        maps [0, 1] inputs to [-1, 1] itself.
      dtype: compute dtype of activations (parameters stay float32).
      remat: rematerialize residual blocks in the backward pass.
        ``dtype`` and ``remat`` are options of NCSN++ and DDPM, not of NCSNv2 / NCSN.

    Returns:
      An unbound flax module; ``apply({'params': p}, x, labels, train=False)`` evaluates it
      (``labels``: the time conditioning of a score network, the noise level sigma of the
      ``'wideresnet'`` classifier, whose output is logits).

    Raises:
      ValueError: if ``name`` is unknown, a field has an invalid value, or ``dtype`` /
        ``remat`` are set for a model without them.
    """
    name = section.get("name", None) if hasattr(section, "get") else section["name"]
    if name not in MODELS:
        raise ValueError(f"model.name must be one of {sorted(MODELS)}, got {name!r}.")
    cls, fixed = MODELS[name]
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {**module_kwargs(cls, section), **fixed}
    if "centered" in names:  # the classifier standardizes each image instead
        kwargs["centered"] = bool(centered)
    options = {"dtype": dtype, "remat": remat}
    for option, value in options.items():
        if option in names:
            kwargs[option] = value
        elif value != {"dtype": jnp.float32, "remat": False}[option]:
            raise ValueError(f"{option}={value!r} is not supported by model {name!r}.")
    return cls(**kwargs)
