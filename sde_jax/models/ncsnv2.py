"""NCSNv2 and NCSN (v1): the RefineNet baselines of Song et al. (ICLR 2021).

Song & Ermon, "Generative Modeling by Estimating Gradients of the Data Distribution" (NeurIPS
2019, NCSN) and "Improved Techniques for Training Score-Based Generative Models" (NeurIPS
2020, NCSNv2). A ResNet backbone whose deeper stages use dilated convolutions instead of
further downsampling, then a cascade of RefineNet blocks (``sde_jax.models.refinenet``);
instance norm++ and ELU. NCSNv2 is unconditional: its output is divided by sigma of the step
label (``scale_by_sigma``, set by every original NCSNv2 config), which the score wrapper does
(``get_score_fn(..., scale_by_sigma=True)``); NCSN conditions every normalization on the step
label instead (and its configs do not divide).

The networks, parameter names and shapes are the original score_sde's ``ncsnv2_64``,
``ncsnv2_128``, ``ncsnv2_256`` and ``ncsn``; parameter counts equal the original's
(tests/models/test_models_original_configs.py). Two defects of the original are repaired, building
the network it intended: its NCSN reads ``config.model.num_classes`` for the rows of the
conditional normalizations, which no config sets (``num_scales`` is the only value
consistent with the labels, and is used here), and its conditional residual block does not
instantiate its normalization when downsampling (see ``refinenet``).
"""

from collections.abc import Callable
from typing import Literal

import flax.linen as nn
import jax.numpy as jnp
from jaxtyping import Array, Float

from sde_jax import validation
from sde_jax.models.layers import ACTIVATIONS
from sde_jax.models.normalization import (
    ConditionalInstanceNorm2dPlus,
    InstanceNorm2d,
    InstanceNorm2dPlus,
    VarianceNorm2d,
)
from sde_jax.models.refinenet import (
    ConditionalResidualBlock,
    CondRefineBlock,
    RefineBlock,
    ResidualBlock,
    call,
    ncsn_conv,
)

Images = Float[Array, "batch height width channels"]
Labels = Float[Array, " batch"]

NORMALIZATIONS = ("InstanceNorm++", "InstanceNorm", "VarianceNorm", "GroupNorm")
INTERPOLATIONS = ("bilinear", "nearest_neighbor")

# (width multiplier, downsample, dilation) of each backbone stage; each stage has two residual
# blocks, the first of which resamples. Dilated "down" blocks keep the size.
STAGES = {
    64: ((1, False, 1), (2, True, 1), (2, True, 2), (2, True, 4)),
    128: ((1, False, 1), (2, True, 1), (2, True, 1), (4, True, 2), (4, True, 4)),
    256: ((1, False, 1), (2, True, 1), (2, True, 1), (2, True, 1), (4, True, 2), (4, True, 4)),
}
"""The original's ``ncsnv2_64`` (images < 96 px; also NCSN v1), ``ncsnv2_128`` and ``_256``."""

REFINE_WIDTHS = {64: (2, 2, 2, 1), 128: (4, 2, 2, 1, 1), 256: (4, 2, 2, 2, 1, 1)}
"""Width multipliers of the RefineNet blocks, deepest (``RefineBlock_0``) first.

Not derivable from the backbone: in the 64 px network the third block (``RefineBlock_2``,
fed by the 2 nf wide second stage) is 2 nf wide, where the 128 and 256 px networks narrow
to nf at the same stage width.
"""

__all__ = ["NCSN", "REFINE_WIDTHS", "STAGES", "NCSNv2"]


def _normalization_class(name: str) -> Callable:
    return {
        "InstanceNorm++": InstanceNorm2dPlus,
        "InstanceNorm": InstanceNorm2d,
        "VarianceNorm": VarianceNorm2d,
        "GroupNorm": nn.GroupNorm,
    }[name]


