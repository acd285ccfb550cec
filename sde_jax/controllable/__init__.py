"""Controllable generation (paper section 5 and appendix I; section 4.3 for latents).

- Inpainting (:func:`get_inpainter`): the paper's replacement, a combinator
  (:class:`Replacement`) over any stepper, and replacement with reconstruction guidance.
- Colorization (:func:`get_colorizer`): inpainting in an orthogonal colour basis whose first
  axis is gray (:data:`COLOR_BASIS`).
- Class-conditional sampling (:func:`get_conditional_sampler`) with a noise-conditional
  classifier (:func:`classifier_log_prob_fn`, of the :data:`ClassifierLogProb` interface),
  and classifier-free guidance (:func:`classifier_free_score`; null label = ``num_classes``).
- Latents of the probability-flow ODE (:func:`get_latent_codec`): encode, decode, spherical
  interpolation, temperature-scaled sampling.

The builders take objects: a sampler of :mod:`sde_jax.sampling` (a ``FixedGridSampler`` for
inpainting and colorization, whose stepper is conditioned at every step; any sampler for
class-conditional sampling) or the SDE and solver settings (latents), and return pure
functions with the same ``SampleOutput`` results; nothing inside is jitted or sharded. Their
config versions (``experiment.build.inpainter_from_config`` ...) live at the edge, in
:mod:`sde_jax.experiment.build`.
"""

from sde_jax.controllable.colorization import (
    COLOR_BASIS,
    couple,
    decouple,
    decoupled_score,
    get_colorizer,
)
from sde_jax.controllable.guidance import (
    ClassifierLogProb,
    classifier_free_score,
    classifier_guided_score,
    classifier_log_prob_fn,
    get_conditional_sampler,
)
from sde_jax.controllable.inpainting import (
    Replacement,
    diffuse,
    get_inpainter,
    reconstruction_guided_score,
)
from sde_jax.controllable.latent import LatentCodec, LatentOutput, get_latent_codec, slerp
from sde_jax.controllable.masks import MASKS, make_mask

__all__ = [
    "COLOR_BASIS",
    "MASKS",
    "ClassifierLogProb",
    "LatentCodec",
    "LatentOutput",
    "Replacement",
    "classifier_free_score",
    "classifier_guided_score",
    "classifier_log_prob_fn",
    "couple",
    "decouple",
    "decoupled_score",
    "diffuse",
    "get_colorizer",
    "get_conditional_sampler",
    "get_inpainter",
    "get_latent_codec",
    "make_mask",
    "reconstruction_guided_score",
    "slerp",
]
