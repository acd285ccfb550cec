"""The Inception network that FID and the Inception Score are defined with, in Flax.

This is the 2015-12-05 TensorFlow graph ``classify_image_graph_def.pb`` (in
http://download.tensorflow.org/models/image/imagenet/inception-2015-12-05.tgz), the network of
the original Inception Score and FID code, TF-GAN and pytorch-fid: pool3 features ``[B, 2048]``
and 1008 logits. It is an Inception-v3 (Szegedy et al. 2016) and differs from torchvision's in
ways that change the features (pytorch-fid documents them):

- average pools in the blocks exclude the padding from the count (TensorFlow's ``SAME`` pools;
  ``count_include_pad=False``);
- the pool branch of the last block (``mixed_10``) is a 3x3 max pool, not an average pool;
- batch norm with epsilon 1e-3; convolutions have no bias; no auxiliary classifier;
- 1008 classes; the logits of the Inception Score are ``pool3 @ softmax/weights`` without the
  bias, as the original code (and TF-GAN, torch-fidelity's ``logits_unbiased``).

Preprocessing is the graph's own: images in [0, 255] are resized to 299x299 with TensorFlow 1's
``resize_bilinear`` (``align_corners=False``, no half-pixel centers, no antialiasing), then
mapped to ``(x - 128) / 128``. Gray images are repeated to 3 channels.

Parameters are named by the graph's constant nodes: the flattened path of every parameter
(``'mixed_9/tower/mixed/conv_1/conv2d_params'``, ``'conv/batchnorm/moving_variance'``,
``'softmax/weights'``) is the name of the node it comes from, so converting the graph
(:mod:`sde_jax.evaluation.inception_graph`) only copies constants. Weights files are ``.npz``
files with these keys, read with ``allow_pickle=False``; ``sde-jax convert-inception
--source=classify_image_graph_def.pb --output=inception.npz`` writes one.
"""

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

INCEPTION_URL = "http://download.tensorflow.org/models/image/imagenet/inception-2015-12-05.tgz"
"""The tarball that holds ``classify_image_graph_def.pb``, the standard FID/IS weights."""

IMAGE_SIZE = 299
NUM_FEATURES = 2048
NUM_CLASSES = 1008
BATCHNORM_EPSILON = 1e-3
PRECISION = jax.lax.Precision.HIGHEST
"""Full float32 convolutions and matmuls, as the reference graph: GPUs and TPUs would otherwise
use TF32 / bfloat16 passes, which move FID by more than its usual reporting precision."""

HOW_TO_GET_WEIGHTS = (
    f"Download {INCEPTION_URL} on a machine with network access, extract "
    "classify_image_graph_def.pb, and convert it with `sde-jax convert-inception "
    "--source=classify_image_graph_def.pb --output=inception.npz`; then pass "
    "--inception=inception.npz (or set eval.inception_path)."
)

Params = dict[str, Any]


class BatchNorm(nn.Module):
    """Inference batch norm with the graph's four constants (``beta``, ``gamma``, moving stats)."""

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """``(x - mean) / sqrt(var + 1e-3) * gamma + beta`` with the moving statistics."""
        features = x.shape[-1]
        beta = self.param("beta", nn.initializers.zeros, (features,))
        gamma = self.param("gamma", nn.initializers.ones, (features,))
        mean = self.param("moving_mean", nn.initializers.zeros, (features,))
        variance = self.param("moving_variance", nn.initializers.ones, (features,))
        return (x - mean) * jax.lax.rsqrt(variance + BATCHNORM_EPSILON) * gamma + beta


