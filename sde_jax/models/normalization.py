"""Normalizations of the NCSN family (Song & Ermon, NeurIPS 2019, section 4.1 and appendix A).

Instance norm++ keeps the information that plain instance norm removes, the spread of the
channel means; its conditional version (NCSN v1) looks its scales up by noise-level index.
Variances are biased, epsilon 1e-5, parameters shaped ``(1, 1, 1, C)`` as the original.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

Images = Float[Array, "batch height width channels"]

__all__ = [
    "ConditionalInstanceNorm2dPlus",
    "InstanceNorm2d",
    "InstanceNorm2dPlus",
    "VarianceNorm2d",
]


def _instance_stats(x: Images) -> tuple[Array, Array, Array]:
    """Per-channel means, their standardization across channels, and the normalized x."""
    means = jnp.mean(x, axis=(1, 2))
    spread = jnp.var(means, axis=-1, keepdims=True)
    means_plus = (means - jnp.mean(means, axis=-1, keepdims=True)) / jnp.sqrt(spread + 1e-5)
    var = jnp.var(x, axis=(1, 2), keepdims=True)
    h = (x - means[:, None, None, :]) / jnp.sqrt(var + 1e-5)
    return means, means_plus, h


def _one_plus_normal(key, shape, dtype=jnp.float32):
    return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


class InstanceNorm2dPlus(nn.Module):
    r"""Instance norm++ (NCSN, eq. 6): instance norm that keeps the channel means' spread.

    :math:`\gamma \frac{x - \mu_c}{s_c} + \beta + \alpha \frac{\mu_c - m}{v}`, with
    :math:`m, v` mean and std of the channel means :math:`\mu_c` (biased variances, eps 1e-5).
    """

    bias: bool = True

    @nn.compact
    def __call__(self, x: Images) -> Images:
        """Normalizes NHWC images per example and channel."""
        _, means_plus, h = _instance_stats(x)
        c = x.shape[-1]
        h = h + means_plus[:, None, None, :] * self.param("alpha", _one_plus_normal, (1, 1, 1, c))
        h = h * self.param("gamma", _one_plus_normal, (1, 1, 1, c))
        if self.bias:
            h = h + self.param("beta", nn.initializers.zeros, (1, 1, 1, c))
        return h


class InstanceNorm2d(nn.Module):
    """Instance normalization with learned per-channel scale and bias (eps 1e-5)."""

    bias: bool = True

    @nn.compact
    def __call__(self, x: Images) -> Images:
        """Normalizes NHWC images per example and channel."""
        _, _, h = _instance_stats(x)
        h = h * self.param("scale", nn.initializers.ones, (1, 1, 1, x.shape[-1]))
        if self.bias:
            h = h + self.param("bias", nn.initializers.zeros, (1, 1, 1, x.shape[-1]))
        return h


class VarianceNorm2d(nn.Module):
    """Divides by the per-channel standard deviation (no centering), then scales."""

    bias: bool = False

    @nn.compact
    def __call__(self, x: Images) -> Images:
        """Normalizes NHWC images per example and channel."""
        h = x / jnp.sqrt(jnp.var(x, axis=(1, 2), keepdims=True) + 1e-5)
        h = h * self.param("scale", _one_plus_normal, (1, 1, 1, x.shape[-1]))
        if self.bias:
            h = h + self.param("bias", nn.initializers.zeros, (1, 1, 1, x.shape[-1]))
        return h


class ConditionalInstanceNorm2dPlus(nn.Module):
    """Instance norm++ whose gamma, alpha (and beta) are embeddings of the noise-level index."""

    num_classes: int = 10
    bias: bool = True

    @nn.compact
    def __call__(self, x: Images, y: Array) -> Images:
        """Normalizes NHWC images; ``y`` holds integer noise-level indices ``[batch]``."""
        _, means_plus, h = _instance_stats(x)
        c = x.shape[-1]
        parts = 3 if self.bias else 2

        def init(key, shape, dtype=jnp.float32):
            scales = _one_plus_normal(key, (shape[0], 2 * c), dtype)
            return jnp.concatenate([scales, jnp.zeros((shape[0], shape[1] - 2 * c), dtype)], -1)

        emb = nn.Embed(self.num_classes, parts * c, embedding_init=init)(y)
        gamma, alpha = emb[:, :c], emb[:, c : 2 * c]
        h = gamma[:, None, None, :] * (h + means_plus[:, None, None, :] * alpha[:, None, None, :])
        if self.bias:
            h = h + emb[:, None, None, 2 * c :]
        return h
