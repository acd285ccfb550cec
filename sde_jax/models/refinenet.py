"""The RefineNet blocks of NCSN (v1) and NCSNv2 (Song & Ermon, NeurIPS 2019 / 2020).

A pre-activation ResNet backbone block (optionally downsampling or dilated) and the
RefineNet cascade of Lin et al. (CVPR 2017): residual conv units (RCU), multi-resolution
fusion (MSF) and chained residual pooling (CRP). The ``Cond*`` classes are the NCSN v1
versions, whose normalizations look their scales up by noise-level index.

Class names and creation order follow the original score_sde flax layers (``Conv_0``,
``ConvMeanPool_1``, ``CondRCUBlock_0`` ...), so its checkpoints load by name. The original
conditional residual block called its normalization class with the data
(``self.normalization(h, y)``) instead of instantiating it (``self.normalization()(h, y)``)
when downsampling, which fails; the intended network, instantiating it, is built here.
"""

from collections.abc import Callable, Sequence
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

Images = Float[Array, "batch height width channels"]

__all__ = [
    "CRPBlock",
    "CondCRPBlock",
    "CondMSFBlock",
    "CondRCUBlock",
    "CondRefineBlock",
    "ConditionalResidualBlock",
    "ConvMeanPool",
    "MSFBlock",
    "RCUBlock",
    "RefineBlock",
    "ResidualBlock",
    "call",
    "ncsn_conv",
]


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


def call(module: nn.Module, x: Any, y: Array | None) -> Images:
    """Applies ``module`` to ``x``, with the labels ``y`` if the module is conditional."""
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
        hs = [call(rcu(x.shape[-1], 2, act=self.act, **extra), x, y) for x in xs]
        if self.start:
            h = hs[0]
        else:
            fuse = msf(self.output_shape, self.features, self.interpolation, **extra)
            h = call(fuse, hs, y)
        h = call(crp(self.features, act=self.act, **extra), h, y)
        return call(rcu(self.features, 3 if self.end else 1, act=self.act, **extra), h, y)

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