class ConvBN(nn.Module):
    """Convolution without bias, batch norm, ReLU.

    The graph's ``NAME/conv2d_params`` (HWIO) and ``NAME/batchnorm/*``.

    Attributes:
      features: output channels.
      kernel: ``(height, width)``.
      stride: the same in both directions.
      padding: ``'SAME'`` or ``'VALID'``, as in the graph.
    """

    features: int
    kernel: tuple[int, int] = (1, 1)
    stride: int = 1
    padding: str = "SAME"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Applies the layer to NHWC inputs."""
        shape = (*self.kernel, x.shape[-1], self.features)  # HWIO, as TensorFlow
        kernel = self.param("conv2d_params", nn.initializers.he_normal(), shape)
        y = jax.lax.conv_general_dilated(
            x,
            kernel.astype(x.dtype),
            (self.stride, self.stride),
            self.padding,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=PRECISION,
        )
        return nn.relu(BatchNorm(name="batchnorm")(y))


class Tower(nn.Module):
    """Convolutions in sequence, named ``conv``, ``conv_1``, ``conv_2`` ... as in the graph.

    Attributes:
      layers: ``(features, kernel, stride, padding)`` of each convolution.
      split: end with the graph's ``mixed`` scope of the E blocks: a 1x3 (``mixed/conv``) and a
        3x1 (``mixed/conv_1``) convolution of 384 channels side by side, concatenated.
    """

    layers: Sequence[tuple[int, tuple[int, int], int, str]]
    split: bool = False

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Applies the convolutions in order to NHWC inputs."""
        for i, (features, kernel, stride, padding) in enumerate(self.layers):
            name = "conv" if i == 0 else f"conv_{i}"
            x = ConvBN(features, kernel, stride, padding, name=name)(x)
        if self.split:
            x = SplitE(name="mixed")(x)
        return x


class SplitE(nn.Module):
    """The ``mixed`` scope inside an E tower: 1x3 and 3x1 convolutions side by side."""

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Both convolutions of ``x``, concatenated on channels (1x3 first)."""
        return jnp.concatenate(
            [ConvBN(384, (1, 3), name="conv")(x), ConvBN(384, (3, 1), name="conv_1")(x)], axis=-1
        )


def _conv(features: int, kernel: tuple[int, int] = (1, 1)) -> tuple:
    return (features, kernel, 1, "SAME")


def _avg_pool_same(x: Array) -> Array:
    # TensorFlow's SAME average pool divides by the number of real (unpadded) inputs.
    return nn.avg_pool(x, (3, 3), (1, 1), "SAME", count_include_pad=False)


def _max_pool_valid(x: Array) -> Array:
    return nn.max_pool(x, (3, 3), (2, 2), "VALID")


class BlockA(nn.Module):
    """``mixed``, ``mixed_1``, ``mixed_2`` (35x35): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avg-1x1."""

    pool_features: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """The four branches, concatenated on channels in the graph's order."""
        return jnp.concatenate(
            [
                ConvBN(64, name="conv")(x),
                Tower([_conv(48), _conv(64, (5, 5))], name="tower")(x),
                Tower([_conv(64), _conv(96, (3, 3)), _conv(96, (3, 3))], name="tower_1")(x),
                Tower([_conv(self.pool_features)], name="tower_2")(_avg_pool_same(x)),
            ],
            axis=-1,
        )


class BlockB(nn.Module):
    """``mixed_3`` (35 -> 17): 3x3/2 | 1x1-3x3-3x3/2 | max pool/2."""

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """The three branches, concatenated on channels in the graph's order."""
        tower = [_conv(64), _conv(96, (3, 3)), (96, (3, 3), 2, "VALID")]
        return jnp.concatenate(
            [
                ConvBN(384, (3, 3), 2, "VALID", name="conv")(x),
                Tower(tower, name="tower")(x),
                _max_pool_valid(x),
            ],
            axis=-1,
        )


class BlockC(nn.Module):
    """``mixed_4`` ... ``mixed_7`` (17x17): 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | avg-1x1."""

    channels_7x7: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """The four branches, concatenated on channels in the graph's order."""
        c = self.channels_7x7
        tower = [_conv(c), _conv(c, (1, 7)), _conv(192, (7, 1))]
        tower_1 = [_conv(c), _conv(c, (7, 1)), _conv(c, (1, 7)), _conv(c, (7, 1))]
        tower_1.append(_conv(192, (1, 7)))
        return jnp.concatenate(
            [
                ConvBN(192, name="conv")(x),
                Tower(tower, name="tower")(x),
                Tower(tower_1, name="tower_1")(x),
                Tower([_conv(192)], name="tower_2")(_avg_pool_same(x)),
            ],
            axis=-1,
        )


