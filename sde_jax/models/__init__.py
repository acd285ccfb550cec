"""Score networks: NCSN++ / DDPM++ and the DDPM baseline, and their score functions.

- ``NCSNpp``: the U-Net of Song et al. (ICLR 2021); NCSN++ and DDPM++ are two settings.
- ``DDPM``: the DDPM baseline (Ho et al., 2020).
- ``NCSNv2`` / ``NCSN``: the RefineNet baselines (Song & Ermon, 2020 / 2019); their blocks
  in ``refinenet``, their normalizations in ``normalization``.
- ``get_score_fn`` / ``time_labels``: network output to score, per SDE, as the original
  (``scale_by_sigma`` included: the networks hold no SDE parameter).

Config sections become modules in ``sde_jax.experiment.build`` (``build_model``); this
package never reads a config.
- ``WideResNet``: the noise-conditional classifier of class-conditional sampling.
- ``presets``: the full-size networks of the original configs; ``fir``: FIR resampling.
"""

from sde_jax.models import fir, layers, ncsnv2, normalization, presets, refinenet
from sde_jax.models.ddpm import DDPM
from sde_jax.models.ncsnpp import NCSNpp
from sde_jax.models.ncsnv2 import NCSN, NCSNv2
from sde_jax.models.score import divide_by_sigma, get_score_fn, label_sigmas, time_labels
from sde_jax.models.wideresnet import WideResNet

__all__ = [
    "DDPM",
    "NCSN",
    "NCSNpp",
    "NCSNv2",
    "WideResNet",
    "divide_by_sigma",
    "fir",
    "get_score_fn",
    "label_sigmas",
    "layers",
    "ncsnv2",
    "normalization",
    "presets",
    "refinenet",
    "time_labels",
]
