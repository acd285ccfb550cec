"""Layers of NCSN++ / DDPM++ and the DDPM baseline (Song et al., ICLR 2021, appendix H).

Module class names and the order in which each block creates its sub-modules match the
original score_sde code, so flax's automatic names (``Conv_0``, ``GroupNorm_1``, ``NIN_3`` ...)
equal the names in its released checkpoints. Every layer takes a compute ``dtype``; parameters
are always float32.
"""

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from sde_jax import validation
from sde_jax.models import fir as fir_lib

Images = Float[Array, "batch height width channels"]
Embedding = Float[Array, "batch features"]
Labels = Float[Array, " batch"]
Dtype = Any
Activation = Callable[[Array], Array]

ACTIVATIONS: dict[str, Activation] = {
    "swish": nn.swish,
    "relu": nn.relu,
    "lrelu": lambda x: nn.leaky_relu(x, negative_slope=0.2),
    "elu": nn.elu,
}
"""The original ``model.nonlinearity`` choices."""

DDPM_GROUPS = 32
"""The DDPM baseline normalizes with flax's default of 32 groups everywhere."""

__all__ = [
    "ACTIVATIONS",
    "NIN",
    "AttnBlock",
    "AttnBlockpp",
    "Combine",
    "Conv2d",
    "Downsample",
    "GaussianFourierProjection",
    "ResnetBlockBigGANpp",
    "ResnetBlockDDPM",
    "ResnetBlockDDPMpp",
    "Upsample",
    "check_num_classes",
    "class_embedding",
    "conv1x1",
    "conv3x3",
    "default_init",
    "group_norm",
    "timestep_embedding",
]


def default_init(scale: float = 1.0) -> Callable:
    """DDPM's initializer: ``variance_scaling(scale, 'fan_avg', 'uniform')``; 0 means 1e-10."""
    return nn.initializers.variance_scaling(1e-10 if scale == 0 else scale, "fan_avg", "uniform")


def conv3x3(
    x: Images,
    features: int,
    *,
    stride: int = 1,
    use_bias: bool = True,
    init_scale: float = 1.0,
    dtype: Dtype = jnp.float32,
) -> Images:
    """A 3x3 ``SAME`` convolution named ``Conv_<n>`` in the calling module."""
    return nn.Conv(
        features,
        kernel_size=(3, 3),
        strides=(stride, stride),
        padding="SAME",
        use_bias=use_bias,
        kernel_init=default_init(init_scale),
        dtype=dtype,
    )(x)


def conv1x1(
    x: Images, features: int, *, init_scale: float = 1.0, dtype: Dtype = jnp.float32
) -> Images:
    """A 1x1 convolution named ``Conv_<n>`` in the calling module."""
    return nn.Conv(features, kernel_size=(1, 1), kernel_init=default_init(init_scale), dtype=dtype)(
        x
    )


def group_norm(x: Images, dtype: Dtype = jnp.float32, num_groups: int | None = None) -> Images:
    """GroupNorm with epsilon 1e-6 and ``min(channels // 4, 32)`` groups unless given.

    NCSN++ uses ``min(channels // 4, 32)`` groups; the DDPM baseline always 32.
    """
    groups = min(x.shape[-1] // 4, 32) if num_groups is None else num_groups
    return nn.GroupNorm(num_groups=groups, dtype=dtype)(x)


def timestep_embedding(timesteps: Labels, dim: int, max_positions: int = 10000) -> Embedding:
    r"""Sinusoidal embedding of (possibly fractional) time steps (Vaswani et al., 2017; DDPM).

    :math:`e_j = \sin(t\,\omega_j)` for the first half, :math:`\cos(t\,\omega_j)` for the second,
    with :math:`\omega_j = \exp(-j \log(\text{max\_positions}) / (\text{dim}/2 - 1))`; an odd
    ``dim`` is padded with one zero.
    """
    half = dim // 2
    rate = math.log(max_positions) / (half - 1)
    freqs = jnp.exp(jnp.arange(half, dtype=jnp.float32) * -rate)
    args = timesteps.astype(jnp.float32)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=1)
    if dim % 2 == 1:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class GaussianFourierProjection(nn.Module):
    r"""Random Fourier features :math:`[\sin(2\pi x W), \cos(2\pi x W)]`, W ~ N(0, scale^2).

    Tancik et al., 2020; Song et al., 2021, appendix C. ``W`` is stored in ``params`` (so
    checkpoints carry it) but never trained.
    """

    embedding_size: int = 256
    scale: float = 1.0

    @nn.compact
    def __call__(self, x: Labels) -> Embedding:
        """Returns ``[batch, 2 * embedding_size]`` features of ``x [batch]``."""
        w = self.param("W", nn.initializers.normal(stddev=self.scale), (self.embedding_size,))
        w = jax.lax.stop_gradient(w)
        proj = x[:, None] * w[None, :] * 2 * jnp.pi
        return jnp.concatenate([jnp.sin(proj), jnp.cos(proj)], axis=-1)