class BlockD(nn.Module):
    """``mixed_8`` (17 -> 8): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | max pool/2."""

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """The three branches, concatenated on channels in the graph's order."""
        tower = [_conv(192), (320, (3, 3), 2, "VALID")]
        tower_1 = [_conv(192), _conv(192, (1, 7)), _conv(192, (7, 1)), (192, (3, 3), 2, "VALID")]
        return jnp.concatenate(
            [Tower(tower, name="tower")(x), Tower(tower_1, name="tower_1")(x), _max_pool_valid(x)],
            axis=-1,
        )


class BlockE(nn.Module):
    """``mixed_9``, ``mixed_10`` (8x8): 1x1 | 1x1-(1x3, 3x1) | 1x1-3x3-(1x3, 3x1) | pool-1x1.

    Attributes:
      max_pool: the pool branch's 3x3 pool is a max pool (``mixed_10`` of the graph) instead of
        an average pool (``mixed_9``).
    """

    max_pool: bool = False

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """The four branches, concatenated on channels in the graph's order."""
        pooled = nn.max_pool(x, (3, 3), (1, 1), "SAME") if self.max_pool else _avg_pool_same(x)
        return jnp.concatenate(
            [
                ConvBN(320, name="conv")(x),
                Tower([_conv(384)], split=True, name="tower")(x),
                Tower([_conv(448), _conv(384, (3, 3))], split=True, name="tower_1")(x),
                Tower([_conv(192)], name="tower_2")(pooled),
            ],
            axis=-1,
        )


class InceptionV3(nn.Module):
    """The 2015-12-05 Inception graph from its normalized input to pool3 and the logits.

    Input ``[B, 299, 299, 3]`` already resized and mapped to ``(x - 128) / 128`` (see
    :func:`preprocess`). Returns ``(pool3 [B, 2048], logits [B, 1008])``; the logits are
    ``pool3 @ softmax/weights``, plus ``softmax/biases`` only with ``logits_bias`` (the
    Inception Score is defined without it).
    """

    logits_bias: bool = False

    @nn.compact
    def __call__(self, x: Array) -> tuple[Array, Array]:
        """``(pool3 [B, 2048], logits [B, 1008])`` of normalized ``[B, 299, 299, 3]`` images."""
        x = ConvBN(32, (3, 3), 2, "VALID", name="conv")(x)  # 149x149
        x = ConvBN(32, (3, 3), 1, "VALID", name="conv_1")(x)  # 147x147
        x = ConvBN(64, (3, 3), name="conv_2")(x)
        x = _max_pool_valid(x)  # pool: 73x73
        x = ConvBN(80, (1, 1), 1, "VALID", name="conv_3")(x)
        x = ConvBN(192, (3, 3), 1, "VALID", name="conv_4")(x)  # 71x71
        x = _max_pool_valid(x)  # pool_1: 35x35
        x = BlockA(32, name="mixed")(x)  # 256 channels
        x = BlockA(64, name="mixed_1")(x)  # 288
        x = BlockA(64, name="mixed_2")(x)  # 288
        x = BlockB(name="mixed_3")(x)  # 17x17x768
        for i, channels in enumerate((128, 160, 160, 192)):
            x = BlockC(channels, name=f"mixed_{4 + i}")(x)
        x = BlockD(name="mixed_8")(x)  # 8x8x1280
        x = BlockE(name="mixed_9")(x)  # 2048
        x = BlockE(max_pool=True, name="mixed_10")(x)
        pool3 = nn.avg_pool(x, (8, 8), (1, 1), "VALID")  # pool_3: the graph's 8x8 VALID pool
        pool3 = pool3.reshape(pool3.shape[0], NUM_FEATURES)
        return pool3, Softmax(self.logits_bias, name="softmax")(pool3)


class Softmax(nn.Module):
    """The graph's ``softmax/weights`` ``[2048, 1008]`` and ``softmax/biases``: the logits."""

    use_bias: bool = False

    @nn.compact
    def __call__(self, pool3: Array) -> Array:
        """The logits of ``pool3 [B, 2048]``."""
        shape = (NUM_FEATURES, NUM_CLASSES)
        weights = self.param("weights", nn.initializers.lecun_normal(), shape)
        biases = self.param("biases", nn.initializers.zeros, (NUM_CLASSES,))
        logits = jnp.matmul(pool3, weights.astype(pool3.dtype), precision=PRECISION)
        return logits + biases if self.use_bias else logits


