"""NCSNv2 and NCSN (v1): the RefineNet baselines of Song et al. (ICLR 2021).

Song & Ermon, "Generative Modeling by Estimating Gradients of the Data Distribution" (NeurIPS
2019, NCSN) and "Improved Techniques for Training Score-Based Generative Models" (NeurIPS
2020, NCSNv2). A ResNet backbone whose deeper stages use dilated convolutions instead of
further downsampling, then a cascade of RefineNet blocks (Lin et al., CVPR 2017); instance
norm++ and ELU. NCSNv2 is unconditional and divides its output by sigma of the step label;
NCSN conditions every normalization on the step label instead (and does not divide).

Module class names and creation order follow the original score_sde flax layers (``Conv_0``,
``ResidualBlock_3``, ``RefineBlock_1``, ``InstanceNorm2dPlus_0`` ...), so its checkpoints
should load by name. Unlike NCSN++, no parity fixture or parameter count of the original
exists for these networks: they are tested on their own definitions only. The original's
conditional residual block called its normalization class with the data instead of
instantiating it when downsampling, which fails; here it is instantiated.
"""

from collections.abc import Callable, Sequence
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from sde_jax.models.layers import ACTIVATIONS, check_choice
from sde_jax.models.ncsnpp import discrete_sigmas_descending
from sde_jax.models.normalization import (
    ConditionalInstanceNorm2dPlus,
    InstanceNorm2d,
    InstanceNorm2dPlus,
    VarianceNorm2d,
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
"""The original's ``ncsnv2_64`` (images < 96 px), ``ncsnv2_128`` and ``ncsnv2_256``."""

__all__ = ["NCSN", "STAGES", "NCSNv2"]


def _pytorch_init(scale: float = 1.0):
    """PyTorch's default conv init: ``variance_scaling(scale / 3, 'fan_in', 'uniform')``."""
    return nn.initializers.variance_scaling(
        (1e-10 if scale == 0 else scale) / 3, "fan_in", "uniform"
    )


def ncsn_conv(
    x: Images, features: int, kernel: int = 3, use_bias: bool = True, dilation: int = 1
) -> Images:
    """A ``SAME`` convolution with PyTorch's initialization, named ``Conv_<n>``."""
    init = _pytorch_init()
    shape = (kernel, kernel, x.shape[-1], features)

    def bias_init(key, _shape, dtype=jnp.float32):
        return init(key, shape, dtype)[0, 0, 0, :]

    return nn.Conv(
        features,
        (kernel, kernel),
        padding="SAME",
        use_bias=use_bias,
        kernel_dilation=(dilation, dilation),
        kernel_init=init,
        bias_init=bias_init,
    )(x)


class ConvMeanPool(nn.Module):
    """A ``SAME`` convolution followed by 2x2 mean pooling."""

    output_dim: int
    kernel_size: int = 3
    biases: bool = True

    @nn.compact
    def __call__(self, x: Images) -> Images:
        """Returns ``[batch, H/2, W/2, output_dim]``."""
        k = self.kernel_size
        h = nn.Conv(self.output_dim, (k, k), padding="SAME", use_bias=self.biases)(x)
        return (h[:, ::2, ::2] + h[:, 1::2, ::2] + h[:, ::2, 1::2] + h[:, 1::2, 1::2]) / 4.0


def _normalize(norm: Callable, h: Images, y: Array | None) -> Images:
    return norm()(h) if y is None else norm()(h, y)


class ResidualBlock(nn.Module):
    """Pre-activation residual block of the backbone; optionally downsampling or dilated.

    With ``resample='down'`` and ``dilation > 1`` the block does not shrink the image: the
    dilation widens the receptive field instead (as the original). ``ConditionalResidualBlock``
    is this block with normalizations conditioned on the label.
    """

    output_dim: int
    normalization: Callable
    resample: Literal["down"] | None = None
    act: Callable = nn.elu
    dilation: int = 1

    def _forward(self, x: Images, y: Array | None) -> Images:
        d = self.dilation
        h = self.act(_normalize(self.normalization, x, y))
        if self.resample == "down":
            h = ncsn_conv(h, h.shape[-1], dilation=d)
            h = self.act(_normalize(self.normalization, h, y))
            if d > 1:
                h = ncsn_conv(h, self.output_dim, dilation=d)
                return h + ncsn_conv(x, self.output_dim, dilation=d)
            h = ConvMeanPool(self.output_dim)(h)
            return h + ConvMeanPool(self.output_dim, kernel_size=1)(x)
        shortcut = x
        if self.output_dim != x.shape[-1]:
            kernel = 3 if d > 1 else 1
            shortcut = ncsn_conv(x, self.output_dim, kernel=kernel, dilation=d)
        h = ncsn_conv(h, self.output_dim, dilation=d)
        h = self.act(_normalize(self.normalization, h, y))
        return ncsn_conv(h, self.output_dim, dilation=d) + shortcut

    @nn.compact
    def __call__(self, x: Images) -> Images:
        """Applies the block to NHWC images."""
        return self._forward(x, None)


class ConditionalResidualBlock(ResidualBlock):
    """``ResidualBlock`` with label-conditioned normalizations (NCSN v1)."""

    @nn.compact
    def __call__(self, x: Images, y: Array) -> Images:  # type: ignore[override]
        """Applies the block to NHWC images with noise-level indices ``y``."""
        return self._forward(x, y)


def _call(module: nn.Module, x: Any, y: Array | None) -> Images:
    return module(x) if y is None else module(x, y)


class RCUBlock(nn.Module):
    """Residual conv units: ``n_blocks`` x (``n_stages`` x [norm], act, 3x3 conv w/o bias)."""

    features: int
    n_blocks: int
    n_stages: int = 2
    act: Callable = nn.relu
    normalizer: Callable | None = None

    def _forward(self, x: Images, y: Array | None) -> Images:
        for _ in range(self.n_blocks):
            residual = x
            for _ in range(self.n_stages):
                if y is not None:
                    x = self.normalizer()(x, y)
                x = ncsn_conv(self.act(x), self.features, use_bias=False)
            x = x + residual
        return x

    @nn.compact
    def __call__(self, x: Images) -> Images:
        """Applies the units to NHWC images."""
        return self._forward(x, None)


class CondRCUBlock(RCUBlock):
    """``RCUBlock`` normalizing on the labels before each activation (NCSN v1)."""

    @nn.compact
    def __call__(self, x: Images, y: Array) -> Images:  # type: ignore[override]
        """Applies the units to NHWC images with noise-level indices ``y``."""
        return self._forward(x, y)


class CRPBlock(nn.Module):
    """Chained residual pooling: act, then ``n_stages`` x (5x5 pool, 3x3 conv) summed in.

    Unconditional blocks max-pool; conditional ones normalize and average-pool.
    """

    features: int
    n_stages: int = 2
    act: Callable = nn.relu
    normalizer: Callable | None = None

    def _forward(self, x: Images, y: Array | None) -> Images:
        x = self.act(x)
        path = x
        for _ in range(self.n_stages):
            if y is None:
                path = nn.max_pool(path, (5, 5), strides=(1, 1), padding="SAME")
            else:
                path = self.normalizer()(path, y)
                path = nn.avg_pool(path, (5, 5), strides=(1, 1), padding="SAME")
            path = ncsn_conv(path, self.features, use_bias=False)
            x = path + x
        return x

    @nn.compact
    def __call__(self, x: Images) -> Images:
        """Applies the pooling chain to NHWC images."""
        return self._forward(x, None)


class CondCRPBlock(CRPBlock):
    """``CRPBlock`` with label-conditioned normalization and average pooling (NCSN v1)."""

    @nn.compact
    def __call__(self, x: Images, y: Array) -> Images:  # type: ignore[override]
        """Applies the pooling chain to NHWC images with noise-level indices ``y``."""
        return self._forward(x, y)


class MSFBlock(nn.Module):
    """Multi-resolution fusion: per input [norm], 3x3 conv, resize to ``shape``; summed."""

    shape: tuple[int, int]
    features: int
    interpolation: str = "bilinear"
    normalizer: Callable | None = None

    def _forward(self, xs: Sequence[Images], y: Array | None) -> Images:
        method = "bilinear" if self.interpolation == "bilinear" else "nearest"
        total = jnp.zeros((xs[0].shape[0], *self.shape, self.features))
        for x in xs:
            if y is not None:
                x = self.normalizer()(x, y)
            h = ncsn_conv(x, self.features)
            total = total + jax.image.resize(h, (h.shape[0], *self.shape, h.shape[-1]), method)
        return total

    @nn.compact
    def __call__(self, xs: Sequence[Images]) -> Images:
        """Fuses the feature maps ``xs`` at resolution ``shape``."""
        return self._forward(xs, None)


class CondMSFBlock(MSFBlock):
    """``MSFBlock`` normalizing each input on the labels first (NCSN v1)."""

    @nn.compact
    def __call__(self, xs: Sequence[Images], y: Array) -> Images:  # type: ignore[override]
        """Fuses the feature maps ``xs`` with noise-level indices ``y``."""
        return self._forward(xs, y)


class RefineBlock(nn.Module):
    """RefineNet block (Lin et al., 2017): RCUs per input, fusion, pooling chain, output RCUs.

    ``start`` blocks take one input and skip the fusion; ``end`` blocks have 3 output RCUs.
    """

    output_shape: tuple[int, int]
    features: int
    act: Callable = nn.relu
    interpolation: str = "bilinear"
    start: bool = False
    end: bool = False
    normalizer: Callable | None = None

    def _forward(self, xs: Sequence[Images], y: Array | None) -> Images:
        cond = y is not None
        rcu, msf, crp = (
            (CondRCUBlock, CondMSFBlock, CondCRPBlock)
            if cond
            else (
                RCUBlock,
                MSFBlock,
                CRPBlock,
            )
        )
        extra = {"normalizer": self.normalizer} if cond else {}
        hs = [_call(rcu(x.shape[-1], 2, act=self.act, **extra), x, y) for x in xs]
        if self.start:
            h = hs[0]
        else:
            fuse = msf(self.output_shape, self.features, self.interpolation, **extra)
            h = _call(fuse, hs, y)
        h = _call(crp(self.features, act=self.act, **extra), h, y)
        return _call(rcu(self.features, 3 if self.end else 1, act=self.act, **extra), h, y)

    @nn.compact
    def __call__(self, xs: Sequence[Images]) -> Images:
        """Fuses ``xs`` (feature maps, deepest last) into ``output_shape``."""
        return self._forward(xs, None)


class CondRefineBlock(RefineBlock):
    """``RefineBlock`` of label-conditioned units (NCSN v1)."""

    @nn.compact
    def __call__(self, xs: Sequence[Images], y: Array) -> Images:  # type: ignore[override]
        """Fuses ``xs`` with noise-level indices ``y``."""
        return self._forward(xs, y)


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
        h = _call(block(mult * nf, resample="down" if down else None, **common), h, y)
        h = _call(block(mult * nf, **common), h, y)
        layers.append(h)
    ref = None
    for i in reversed(range(len(stages))):
        features = stages[max(i - 1, 0)][0] * nf
        inputs = [layers[i]] if ref is None else [layers[i], ref]
        ref = _call(
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
    h = act(_call(norm(), ref, y))
    return ncsn_conv(h, x.shape[-1])


def _validate(module: nn.Module) -> None:
    if not isinstance(module.nf, int) or module.nf < 1:
        raise ValueError(f"nf must be a positive int, got {module.nf!r}.")
    check_choice("variant", module.variant, tuple(STAGES))
    check_choice("nonlinearity", module.nonlinearity, tuple(ACTIVATIONS))
    check_choice("interpolation", module.interpolation, INTERPOLATIONS)


class NCSNv2(nn.Module):
    """NCSNv2 (Song & Ermon, 2020): ``apply(variables, x, labels, train) -> output / sigma``.

    ``labels`` are integer noise-level indices into the descending table of ``num_scales``
    sigmas from ``sigma_max`` to ``sigma_min``; the output is divided by that sigma.

    Attributes:
      nf: base width.
      variant: 64, 128 or 256, the original's ``ncsnv2_64`` (images < 96 px), ``_128``, ``_256``.
      normalization: 'InstanceNorm++', 'InstanceNorm', 'VarianceNorm' or 'GroupNorm'.
      nonlinearity: 'elu', 'swish', 'relu' or 'lrelu'.
      interpolation: 'bilinear' or 'nearest_neighbor', for the RefineNet fusion.
      centered: inputs are in [-1, 1]; otherwise [0, 1] inputs are mapped to [-1, 1].
      sigma_min: smallest sigma.
      sigma_max: largest sigma.
      num_scales: number of sigmas.
    """

    nf: int = 128
    variant: Literal[64, 128, 256] = 64
    normalization: str = "InstanceNorm++"
    nonlinearity: str = "elu"
    interpolation: str = "bilinear"
    centered: bool = False
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    num_scales: int = 232

    def __post_init__(self):
        _validate(self)
        check_choice("normalization", self.normalization, NORMALIZATIONS)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Images, labels: Labels, train: bool = True) -> Images:
        """Returns the score estimate for NHWC ``x`` at noise-level indices ``labels``."""
        h = _refine_net(self, x, None, _normalization_class(self.normalization))
        table = discrete_sigmas_descending(self.sigma_min, self.sigma_max, self.num_scales)
        return h / table[labels.astype(jnp.int32)].reshape((-1, 1, 1, 1))


class NCSN(nn.Module):
    """NCSN v1 (Song & Ermon, 2019): conditional instance norm++ on the noise-level index.

    ``apply(variables, x, labels, train) -> output``; ``labels`` are integer indices in
    ``[0, num_scales)``; the output is not divided by sigma.

    Attributes:
      nf: base width.
      variant: backbone depth, as ``NCSNv2.variant`` (the original used 64).
      nonlinearity: 'elu', 'swish', 'relu' or 'lrelu'.
      interpolation: 'bilinear' or 'nearest_neighbor'.
      centered: inputs are in [-1, 1]; otherwise [0, 1] inputs are mapped to [-1, 1].
      num_scales: number of noise levels (embedding rows).
    """

    nf: int = 128
    variant: Literal[64, 128, 256] = 64
    nonlinearity: str = "elu"
    interpolation: str = "bilinear"
    centered: bool = False
    num_scales: int = 10

    def __post_init__(self):
        _validate(self)
        if not isinstance(self.num_scales, int) or self.num_scales < 1:
            raise ValueError(f"num_scales must be a positive int, got {self.num_scales!r}.")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Images, labels: Labels, train: bool = True) -> Images:
        """Returns the score estimate for NHWC ``x`` at noise-level indices ``labels``."""

        def norm():
            return ConditionalInstanceNorm2dPlus(num_classes=self.num_scales)

        return _refine_net(self, x, labels.astype(jnp.int32), norm)
