"""Where config sections become objects.

SDEs here; models in ``sde_jax.models.build_model``; samplers in
``sde_jax.sampling.get_sampler``.
"""

from collections.abc import Mapping
from typing import Any

from sde_jax.sdes import SDE, VESDE, VPSDE, SubVPSDE

SDES: dict[str, type[SDE]] = {"vesde": VESDE, "vpsde": VPSDE, "subvpsde": SubVPSDE}
"""SDE classes by the original's ``training.sde`` names."""


def build_sde(section: Mapping[str, Any]) -> SDE:
    """Builds the SDE of a config's ``sde`` section (``name`` and its parameters).

    Raises:
      ValueError: for an unknown ``sde.name`` (listing the valid ones) or invalid parameters.
    """
    name = section["name"]
    if not isinstance(name, str) or name.lower() not in SDES:
        raise ValueError(f"sde.name must be one of {sorted(SDES)}, got {name!r}.")
    if name.lower() == "vesde":
        return VESDE(sigma_min=section["sigma_min"], sigma_max=section["sigma_max"])
    return SDES[name.lower()](beta_min=section["beta_min"], beta_max=section["beta_max"])