def resize_bilinear_tf1(images: Float[Array, "b h w c"], size: int) -> Float[Array, "b s s c"]:
    """TensorFlow 1's ``resize_bilinear`` (``align_corners=False``, ``half_pixel_centers=False``).

    The graph's ``ResizeBilinear`` node: output pixel ``i`` samples the input at ``i * in / out``
    (no half-pixel offset, no antialiasing), interpolating linearly between the two neighbours
    and clamping at the last row/column. Done as two small matrix products.
    """

    def matrix(n_in: int) -> np.ndarray:
        position = np.arange(size) * (n_in / size)
        low = np.floor(position).astype(int)
        high = np.minimum(low + 1, n_in - 1)
        frac = position - low
        weights = np.zeros((size, n_in))
        weights[np.arange(size), low] += 1 - frac
        weights[np.arange(size), high] += frac
        return weights.astype(np.float32)

    rows, cols = matrix(images.shape[1]), matrix(images.shape[2])
    return jnp.einsum("oh,bhwc,pw->bopc", rows, images, cols, precision=PRECISION)


def preprocess(images: Float[Array, "b h w c"]) -> Float[Array, "b 299 299 3"]:
    """Images in [0, 255] (``[B, H, W, 3]`` or gray ``[B, H, W, 1]``) -> the network's input.

    As the graph: float32, gray repeated to RGB, resized to 299x299 with
    :func:`resize_bilinear_tf1`, then ``(x - 128) / 128``.
    """
    x = jnp.asarray(images, jnp.float32)
    if x.shape[-1] == 1:
        x = jnp.repeat(x, 3, axis=-1)
    if x.shape[1:3] != (IMAGE_SIZE, IMAGE_SIZE):
        x = resize_bilinear_tf1(x, IMAGE_SIZE)
    return (x - 128.0) / 128.0


def _check_images(images) -> None:
    shape = getattr(images, "shape", None)
    if shape is None or len(shape) != 4 or shape[-1] not in (1, 3):
        raise ValueError(
            f"images must be [B, H, W, 3] or [B, H, W, 1] in [0, 255], got shape {shape}."
        )


def make_feature_fn(
    params: Params, logits_bias: bool = False
) -> Callable[[Array], tuple[Array, Array]]:
    """``fn(images) -> (pool3 [B, 2048], logits [B, 1008])``, pure and jittable (not jitted).

    The function is a :class:`jax.tree_util.Partial` holding ``params`` as pytree leaves, so
    :func:`jit_feature_fn` passes the 24M weights to the compiled function as arguments instead
    of baking them into it as constants.

    Args:
      params: from :func:`load_params` (or :func:`random_params` for tests).
      logits_bias: add ``softmax/biases`` to the logits; the Inception Score of the original
        code and TF-GAN is defined without it (the default).

    Returns:
      A function of images ``[B, H, W, C]`` (C = 3, or 1 for gray) with values in [0, 255]
      (uint8 or float), any H and W; see :func:`preprocess`.
    """
    return jax.tree_util.Partial(functools.partial(_features, logits_bias=logits_bias), params)


def _features(params: Params, images: Array, *, logits_bias: bool) -> tuple[Array, Array]:
    _check_images(images)
    return InceptionV3(logits_bias=logits_bias).apply({"params": params}, preprocess(images))


def jit_feature_fn(feature_fn: Callable, **jit_kwargs) -> Callable[[Array], tuple[Array, Array]]:
    """``jax.jit`` of a feature function, keeping the weights out of the compiled code.

    The weights of a :func:`make_feature_fn` function become arguments of the compiled
    function, not compile-time constants; any other function is jitted as it is.
    """
    if not isinstance(feature_fn, jax.tree_util.Partial):
        return jax.jit(feature_fn, **jit_kwargs)
    jitted = jax.jit(lambda fn, images: fn(images), **jit_kwargs)
    return lambda images: jitted(feature_fn, images)


