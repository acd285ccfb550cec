r"""The noise-conditional Wide-ResNet classifier (Song et al., ICLR 2021, appendix I.1).

Class-conditional sampling adds :math:`\nabla_x \log p_t(y \mid x)` to the score
(the paper's eq. 48), so the classifier has to see noisy images ``x(t)`` and know the noise
level. The paper's classifier is a Wide-ResNet-28-10 (Zagoruyko & Komodakis, 2016)
conditioned on random Fourier features of :math:`\log \sigma`, where :math:`\sigma` is the
noise level of the SDE at time t (``sde.marginal_std(t)``: sigma(t) for VE, the marginal
std for VP and sub-VP).

Structure, as the standard CIFAR WRN-d-k (pre-activation blocks):

- a 3x3 convolution to 16 channels;
- three groups of ``n = (depth - 4) / 6`` residual blocks with ``16k``, ``32k``, ``64k``
  channels (strides 1, 2, 2). A block is norm-act-conv3x3-norm-act-(dropout)-conv3x3; when
  its width or stride changes, the shortcut is a 1x1 convolution of the pre-activated input;
- norm-act, global average pooling and a dense layer to the logits.

Convolutions carry no bias, as the standard network, so without the conditioning layers the
parameter count is the standard one (36,479,194 for WRN-28-10 on 10 classes). As the original
classifier of score_sde, normalization is GroupNorm with ``min(channels // 4, 32)`` groups
(same parameter count as BatchNorm, but no batch statistics, which would mix noise levels),
the input is standardized per image (so VE inputs with sigma up to 50 arrive at unit scale),
and the noise conditioning is an MLP on Gaussian Fourier features of log sigma
(``embedding_size`` frequencies of scale ``fourier_scale`` -> ``4 * embedding_size`` ->
``4 * embedding_size``, swish between) whose output, through a swish and a per-block dense
layer, is added as a per-channel bias after each block's first convolution.
"""

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jaxtyping import Array, Float

from sde_jax import validation
from sde_jax.models.layers import GaussianFourierProjection, default_init

Images = Float[Array, "batch height width channels"]
Sigmas = Float[Array, " batch"]
Logits = Float[Array, "batch classes"]
Embedding = Float[Array, "batch features"]

__all__ = ["WideResNet", "standardize_per_image"]


def standardize_per_image(x: Images) -> Images:
    """``(x - mean) / max(std, 1 / sqrt(D))`` over each image's D values."""
    size = x[0].size
    mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
    std = jnp.std(x, axis=(1, 2, 3), keepdims=True)
    return (x - mean) / jnp.maximum(std, 1.0 / jnp.sqrt(size))


def _norm(x: Images, dtype: Any) -> Images:
    return nn.GroupNorm(num_groups=min(x.shape[-1] // 4, 32), dtype=dtype)(x)


def _conv(x: Images, features: int, kernel: int, stride: int, dtype: Any) -> Images:
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding="SAME",
        use_bias=False,
        kernel_init=nn.initializers.he_normal(),
        dtype=dtype,
    )(x)


class WideResNetBlock(nn.Module):
    """A pre-activation residual block with a noise-level bias after its first convolution."""

    features: int
    stride: int = 1
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Images, temb: Embedding, train: bool) -> Images:
        h = nn.relu(_norm(x, self.dtype))
        if x.shape[-1] != self.features or self.stride != 1:
            shortcut = _conv(h, self.features, 1, self.stride, self.dtype)
        else:
            shortcut = x
        h = _conv(h, self.features, 3, self.stride, self.dtype)
        bias = nn.Dense(self.features, kernel_init=default_init(), dtype=self.dtype)(nn.swish(temb))
        h = h + bias[:, None, None, :]
        h = nn.relu(_norm(h, self.dtype))
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        h = _conv(h, self.features, 3, 1, self.dtype)
        return h + shortcut


class WideResNet(nn.Module):
    """WRN-``depth``-``widen_factor`` on noisy images: ``apply(v, x, sigmas, train) -> logits``.

    Attributes:
      depth: total depth ``6 n + 4`` (28 in the paper).
      widen_factor: width multiplier k (10 in the paper).
      num_classes: number of classes (logits per example).
      dropout: dropout rate between each block's convolutions (0 in the paper's setting).
      embedding_size: Gaussian Fourier frequencies of log sigma (the MLP is 4x as wide).
      fourier_scale: std of those frequencies.
      dtype: compute dtype of activations (parameters stay float32).
    """

    depth: int = 28
    widen_factor: int = 10
    num_classes: int = 10
    dropout: float = 0.0
    embedding_size: int = 128
    fourier_scale: float = 16.0
    dtype: Any = jnp.float32

    def __post_init__(self):
        if not isinstance(self.depth, int) or self.depth < 10 or (self.depth - 4) % 6:
            raise ValueError(
                f"depth must be 6 n + 4 with n >= 1 (10, 16, 22, 28 ...), got {self.depth!r}."
            )
        validation.integer("widen_factor", self.widen_factor, minimum=1)
        validation.integer("num_classes", self.num_classes, minimum=2)
        validation.interval("dropout", self.dropout, 0, 1, closed=(True, False))
        validation.integer("embedding_size", self.embedding_size, minimum=1)
        validation.interval("fourier_scale", self.fourier_scale, 0, math.inf, (False, True))
        super().__post_init__()

    @property
    def blocks_per_group(self) -> int:
        """``n = (depth - 4) / 6`` residual blocks in each of the three groups."""
        return (self.depth - 4) // 6

    @nn.compact
    def __call__(self, x: Images, sigmas: Sigmas, train: bool = True) -> Logits:
        """Returns the logits of images ``x`` (NHWC, any scale) at noise levels ``sigmas``."""
        width = 4 * self.embedding_size
        temb = GaussianFourierProjection(self.embedding_size, self.fourier_scale)(
            jnp.log(sigmas.astype(jnp.float32))
        )
        temb = nn.Dense(width, kernel_init=default_init(), dtype=self.dtype)(temb)
        temb = nn.Dense(width, kernel_init=default_init(), dtype=self.dtype)(nn.swish(temb))

        h = _conv(standardize_per_image(x).astype(self.dtype), 16, 3, 1, self.dtype)
        for group, stride in enumerate((1, 2, 2)):
            for i in range(self.blocks_per_group):
                h = WideResNetBlock(
                    16 * 2**group * self.widen_factor,
                    stride=stride if i == 0 else 1,
                    dropout=self.dropout,
                    dtype=self.dtype,
                )(h, temb, train)
        h = nn.relu(_norm(h, self.dtype))
        h = jnp.mean(h, axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=self.dtype)(h).astype(jnp.float32)
