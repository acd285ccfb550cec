"""Score networks: NCSN++ / DDPM++ and the DDPM baseline, their builder and score functions.

- ``NCSNpp``: the U-Net of Song et al. (ICLR 2021); NCSN++ and DDPM++ are two settings.
- ``DDPM``: the DDPM baseline (Ho et al., 2020).
- ``NCSNv2`` / ``NCSN``: the RefineNet baselines (Song & Ermon, 2020 / 2019); their blocks
  in ``refinenet``, their normalizations in ``normalization``.
- ``build_model``: a model config section (original key names) to a module.
- ``get_score_fn`` / ``time_labels``: network output to score, per SDE, as the original.
- ``WideResNet``: the noise-conditional classifier of class-conditional sampling.
- ``presets``: the full-size networks of the original configs; ``fir``: FIR resampling.
"""

from sde_jax.models import fir, layers, ncsnv2, normalization, presets, refinenet
from sde_jax.models.builder import MODELS, build_model
from sde_jax.models.ddpm import DDPM
from sde_jax.models.ncsnpp import NCSNpp
from sde_jax.models.ncsnv2 import NCSN, NCSNv2
from sde_jax.models.score import get_score_fn, time_labels
from sde_jax.models.wideresnet import WideResNet

__all__ = [
    "DDPM",
    "MODELS",
    "NCSN",
    "NCSNpp",
    "NCSNv2",
    "WideResNet",
    "build_model",
    "fir",
    "get_score_fn",
    "layers",
    "ncsnv2",
    "normalization",
    "presets",
    "refinenet",
    "time_labels",
]