def _refine_net(module: nn.Module, x: Images, y: Array | None, norm: Callable) -> Images:
    """The shared body of NCSNv2 and NCSN: backbone, RefineNet cascade, norm, act, conv."""
    act = ACTIVATIONS[module.nonlinearity]
    nf = module.nf
    stages = STAGES[module.variant]
    block = ResidualBlock if y is None else ConditionalResidualBlock
    refine = RefineBlock if y is None else CondRefineBlock
    extra = {} if y is None else {"normalizer": norm}
    h = x if module.centered else 2 * x - 1.0
    h = ncsn_conv(h, nf)
    layers = []
    for mult, down, dilation in stages:
        common = {"normalization": norm, "act": act, "dilation": dilation}
        h = call(block(mult * nf, resample="down" if down else None, **common), h, y)
        h = call(block(mult * nf, **common), h, y)
        layers.append(h)
    ref = None
    widths = REFINE_WIDTHS[module.variant]
    for i in reversed(range(len(stages))):
        features = widths[len(stages) - 1 - i] * nf
        inputs = [layers[i]] if ref is None else [layers[i], ref]
        ref = call(
            refine(
                tuple(layers[i].shape[1:3]),
                features,
                act=act,
                interpolation=module.interpolation,
                start=ref is None,
                end=i == 0,
                **extra,
            ),
            inputs,
            y,
        )
    h = act(call(norm(), ref, y))
    return ncsn_conv(h, x.shape[-1])


def _validate(module: nn.Module) -> None:
    validation.integer("nf", module.nf, minimum=1)
    validation.choice("variant", module.variant, STAGES)
    validation.choice("nonlinearity", module.nonlinearity, ACTIVATIONS)
    validation.choice("interpolation", module.interpolation, INTERPOLATIONS)


class NCSNv2(nn.Module):
    """NCSNv2 (Song & Ermon, 2020): ``apply(variables, x, labels, train) -> output``.

    The network is unconditional: ``labels`` (integer noise-level indices) are not read here;
    the score wrapper divides the output by their sigma (``scale_by_sigma``, set by every
    original NCSNv2 config).

    Attributes:
      nf: base width.
      variant: 64, 128 or 256, the original's ``ncsnv2_64`` (images < 96 px), ``_128``, ``_256``.
      normalization: 'InstanceNorm++', 'InstanceNorm', 'VarianceNorm' or 'GroupNorm'.
      nonlinearity: 'elu', 'swish', 'relu' or 'lrelu'.
      interpolation: 'bilinear' or 'nearest_neighbor', for the RefineNet fusion.
      centered: inputs are in [-1, 1]; otherwise [0, 1] inputs are mapped to [-1, 1].
    """

    nf: int = 128
    variant: Literal[64, 128, 256] = 64
    normalization: str = "InstanceNorm++"
    nonlinearity: str = "elu"
    interpolation: str = "bilinear"
    centered: bool = False

    def __post_init__(self):
        _validate(self)
        validation.choice("normalization", self.normalization, NORMALIZATIONS)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Images, labels: Labels, train: bool = True) -> Images:
        """Returns the score estimate for NHWC ``x`` at noise-level indices ``labels``."""
        del labels  # unconditional; the score wrapper divides by their sigma
        return _refine_net(self, x, None, _normalization_class(self.normalization))


class NCSN(nn.Module):
    """NCSN v1 (Song & Ermon, 2019): conditional instance norm++ on the noise-level index.

    ``apply(variables, x, labels, train) -> output``; ``labels`` are integer indices in
    ``[0, num_scales)``. The conditional normalizations have ``num_scales`` embedding rows
    (the original read an unset ``model.num_classes`` here; see the module docstring). The
    original NCSN configs do not divide by sigma (``scale_by_sigma=False``; the score
    wrapper's option).

    Attributes:
      nf: base width.
      variant: backbone depth, as ``NCSNv2.variant`` (the original has 64 only).
      normalization: 'InstanceNorm++' (conditional), the only one the original supports.
      nonlinearity: 'elu', 'swish', 'relu' or 'lrelu'.
      interpolation: 'bilinear' or 'nearest_neighbor'.
      centered: inputs are in [-1, 1]; otherwise [0, 1] inputs are mapped to [-1, 1].
      num_scales: number of noise levels (embedding rows).
    """

    nf: int = 128
    variant: Literal[64, 128, 256] = 64
    normalization: str = "InstanceNorm++"
    nonlinearity: str = "elu"
    interpolation: str = "bilinear"
    centered: bool = False
    num_scales: int = 10

    def __post_init__(self):
        _validate(self)
        validation.choice("normalization", self.normalization, ("InstanceNorm++",))
        validation.integer("num_scales", self.num_scales, minimum=1)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Images, labels: Labels, train: bool = True) -> Images:
        """Returns the score estimate for NHWC ``x`` at noise-level indices ``labels``."""

        def norm():
            return ConditionalInstanceNorm2dPlus(num_classes=self.num_scales)

        return _refine_net(self, x, labels.astype(jnp.int32), norm)
