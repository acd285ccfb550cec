"""NCSN++ and DDPM++ (Song et al., ICLR 2021, section 4.4 and appendix H).

One U-Net with options; the paper's two networks are two settings of it:

- NCSN++ (VE): BigGAN blocks with FIR resampling, ``progressive_input='residual'``, Gaussian
  Fourier features of log sigma; its configs' ``scale_by_sigma`` (output divided by sigma) is
  applied by the score wrapper (``sde_jax.models.score.get_score_fn``), not here.
- DDPM++ (VP, sub-VP): BigGAN blocks without FIR, no progressive paths, sinusoidal
  embedding of ``999 t``, centered data.

Parameter names and shapes equal the original score_sde ``NCSNpp``, so its checkpoints load
directly (see ``sde_jax.compat.score_sde``).
"""

import math
from typing import Any, Literal

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from sde_jax import validation
from sde_jax.models import layers
from sde_jax.models.layers import (
    ACTIVATIONS,
    AttnBlockpp,
    Combine,
    Downsample,
    GaussianFourierProjection,
    ResnetBlockBigGANpp,
    ResnetBlockDDPMpp,
    Upsample,
    conv3x3,
    group_norm,
)

Images = Float[Array, "batch height width channels"]
Labels = Float[Array, " batch"]
ClassLabels = Int[Array, " batch"]

RESBLOCK_TYPES = ("ddpm", "biggan")
PROGRESSIVE = ("none", "output_skip", "residual")
PROGRESSIVE_INPUT = ("none", "input_skip", "residual")
PROGRESSIVE_COMBINE = ("sum", "cat")
EMBEDDING_TYPES = ("fourier", "positional")

__all__ = ["NCSNpp", "validate_unet_fields"]


def validate_unet_fields(module: Any) -> None:
    """Checks the fields shared by NCSN++ and DDPM; raises ValueError naming the bad field."""
    validation.integer("nf", module.nf, minimum=4)
    if len(module.ch_mult) == 0 or any(not isinstance(m, int) or m < 1 for m in module.ch_mult):
        raise ValueError(
            f"ch_mult must be a non-empty tuple of positive ints, got {module.ch_mult!r}."
        )
    validation.integer("num_res_blocks", module.num_res_blocks, minimum=0)
    validation.interval("dropout", module.dropout, 0, 1, closed=(True, False))
    validation.choice("nonlinearity", module.nonlinearity, ACTIVATIONS)
    if not jnp.issubdtype(module.dtype, jnp.floating):
        raise ValueError(f"dtype must be a floating dtype such as bfloat16, got {module.dtype!r}.")


