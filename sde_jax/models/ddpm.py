"""The DDPM baseline U-Net (Ho et al., NeurIPS 2020), as score_sde's ``ddpm`` model.

Song et al. (ICLR 2021) use it for the discrete VP baseline (``configs/vp/ddpm``). Residual
blocks without rescaling, attention at the listed resolutions, nearest / stride-2 resampling,
a sinusoidal embedding of the step labels and zero-initialized output layers.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from sde_jax.models import layers
from sde_jax.models.layers import ACTIVATIONS, AttnBlock, Downsample, ResnetBlockDDPM, Upsample
from sde_jax.models.ncsnpp import validate_unet_fields

Images = Float[Array, "batch height width channels"]
Labels = Float[Array, " batch"]
ClassLabels = Int[Array, " batch"]

__all__ = ["DDPM"]


class DDPM(nn.Module):
    """DDPM's U-Net: ``apply(variables, x, labels, train) -> output``.

    Every GroupNorm has 32 groups (as the original), so widths must be multiples of 32.
    ``labels`` are (possibly fractional) step indices, embedded sinusoidally when
    ``conditional``. The original's ``scale_by_sigma`` (the VE baseline ``ve/cifar10_ddpm``
    divides the output by the sigma of the step) is the score wrapper's option
    (``get_score_fn(..., scale_by_sigma=True)``).

    Attributes:
      nf: base width.
      ch_mult: width multiplier per resolution.
      num_res_blocks: residual blocks per resolution.
      attn_resolutions: feature-map sizes that get self-attention.
      dropout: dropout rate in residual blocks.
      resamp_with_conv: convolve when up/downsampling.
      conditional: condition on the time step.
      centered: inputs are in [-1, 1]; otherwise [0, 1] inputs are mapped to [-1, 1].
      nonlinearity: 'swish', 'relu', 'lrelu' or 'elu'.
      dtype: compute dtype of activations (parameters stay float32).
      remat: rematerialize residual blocks in the backward pass.
      num_classes: None for an unconditional network; else a learned class embedding (with
        the null label ``num_classes``) is added to the time embedding, as in ``NCSNpp``.
    """

    nf: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.1
    resamp_with_conv: bool = True
    conditional: bool = True
    centered: bool = True
    nonlinearity: str = "swish"
    dtype: Any = jnp.float32
    remat: bool = False
    num_classes: int | None = None

    def __post_init__(self):
        validate_unet_fields(self)
        layers.check_num_classes(self.num_classes, self.conditional)
        if self.nf % layers.DDPM_GROUPS:
            raise ValueError(
                f"nf must be a multiple of {layers.DDPM_GROUPS} (the GroupNorm groups), "
                f"got {self.nf!r}."
            )
        super().__post_init__()

    def _block_factory(self):
        cls = nn.remat(ResnetBlockDDPM, static_argnums=(3,)) if self.remat else ResnetBlockDDPM
        act = ACTIVATIONS[self.nonlinearity]
        count = [0]

        def make(**kwargs):
            name = f"ResnetBlockDDPM_{count[0]}"
            count[0] += 1
            return cls(act=act, dropout=self.dropout, dtype=self.dtype, name=name, **kwargs)

        return make

    @nn.compact
    def __call__(
        self,
        x: Images,
        labels: Labels,
        train: bool = True,
        class_labels: ClassLabels | None = None,
    ) -> Images:
        """Returns the network output for images ``x`` (NHWC) and step ``labels``.

        ``class_labels``: the classes of a class-conditional network (None: the null label).

        Raises:
          ValueError: if the image size is not divisible by ``2 ** (len(ch_mult) - 1)``.
        """
        levels = len(self.ch_mult)
        if x.ndim != 4 or x.shape[1] % 2 ** (levels - 1) or x.shape[2] % 2 ** (levels - 1):
            raise ValueError(
                f"x must be NHWC with height and width divisible by 2**(len(ch_mult)-1) = "
                f"{2 ** (levels - 1)}, got shape {x.shape}."
            )
        act = ACTIVATIONS[self.nonlinearity]
        dt = self.dtype
        block = self._block_factory()
        temb = None
        if self.conditional:
            temb = layers.timestep_embedding(labels, self.nf)
            temb = nn.Dense(self.nf * 4, kernel_init=layers.default_init(), dtype=dt)(temb)
            temb = nn.Dense(self.nf * 4, kernel_init=layers.default_init(), dtype=dt)(act(temb))
            if self.num_classes is not None:
                temb = temb + layers.class_embedding(
                    class_labels, labels, self.num_classes, self.nf * 4
                )
        h = x if self.centered else 2 * x - 1.0
        h = h.astype(dt)

        hs = [layers.conv3x3(h, self.nf, dtype=dt)]
        for level in range(levels):
            for _ in range(self.num_res_blocks):
                h = block(out_ch=self.nf * self.ch_mult[level])(hs[-1], temb, train)
                if h.shape[1] in self.attn_resolutions:
                    h = AttnBlock(dtype=dt)(h)
                hs.append(h)
            if level != levels - 1:
                hs.append(Downsample(with_conv=self.resamp_with_conv, dtype=dt)(hs[-1]))

        h = hs[-1]
        h = block()(h, temb, train)
        h = AttnBlock(dtype=dt)(h)
        h = block()(h, temb, train)

        for level in reversed(range(levels)):
            for _ in range(self.num_res_blocks + 1):
                skip = hs.pop()
                h = block(out_ch=self.nf * self.ch_mult[level])(
                    jnp.concatenate([h, skip], axis=-1), temb, train
                )
            if h.shape[1] in self.attn_resolutions:
                h = AttnBlock(dtype=dt)(h)
            if level != 0:
                h = Upsample(with_conv=self.resamp_with_conv, dtype=dt)(h)

        h = act(layers.group_norm(h, dt, layers.DDPM_GROUPS))
        return layers.conv3x3(h, x.shape[-1], init_scale=0.0, dtype=dt).astype(jnp.float32)
