"""The full-size networks of Song et al. (ICLR 2021), as in the original score_sde configs.

Each function returns the module of one config family (keyword arguments override fields,
e.g. ``dtype`` or ``remat``); the comment names the original config file. Parameter counts
equal the original's (tests/models/test_models_param_counts.py). The VE networks (NCSN++, NCSNv2)
were trained with their output divided by sigma: score them with
``get_score_fn(..., scale_by_sigma=True)``.
"""

from typing import Any

from sde_jax.models.ddpm import DDPM
from sde_jax.models.ncsnpp import NCSNpp
from sde_jax.models.ncsnv2 import NCSN, NCSNv2

__all__ = [
    "ddpm_256",
    "ddpm_cifar10",
    "ddpmpp_cifar10",
    "ncsn_cifar10",
    "ncsnpp_celebahq256",
    "ncsnpp_cifar10",
    "ncsnv2_cifar10",
]

_CIFAR10_UNET = {
    "nf": 128,
    "ch_mult": (1, 2, 2, 2),
    "attn_resolutions": (16,),
    "dropout": 0.1,
    "resamp_with_conv": True,
    "conditional": True,
    "skip_rescale": True,
    "resblock_type": "biggan",
    "progressive": "none",
    "progressive_combine": "sum",
    "fir_kernel": (1, 3, 3, 1),
    "init_scale": 0.0,
    "fourier_scale": 16.0,
}


def ncsnpp_cifar10(deep: bool = False, **overrides: Any) -> NCSNpp:
    """NCSN++ for 32x32 VE (``ve/cifar10_ncsnpp[_deep]_continuous``): 62.8M / 107.6M params."""
    fields = {
        **_CIFAR10_UNET,
        "num_res_blocks": 8 if deep else 4,
        "fir": True,
        "progressive_input": "residual",
        "embedding_type": "fourier",
        "centered": False,
    }
    return NCSNpp(**{**fields, **overrides})


def ddpmpp_cifar10(deep: bool = False, **overrides: Any) -> NCSNpp:
    """DDPM++ for 32x32 VP / sub-VP (``vp/cifar10_ddpmpp[_deep]_continuous``): 61.8M / 106.6M."""
    fields = {
        **_CIFAR10_UNET,
        "num_res_blocks": 8 if deep else 4,
        "fir": False,
        "progressive_input": "none",
        "embedding_type": "positional",
        "centered": True,
    }
    return NCSNpp(**{**fields, **overrides})


def ncsnpp_celebahq256(**overrides: Any) -> NCSNpp:
    """NCSN++ for 256x256 VE (``ve/celebahq_256_ncsnpp_continuous``): 65.6M params."""
    fields = {
        **_CIFAR10_UNET,
        "ch_mult": (1, 1, 2, 2, 2, 2, 2),
        "num_res_blocks": 2,
        "dropout": 0.0,
        "fir": True,
        "progressive": "output_skip",
        "progressive_input": "input_skip",
        "embedding_type": "fourier",
        "centered": False,
    }
    return NCSNpp(**{**fields, **overrides})


def ddpm_cifar10(**overrides: Any) -> DDPM:
    """The DDPM baseline for 32x32 discrete VP (``vp/ddpm/cifar10``): 35.2M params."""
    fields = {
        "nf": 128,
        "ch_mult": (1, 2, 2, 2),
        "num_res_blocks": 2,
        "attn_resolutions": (16,),
        "dropout": 0.1,
        "resamp_with_conv": True,
        "conditional": True,
        "centered": True,
    }
    return DDPM(**{**fields, **overrides})


def ddpm_256(**overrides: Any) -> DDPM:
    """The DDPM baseline at 256x256 (``vp/ddpm/{bedroom,church,celebahq}``): 111.6M params."""
    return ddpm_cifar10(**{"ch_mult": (1, 1, 2, 2, 4, 4), **overrides})


def ncsnv2_cifar10(**overrides: Any) -> NCSNv2:
    """NCSNv2-64 (``ve/ncsnv2/cifar10``, 232 sigmas from 50): 34.0M params."""
    fields = {"nf": 128, "variant": 64}
    return NCSNv2(**{**fields, **overrides})


def ncsn_cifar10(**overrides: Any) -> NCSN:
    """NCSN v1 (``ve/ncsn/cifar10``, 10 noise levels): 34.4M params (44.8M at 232 levels)."""
    return NCSN(**{"nf": 128, "variant": 64, "num_scales": 10, **overrides})