def random_params(key: jax.Array) -> Params:
    """Random parameters of the right shapes, for tests (not a trained network).

    Kernels He-normal (ReLU-preserving scale), softmax weights LeCun-normal, batch norm the
    identity (beta 0, gamma 1, mean 0, variance 1). Drawn per array from the shapes, which is
    much faster than tracing and compiling ``InceptionV3().init``.

    Args:
      key: a JAX PRNG key; the draws are a function of it.
    """
    # numpy draws: eager jax.random would compile one kernel per distinct shape (~50 s).
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel())
    flat = {}
    for name, shape in param_shapes().items():
        leaf = name.rsplit("/", 1)[-1]
        if leaf in ("conv2d_params", "weights"):
            fan_in = int(np.prod(shape[:-1]))
            scale = np.sqrt((2.0 if leaf == "conv2d_params" else 1.0) / fan_in)
            flat[name] = (scale * rng.standard_normal(shape)).astype(np.float32)
        elif leaf in ("gamma", "moving_variance"):
            flat[name] = np.ones(shape, np.float32)
        else:
            flat[name] = np.zeros(shape, np.float32)
    return jax.tree.map(jnp.asarray, unflatten_params(flat))


def param_shapes() -> dict[str, tuple[int, ...]]:
    """Flattened parameter path (the graph's constant name) -> shape, without running anything."""
    return dict(_param_shapes())


@functools.cache
def _param_shapes() -> tuple[tuple[str, tuple[int, ...]], ...]:
    dummy = jax.ShapeDtypeStruct((1, IMAGE_SIZE, IMAGE_SIZE, 3), jnp.float32)
    abstract = jax.eval_shape(InceptionV3().init, jax.random.key(0), dummy)["params"]
    return tuple((name, tuple(leaf.shape)) for name, leaf in flatten_params(abstract).items())


def flatten_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Nested parameters -> ``{'mixed/tower/conv/conv2d_params': array, ...}``."""
    flat = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            for sub, leaf in flatten_params(value).items():
                flat[f"{key}/{sub}"] = leaf
        else:
            flat[key] = value
    return flat


def unflatten_params(flat: Mapping[str, Any]) -> Params:
    """The inverse of :func:`flatten_params`."""
    params: Params = {}
    for name, value in flat.items():
        *scopes, leaf = name.split("/")
        node = params
        for scope in scopes:
            node = node.setdefault(scope, {})
        node[leaf] = value
    return params


def check_flat_params(flat: Mapping[str, np.ndarray], where: str) -> None:
    """Raises ValueError (naming ``where``) unless ``flat`` has exactly the network's arrays."""
    expected = param_shapes()
    missing = sorted(set(expected) - set(flat))
    extra = sorted(set(flat) - set(expected))
    if missing or extra:
        raise ValueError(
            f"{where} does not hold the Inception parameters: missing {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''} ({len(missing)}), unexpected {extra[:5]}"
            f"{' ...' if len(extra) > 5 else ''} ({len(extra)})."
        )
    for name, shape in expected.items():
        if tuple(flat[name].shape) != shape:
            raise ValueError(
                f"{where}: {name!r} has shape {tuple(flat[name].shape)}, expected {shape}."
            )


def save_params(path: str | os.PathLike, params: Params) -> None:
    """Writes parameters as an ``.npz`` of float32 arrays keyed by flattened path."""
    flat = {name: np.asarray(leaf, np.float32) for name, leaf in flatten_params(params).items()}
    check_flat_params(flat, "params")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        np.savez(f, **flat)


def load_params(path: str | os.PathLike | None) -> Params:
    """Reads an Inception weights file (``.npz``, ``allow_pickle=False``) and checks every shape.

    Raises:
      FileNotFoundError: if ``path`` is None or missing, saying how to get and convert the
        standard weights.
      ValueError: if the file lacks a parameter, has extra ones, or a shape differs.
    """
    if path is None or not os.path.exists(path):
        what = "no Inception weights file given" if path is None else f"{path!r} does not exist"
        raise FileNotFoundError(
            f"FID/IS/KID need the Inception weights: {what}. {HOW_TO_GET_WEIGHTS}"
        )
    with np.load(path, allow_pickle=False) as f:
        flat = {name: f[name] for name in f.files}
    check_flat_params(flat, repr(str(path)))
    return jax.tree.map(jnp.asarray, unflatten_params(flat))