def check_num_classes(num_classes: object, conditional: bool) -> None:
    """Raises ValueError unless ``num_classes`` is None or an int >= 1 of a time-conditional net."""
    if num_classes is None:
        return
    validation.integer("num_classes", num_classes, minimum=1, meaning=" or None")
    if not conditional:
        raise ValueError(
            f"num_classes={num_classes} needs conditional=True: the class embedding is added "
            "to the time embedding."
        )


def class_embedding(
    class_labels: Array | None, time_labels: Array, num_classes: int, features: int
) -> Embedding:
    """A learned embedding ``ClassEmbed`` of class labels in ``[0, num_classes]``.

    Row ``num_classes`` is the null label (the unconditional model of classifier-free
    guidance); ``class_labels`` None means the null label for every example of the batch
    (whose size ``time_labels [batch]`` gives).
    """
    if class_labels is None:
        class_labels = jnp.full(time_labels.shape[:1], num_classes, jnp.int32)
    embed = nn.Embed(num_classes + 1, features, embedding_init=default_init(), name="ClassEmbed")
    return embed(jnp.asarray(class_labels, jnp.int32))


class NIN(nn.Module):
    """Network-in-network: a per-pixel linear map with parameters ``W [in, out]`` and ``b``."""

    num_units: int
    init_scale: float = 0.1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Applies ``x @ W + b`` over the last axis."""
        w = self.param("W", default_init(self.init_scale), (x.shape[-1], self.num_units))
        b = self.param("b", nn.initializers.zeros, (self.num_units,))
        x, w, b = (a.astype(self.dtype) for a in (x, w, b))
        return jnp.einsum("...i,ij->...j", x, w) + b


def _self_attention(x: Images, h: Images, init_scale: float, dtype: Dtype) -> Images:
    """Single-head self-attention over all pixels of ``h``; returns the projected update."""
    b, height, width, c = x.shape
    q = NIN(c, dtype=dtype)(h)
    k = NIN(c, dtype=dtype)(h)
    v = NIN(c, dtype=dtype)(h)
    logits = jnp.einsum("bhwc,bHWc->bhwHW", q, k) * (int(c) ** (-0.5))
    logits = jnp.reshape(logits, (b, height, width, height * width)).astype(jnp.float32)
    weights = jax.nn.softmax(logits, axis=-1).astype(dtype)
    weights = jnp.reshape(weights, (b, height, width, height, width))
    h = jnp.einsum("bhwHW,bHWc->bhwc", weights, v)
    return NIN(c, init_scale=init_scale, dtype=dtype)(h)


class AttnBlockpp(nn.Module):
    """NCSN++ self-attention block: GroupNorm, q/k/v NINs, output NIN, optional 1/sqrt(2)."""

    skip_rescale: bool = False
    init_scale: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Images) -> Images:
        """Applies the layer to NHWC images."""
        h = group_norm(x, self.dtype)
        h = _self_attention(x, h, self.init_scale, self.dtype)
        return (x + h) / np.sqrt(2.0) if self.skip_rescale else x + h


class AttnBlock(nn.Module):
    """DDPM self-attention block (Ho et al., 2020): 32-group GroupNorm, no rescaling."""

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Images) -> Images:
        """Applies the layer to NHWC images."""
        h = group_norm(x, self.dtype, num_groups=DDPM_GROUPS)
        return x + _self_attention(x, h, 0.0, self.dtype)


class Conv2d(nn.Module):
    """Convolution fused with FIR up- or downsampling; parameters ``weight`` (HWIO), ``bias``."""

    fmaps: int
    kernel: int = 3
    up: bool = False
    down: bool = False
    resample_kernel: tuple[float, ...] = (1, 3, 3, 1)
    use_bias: bool = True
    kernel_init: Callable | None = None
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Images) -> Images:
        """Applies the layer to NHWC images."""
        init = self.kernel_init or default_init()
        shape = (self.kernel, self.kernel, x.shape[-1], self.fmaps)
        w = self.param("weight", init, shape).astype(self.dtype)
        x = x.astype(self.dtype)
        if self.up:
            x = fir_lib.upsample_conv_2d(x, w, self.resample_kernel)
        elif self.down:
            x = fir_lib.conv_downsample_2d(x, w, self.resample_kernel)
        else:
            x = jax.lax.conv_general_dilated(
                x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
        if self.use_bias:
            b = self.param("bias", nn.initializers.zeros, (x.shape[-1],))
            x = x + b.astype(self.dtype).reshape((1, 1, 1, -1))
        return x


class Upsample(nn.Module):
    """2x upsampling: nearest or FIR, optionally with a 3x3 convolution to ``out_ch``."""

    out_ch: int | None = None
    with_conv: bool = False
    fir: bool = False
    fir_kernel: tuple[float, ...] = (1, 3, 3, 1)
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Images) -> Images:
        """Applies the layer to NHWC images."""
        out_ch = self.out_ch or x.shape[-1]
        if not self.fir:
            h = fir_lib.naive_upsample_2d(x)
            if self.with_conv:
                h = conv3x3(h, out_ch, dtype=self.dtype)
        elif not self.with_conv:
            h = fir_lib.upsample_2d(x, self.fir_kernel)
        else:
            h = Conv2d(out_ch, up=True, resample_kernel=self.fir_kernel, dtype=self.dtype)(x)
        return h


class Downsample(nn.Module):
    """2x downsampling: average pooling, a stride-2 3x3 convolution, or FIR (+ convolution)."""

    out_ch: int | None = None
    with_conv: bool = False
    fir: bool = False
    fir_kernel: tuple[float, ...] = (1, 3, 3, 1)
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Images) -> Images:
        """Applies the layer to NHWC images."""
        out_ch = self.out_ch or x.shape[-1]
        if not self.fir:
            if self.with_conv:
                return conv3x3(x, out_ch, stride=2, dtype=self.dtype)
            return fir_lib.naive_downsample_2d(x)
        if not self.with_conv:
            return fir_lib.downsample_2d(x, self.fir_kernel)
        return Conv2d(out_ch, down=True, resample_kernel=self.fir_kernel, dtype=self.dtype)(x)


class Combine(nn.Module):
    """Merges the input pyramid into the features: 1x1 conv of ``x``, then sum or concat."""

    method: str = "cat"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Images, y: Images) -> Images:
        """Merges ``x`` (the pyramid) into ``y`` (the features)."""
        h = conv1x1(x, y.shape[-1], dtype=self.dtype)
        if self.method == "cat":
            return jnp.concatenate([h, y], axis=-1)
        if self.method == "sum":
            return h + y
        raise ValueError(f"progressive_combine must be 'sum' or 'cat', got {self.method!r}.")


def _add_time_bias(h: Images, temb: Embedding | None, act: Activation, dtype: Dtype) -> Images:
    """Adds a per-channel bias ``Dense(act(temb))`` (named ``Dense_0``) if ``temb`` is given."""
    if temb is None:
        return h
    bias = nn.Dense(h.shape[-1], kernel_init=default_init(), dtype=dtype)(act(temb))
    return h + bias[:, None, None, :]


class ResnetBlockDDPMpp(nn.Module):
    """DDPM residual block as used by NCSN++ with ``resblock_type='ddpm'``.

    GroupNorm, act, 3x3 conv, + time bias, GroupNorm, act, dropout, 3x3 conv; the shortcut is a
    NIN (or 3x3 conv) when the width changes; the sum is divided by sqrt(2) with skip_rescale.
    """

    act: Activation
    out_ch: int | None = None
    conv_shortcut: bool = False
    dropout: float = 0.1
    skip_rescale: bool = False
    init_scale: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Images, temb: Embedding | None = None, train: bool = True) -> Images:
        """Applies the block; ``temb`` is the time embedding, ``train`` enables dropout."""
        channels = x.shape[-1]
        out_ch = self.out_ch or channels
        h = self.act(group_norm(x, self.dtype))
        h = conv3x3(h, out_ch, dtype=self.dtype)
        h = _add_time_bias(h, temb, self.act, self.dtype)
        h = self.act(group_norm(h, self.dtype))
        h = nn.Dropout(self.dropout)(h, deterministic=not train)
        h = conv3x3(h, out_ch, init_scale=self.init_scale, dtype=self.dtype)
        if channels != out_ch:
            if self.conv_shortcut:
                x = conv3x3(x, out_ch, dtype=self.dtype)
            else:
                x = NIN(out_ch, dtype=self.dtype)(x)
        return (x + h) / np.sqrt(2.0) if self.skip_rescale else x + h


class ResnetBlockDDPM(nn.Module):
    """The DDPM baseline's residual block (Ho et al., 2020).

    As ``ResnetBlockDDPMpp`` with 32-group GroupNorms, no rescaling and a zero-init last conv.
    """

    act: Activation
    out_ch: int | None = None
    conv_shortcut: bool = False
    dropout: float = 0.5
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Images, temb: Embedding | None = None, train: bool = True) -> Images:
        """Applies the block; ``temb`` is the time embedding, ``train`` enables dropout."""
        channels = x.shape[-1]
        out_ch = self.out_ch or channels
        h = self.act(group_norm(x, self.dtype, DDPM_GROUPS))
        h = conv3x3(h, out_ch, dtype=self.dtype)
        h = _add_time_bias(h, temb, self.act, self.dtype)
        h = self.act(group_norm(h, self.dtype, DDPM_GROUPS))
        h = nn.Dropout(self.dropout)(h, deterministic=not train)
        h = conv3x3(h, out_ch, init_scale=0.0, dtype=self.dtype)
        if channels != out_ch:
            if self.conv_shortcut:
                x = conv3x3(x, out_ch, dtype=self.dtype)
            else:
                x = NIN(out_ch, dtype=self.dtype)(x)
        return x + h


class ResnetBlockBigGANpp(nn.Module):
    """BigGAN-style residual block of NCSN++ (Brock et al., 2019), resampling inside the block.

    GroupNorm, act, [2x up/down of both paths, FIR or naive], 3x3 conv, + time bias, GroupNorm,
    act, dropout, 3x3 conv; a 1x1 shortcut conv when the width changes or it resamples.
    """

    act: Activation
    up: bool = False
    down: bool = False
    out_ch: int | None = None
    dropout: float = 0.1
    fir: bool = False
    fir_kernel: tuple[float, ...] = (1, 3, 3, 1)
    skip_rescale: bool = True
    init_scale: float = 0.0
    dtype: Dtype = jnp.float32

    def _resample(self, x: Images) -> Images:
        if self.up:
            if self.fir:
                return fir_lib.upsample_2d(x, self.fir_kernel)
            return fir_lib.naive_upsample_2d(x)
        if self.down:
            if self.fir:
                return fir_lib.downsample_2d(x, self.fir_kernel)
            return fir_lib.naive_downsample_2d(x)
        return x

    @nn.compact
    def __call__(self, x: Images, temb: Embedding | None = None, train: bool = True) -> Images:
        """Applies the block; ``temb`` is the time embedding, ``train`` enables dropout."""
        channels = x.shape[-1]
        out_ch = self.out_ch or channels
        h = self.act(group_norm(x, self.dtype))
        h, x = self._resample(h), self._resample(x)
        h = conv3x3(h, out_ch, dtype=self.dtype)
        h = _add_time_bias(h, temb, self.act, self.dtype)
        h = self.act(group_norm(h, self.dtype))
        h = nn.Dropout(self.dropout)(h, deterministic=not train)
        h = conv3x3(h, out_ch, init_scale=self.init_scale, dtype=self.dtype)
        if channels != out_ch or self.up or self.down:
            x = conv1x1(x, out_ch, dtype=self.dtype)
        return (x + h) / np.sqrt(2.0) if self.skip_rescale else x + h