class NCSNpp(nn.Module):
    """The NCSN++ / DDPM++ U-Net: ``apply(variables, x, labels, train) -> output``.

    ``labels`` is the time conditioning the original fed: sigma(t) for Fourier embeddings
    (the network embeds log sigma), ``999 t`` or a step index for positional embeddings. The
    original's ``scale_by_sigma`` (dividing the output by the sigma of the labels) is the score
    wrapper's option (``get_score_fn(..., scale_by_sigma=True)``); the module has no SDE
    parameter.

    Attributes:
      nf: base width.
      ch_mult: width multiplier per resolution.
      num_res_blocks: residual blocks per resolution.
      attn_resolutions: feature-map sizes that get self-attention.
      dropout: dropout rate in residual blocks.
      resamp_with_conv: convolve when resampling outside blocks ('ddpm' blocks, pyramids).
      conditional: condition on time through a learned embedding.
      fir: FIR (StyleGAN2) resampling instead of nearest / average pooling.
      fir_kernel: the 1-D FIR kernel.
      skip_rescale: divide residual sums by sqrt(2).
      resblock_type: 'ddpm' or 'biggan'.
      progressive: output pyramid, 'none', 'output_skip' or 'residual'.
      progressive_input: input pyramid, 'none', 'input_skip' or 'residual'.
      progressive_combine: how 'input_skip' merges, 'sum' or 'cat'.
      embedding_type: 'fourier' (of log labels) or 'positional'.
      fourier_scale: std of the Fourier feature frequencies.
      init_scale: scale of the last layer of each block (0 means 1e-10).
      centered: inputs are in [-1, 1]; otherwise [0, 1] inputs are mapped to [-1, 1].
      nonlinearity: 'swish', 'relu', 'lrelu' or 'elu'.
      dtype: compute dtype of activations (parameters stay float32).
      remat: rematerialize residual blocks in the backward pass.
      num_classes: None for an unconditional network; else the network is class-conditional
        (classifier-free guidance): a learned embedding of the class label, with
        ``num_classes + 1`` rows (the last, index ``num_classes``, is the null label of the
        unconditional model), is added to the time embedding.
    """

    nf: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 4
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.1
    resamp_with_conv: bool = True
    conditional: bool = True
    fir: bool = True
    fir_kernel: tuple[float, ...] = (1, 3, 3, 1)
    skip_rescale: bool = True
    resblock_type: Literal["ddpm", "biggan"] = "biggan"
    progressive: Literal["none", "output_skip", "residual"] = "none"
    progressive_input: Literal["none", "input_skip", "residual"] = "residual"
    progressive_combine: Literal["sum", "cat"] = "sum"
    embedding_type: Literal["fourier", "positional"] = "fourier"
    fourier_scale: float = 16.0
    init_scale: float = 0.0
    centered: bool = False
    nonlinearity: str = "swish"
    dtype: Any = jnp.float32
    remat: bool = False
    num_classes: int | None = None

    def __post_init__(self):
        validate_unet_fields(self)
        validation.choice("resblock_type", self.resblock_type, RESBLOCK_TYPES)
        validation.choice("progressive", self.progressive, PROGRESSIVE)
        validation.choice("progressive_input", self.progressive_input, PROGRESSIVE_INPUT)
        validation.choice("progressive_combine", self.progressive_combine, PROGRESSIVE_COMBINE)
        validation.choice("embedding_type", self.embedding_type, EMBEDDING_TYPES)
        if self.embedding_type == "fourier":
            validation.interval("fourier_scale", self.fourier_scale, 0, math.inf, (False, True))
        layers.check_num_classes(self.num_classes, self.conditional)
        if self.fir and len(self.fir_kernel) == 0:
            raise ValueError("fir_kernel must be non-empty when fir=True, got ().")
        super().__post_init__()

    def _time_embedding(self, labels: Labels, class_labels: ClassLabels | None) -> Array | None:
        """Returns the time (and class) embedding, None if unconditional."""
        act = ACTIVATIONS[self.nonlinearity]
        if self.embedding_type == "fourier":
            temb = GaussianFourierProjection(self.nf, self.fourier_scale)(jnp.log(labels))
        else:
            temb = layers.timestep_embedding(labels, self.nf)
        if not self.conditional:
            return None
        temb = nn.Dense(self.nf * 4, kernel_init=layers.default_init(), dtype=self.dtype)(temb)
        temb = nn.Dense(self.nf * 4, kernel_init=layers.default_init(), dtype=self.dtype)(act(temb))
        if self.num_classes is not None:
            temb = temb + layers.class_embedding(
                class_labels, labels, self.num_classes, self.nf * 4
            )
        return temb

    def _block_factory(self):
        """Returns ``make(**kwargs)`` building the next residual block with the original name."""
        act = ACTIVATIONS[self.nonlinearity]
        if self.resblock_type == "ddpm":
            cls, extra = ResnetBlockDDPMpp, {}
        else:
            cls, extra = ResnetBlockBigGANpp, {"fir": self.fir, "fir_kernel": self.fir_kernel}
        prefix = cls.__name__
        if self.remat:
            cls = nn.remat(cls, static_argnums=(3,))
        count = [0]

        def make(**kwargs):
            name = f"{prefix}_{count[0]}"
            count[0] += 1
            return cls(
                act=act,
                dropout=self.dropout,
                init_scale=self.init_scale,
                skip_rescale=self.skip_rescale,
                dtype=self.dtype,
                name=name,
                **extra,
                **kwargs,
            )

        return make

    def _resampler(self, cls):
        return cls(
            with_conv=self.resamp_with_conv,
            fir=self.fir,
            fir_kernel=self.fir_kernel,
            dtype=self.dtype,
        )

    def _pyramid_sampler(self, cls, mode: str, **kwargs):
        return cls(
            with_conv=mode == "residual",
            fir=self.fir,
            fir_kernel=self.fir_kernel,
            dtype=self.dtype,
            **kwargs,
        )

    def _attention(self) -> AttnBlockpp:
        return AttnBlockpp(
            skip_rescale=self.skip_rescale, init_scale=self.init_scale, dtype=self.dtype
        )

    @nn.compact
    def __call__(
        self,
        x: Images,
        labels: Labels,
        train: bool = True,
        class_labels: ClassLabels | None = None,
    ) -> Images:
        """Returns the network output for images ``x`` (NHWC) and time conditioning ``labels``.

        ``class_labels`` (int ``[batch]`` in ``[0, num_classes]``) are the classes of a
        class-conditional network; None means the null label ``num_classes`` (unconditional).
        An unconditional network (``num_classes`` None) ignores them.

        Raises:
          ValueError: if the image size is not divisible by ``2 ** (len(ch_mult) - 1)``.
        """
        levels = len(self.ch_mult)
        if x.ndim != 4 or x.shape[1] % 2 ** (levels - 1) or x.shape[2] % 2 ** (levels - 1):
            raise ValueError(
                f"x must be NHWC with height and width divisible by 2**(len(ch_mult)-1) = "
                f"{2 ** (levels - 1)}, got shape {x.shape}."
            )
        temb = self._time_embedding(labels, class_labels)
        block = self._block_factory()
        if not self.centered:
            x = 2 * x - 1.0
        hs = self._down_path(x.astype(self.dtype), temb, block, train)
        h = block()(hs[-1], temb, train)
        h = self._attention()(h)
        h = block()(h, temb, train)
        h = self._up_path(h, hs, temb, block, train, out_channels=x.shape[-1])
        return h.astype(jnp.float32)

    def _down_path(self, x: Images, temb: Array | None, block, train: bool) -> list[Images]:
        """The encoder; returns every feature map the decoder takes as a skip connection."""
        levels = len(self.ch_mult)
        input_pyramid = x if self.progressive_input != "none" else None
        hs = [conv3x3(x, self.nf, dtype=self.dtype)]
        for level in range(levels):
            for _ in range(self.num_res_blocks):
                h = block(out_ch=self.nf * self.ch_mult[level])(hs[-1], temb, train)
                if h.shape[1] in self.attn_resolutions:
                    h = self._attention()(h)
                hs.append(h)
            if level == levels - 1:
                continue
            if self.resblock_type == "ddpm":
                h = self._resampler(Downsample)(hs[-1])
            else:
                h = block(down=True)(hs[-1], temb, train)
            if self.progressive_input == "input_skip":
                input_pyramid = self._pyramid_sampler(Downsample, "input_skip")(input_pyramid)
                h = Combine(method=self.progressive_combine, dtype=self.dtype)(input_pyramid, h)
            elif self.progressive_input == "residual":
                down = self._pyramid_sampler(Downsample, "residual", out_ch=h.shape[-1])
                input_pyramid = self._merge(down(input_pyramid), h)
                h = input_pyramid
            hs.append(h)
        return hs

    def _up_path(
        self, h: Images, hs: list[Images], temb: Array | None, block, train: bool, out_channels: int
    ) -> Images:
        """The decoder, consuming ``hs``; returns the output before any division by sigma."""
        levels = len(self.ch_mult)
        pyramid = None
        for level in reversed(range(levels)):
            for _ in range(self.num_res_blocks + 1):
                skip = hs.pop()
                h = block(out_ch=self.nf * self.ch_mult[level])(
                    jnp.concatenate([h, skip], axis=-1), temb, train
                )
            if h.shape[1] in self.attn_resolutions:
                h = self._attention()(h)
            if self.progressive != "none":
                h, pyramid = self._output_pyramid(h, pyramid, level == levels - 1, out_channels)
            if level != 0:
                if self.resblock_type == "ddpm":
                    h = self._resampler(Upsample)(h)
                else:
                    h = block(up=True)(h, temb, train)
        if self.progressive == "output_skip":
            return pyramid
        h = ACTIVATIONS[self.nonlinearity](group_norm(h, self.dtype))
        return conv3x3(h, out_channels, init_scale=self.init_scale, dtype=self.dtype)

    def _merge(self, a: Images, b: Images) -> Images:
        return (a + b) / np.sqrt(2.0) if self.skip_rescale else a + b

    def _output_pyramid(
        self, h: Images, pyramid: Images | None, first: bool, out_channels: int
    ) -> tuple[Images, Images]:
        """One step of the output pyramid ('output_skip' or 'residual'); returns (h, pyramid)."""
        act = ACTIVATIONS[self.nonlinearity]
        dt = self.dtype
        if self.progressive == "output_skip":
            if not first:
                pyramid = self._pyramid_sampler(Upsample, "output_skip")(pyramid)
            feat = conv3x3(
                act(group_norm(h, dt)), out_channels, init_scale=self.init_scale, dtype=dt
            )
            return h, feat if first else pyramid + feat
        if first:
            return h, conv3x3(act(group_norm(h, dt)), h.shape[-1], dtype=dt)
        pyramid = self._pyramid_sampler(Upsample, "residual", out_ch=h.shape[-1])(pyramid)
        pyramid = self._merge(pyramid, h)
        return pyramid, pyramid
