"""Where config sections become objects.

SDEs here; models in ``sde_jax.models.build_model``; samplers in
``sde_jax.sampling.get_sampler``.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import optax

from sde_jax.models import build_model
from sde_jax.sdes import EDMSDE, SDE, VESDE, VPSDE, CosineVPSDE, SubVPSDE

SDES: dict[str, type[SDE]] = {
    "vesde": VESDE,
    "vpsde": VPSDE,
    "subvpsde": SubVPSDE,
    "cosinevpsde": CosineVPSDE,
    "edmsde": EDMSDE,
}
"""SDE classes by the original's ``training.sde`` names, and the two added here."""


def build_sde(section: Mapping[str, Any]) -> SDE:
    """Builds the SDE of a config's ``sde`` section (``name`` and its parameters).

    The parameters are the SDE's own fields found in the section (``sigma_min`` and
    ``sigma_max`` for VE and EDM, ``beta_min`` and ``beta_max`` for VP and sub-VP, ``offset``
    and ``t_max`` for cosine VP); a field the section lacks keeps the SDE's default.

    Raises:
      ValueError: for an unknown ``sde.name`` (listing the valid ones) or invalid parameters.
    """
    name = section["name"]
    if not isinstance(name, str) or name.lower() not in SDES:
        raise ValueError(f"sde.name must be one of {sorted(SDES)}, got {name!r}.")
    cls = SDES[name.lower()]
    fields = [field.name for field in dataclasses.fields(cls)]
    return cls(**{key: section[key] for key in fields if key in section})


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
"""Compute dtypes of ``model.dtype``."""

OPTIMIZERS = ("adam", "adamw")


def build_model_from_config(config: Mapping[str, Any]) -> nn.Module:
    """The score network of a full config (its ``model`` and ``data.centered``).

    Raises:
      ValueError: for an unknown ``model.dtype`` or an invalid model section.
    """
    model = config["model"]
    dtype = model.get("dtype", "float32")
    if dtype not in DTYPES:
        raise ValueError(f"model.dtype must be one of {sorted(DTYPES)}, got {dtype!r}.")
    # The SDE section is the one source of the noise scales; the NCSN++ positional branch
    # with scale_by_sigma (discrete VE) divides by its own table of them.
    sde = config["sde"]
    section = {**dict(model), **{k: sde[k] for k in ("sigma_min", "sigma_max", "num_scales")}}
    return build_model(
        section,
        centered=config["data"]["centered"],
        dtype=DTYPES[dtype],
        remat=bool(model.get("remat", False)),
    )


def build_optimizer(section: Mapping[str, Any]) -> optax.GradientTransformation:
    r"""The original's optimizer: Adam with linear warmup and global-norm gradient clipping.

    The learning rate is :math:`\mathrm{lr} \cdot \min(1, \mathrm{step}/\mathrm{warmup})`;
    gradients are clipped to global norm ``grad_clip`` (None or 0: no clipping) before Adam.
    ``adamw`` adds decoupled weight decay ``weight_decay``.

    Raises:
      ValueError: for an unknown ``optim.optimizer`` or a non-positive ``optim.lr``.
    """
    name = section["optimizer"]
    if not isinstance(name, str) or name.lower() not in OPTIMIZERS:
        raise ValueError(f"optim.optimizer must be one of {list(OPTIMIZERS)}, got {name!r}.")
    if not section["lr"] > 0:
        raise ValueError(f"optim.lr must be > 0, got {section['lr']!r}.")
    warmup = int(section.get("warmup", 0) or 0)
    if warmup > 0:
        schedule = optax.warmup_constant_schedule(0.0, section["lr"], warmup)
    else:
        schedule = optax.constant_schedule(section["lr"])
    kwargs = {"b1": section.get("beta1", 0.9), "b2": 0.999, "eps": section.get("eps", 1e-8)}
    if name.lower() == "adamw":
        adam = optax.adamw(schedule, weight_decay=section.get("weight_decay", 0.0), **kwargs)
    else:
        adam = optax.adam(schedule, **kwargs)
    clip = section.get("grad_clip", None)
    return optax.chain(optax.clip_by_global_norm(clip), adam) if clip else adam


def check_image_size(config: Mapping[str, Any]) -> None:
    """Raises ValueError unless ``data.image_size`` halves cleanly at every U-Net level."""
    size, ch_mult = config["data"]["image_size"], tuple(config["model"]["ch_mult"])
    factor = 2 ** (len(ch_mult) - 1)
    if size % factor:
        raise ValueError(
            f"data.image_size={size} must be divisible by 2^(len(model.ch_mult) - 1) = {factor} "
            f"for model.ch_mult={ch_mult}."
        )
