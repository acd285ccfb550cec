"""The 2015 Inception TensorFlow graph: weights conversion and a check of our network against it.

``classify_image_graph_def.pb`` (in the tarball
:data:`sde_jax.evaluation.inception.INCEPTION_URL`) is a protobuf ``GraphDef``.
:func:`convert_graphdef` parses it with TensorFlow's protobuf parser and copies the ``Const``
nodes named by the parameter paths of :class:`sde_jax.evaluation.inception.InceptionV3`
(nothing is executed, nothing unpickled). :func:`compare_with_graph` does run the graph, in
TensorFlow, on a few images and reports how far the Flax network's pool3 features and logits
are from the graph's: the proof that the converted network is the reference one.
``sde-jax convert-inception`` does both. pytorch-fid's ``.pth`` weights are not accepted: they
can only be read by unpickling (``torch.load``).
"""

import functools
import os
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from sde_jax.evaluation import inception
from sde_jax.evaluation.inception import Params

GRAPH_INPUT = "ExpandDims:0"
"""The graph's float image input ``[1, H, W, 3]`` in [0, 255], before its resize (as TTUR's
FID code feeds it); one image at a time, as the graph's shapes are fixed to batch 1."""
GRAPH_POOL3 = "pool_3:0"
GRAPH_LOGITS = "softmax/logits/MatMul:0"
"""``pool3 @ softmax/weights``: the logits of the Inception Score, without the bias."""


def _read_graph(source: str | os.PathLike):
    import tensorflow as tf

    if not os.path.exists(source):
        raise FileNotFoundError(f"no GraphDef at {str(source)!r}. {inception.HOW_TO_GET_WEIGHTS}")
    graph = tf.compat.v1.GraphDef()
    with open(source, "rb") as f:
        graph.ParseFromString(f.read())
    return graph


def convert_graphdef(source: str | os.PathLike) -> Params:
    """Reads the parameters of ``classify_image_graph_def.pb``.

    Takes the ``Const`` node named by each parameter path (``tf.make_ndarray``; other nodes are
    ignored). Where the graph holds the ops that use them, it also checks that they compute what
    :class:`~sde_jax.evaluation.inception.InceptionV3` computes: each ``NAME/batchnorm`` op has
    epsilon 1e-3 (and where its ``scale_after_normalization`` is false, the graph ignores
    ``gamma``, so gamma is set to 1), and each ``NAME/Conv2D`` op has the module's strides and
    padding.

    Raises:
      FileNotFoundError: if ``source`` does not exist, saying where the graph comes from.
      ValueError: if a constant is missing or has another shape, or an op disagrees.
    """
    import tensorflow as tf

    nodes = {node.name: node for node in _read_graph(source).node}
    flat = {}
    for name in inception.param_shapes():
        node = nodes.get(name)
        if node is None or node.op != "Const":
            raise ValueError(f"{str(source)!r} has no Const node {name!r}; is it the 2015 graph?")
        flat[name] = np.asarray(tf.make_ndarray(node.attr["value"].tensor), np.float32)
    inception.check_flat_params(flat, repr(str(source)))
    for name in list(flat):
        if name.endswith("/batchnorm/gamma"):
            _check_batchnorm(nodes.get(name.rsplit("/", 1)[0]), flat, name)
    _check_convolutions(nodes)
    return inception.unflatten_params(flat)


def _check_batchnorm(node, flat: dict, gamma_name: str) -> None:
    if node is None:
        return
    epsilon = node.attr.get("variance_epsilon", None)
    if epsilon is not None and not np.isclose(epsilon.f, inception.BATCHNORM_EPSILON):
        raise ValueError(
            f"{node.name!r} has epsilon {epsilon.f}, expected {inception.BATCHNORM_EPSILON}."
        )
    scale = node.attr.get("scale_after_normalization", None)
    if scale is not None and not scale.b:
        flat[gamma_name] = np.ones_like(flat[gamma_name])


def conv_layouts() -> dict[str, tuple[int, str]]:
    """Convolution scope -> ``(stride, padding)`` in ``InceptionV3``, read off the module."""
    return dict(_conv_layouts())


@functools.cache
def _conv_layouts() -> tuple[tuple[str, tuple[int, str]], ...]:
    layouts = {}

    def record(next_fun, args, kwargs, context):
        module = context.module
        if isinstance(module, inception.ConvBN) and context.method_name == "__call__":
            layouts["/".join(module.scope.path)] = (module.stride, module.padding)
        return next_fun(*args, **kwargs)

    size = inception.IMAGE_SIZE
    dummy = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    with nn.intercept_methods(record):
        jax.eval_shape(inception.InceptionV3().init, jax.random.key(0), dummy)
    return tuple(layouts.items())


def _check_convolutions(nodes: Mapping[str, Any]) -> None:
    for scope, (stride, padding) in conv_layouts().items():
        node = nodes.get(f"{scope}/Conv2D")
        if node is None:
            continue
        strides = list(node.attr["strides"].list.i)
        graph_padding = node.attr["padding"].s.decode()
        if strides != [1, stride, stride, 1] or graph_padding != padding:
            raise ValueError(
                f"{node.name!r} has strides {strides} and padding {graph_padding!r}; InceptionV3 "
                f"uses stride {stride} and {padding!r}."
            )


def check_images(size: int = 48) -> np.ndarray:
    """Deterministic uint8 test images ``[3, size, size, 3]``: noise, gradients, stripes."""
    ramp = np.linspace(0, 255, size)
    noise = np.random.default_rng(2015).integers(0, 256, (size, size, 3))
    gradient = np.stack(np.broadcast_arrays(ramp[:, None], ramp[None, :], np.full((1, 1), 128)), -1)
    stripes = np.broadcast_to((np.arange(size) // 4 % 2 * 255)[None, :, None], (size, size, 3))
    return np.stack([noise, gradient, stripes]).astype(np.uint8)


def compare_with_graph(
    source: str | os.PathLike,
    feature_fn: Callable[[Any], tuple[Any, Any]],
    images: np.ndarray,
) -> dict[str, float]:
    """Runs the graph in TensorFlow and ``feature_fn`` on the same images; the differences.

    Args:
      source: the GraphDef file.
      feature_fn: e.g. ``make_feature_fn(load_params(converted))``.
      images: uint8 ``[B, H, W, 3]``; the graph resizes them itself (its ``ResizeBilinear``).

    Returns:
      ``{'pool3_max_abs_diff', 'pool3_max_abs', 'logits_max_abs_diff', 'logits_max_abs'}``.
    """
    import tensorflow as tf

    graph_def = _read_graph(source)
    graph_pool3, graph_logits = [], []
    with tf.Graph().as_default() as graph:
        tf.compat.v1.import_graph_def(graph_def, name="")
        with tf.compat.v1.Session(graph=graph) as session:
            for image in np.asarray(images, np.float32):
                pool3, logits = session.run([GRAPH_POOL3, GRAPH_LOGITS], {GRAPH_INPUT: image[None]})
                graph_pool3.append(pool3.reshape(-1))
                graph_logits.append(logits.reshape(-1))
    pool3, logits = (np.asarray(a, np.float64) for a in feature_fn(images))
    graph_pool3, graph_logits = np.stack(graph_pool3), np.stack(graph_logits)
    return {
        "pool3_max_abs_diff": float(np.abs(pool3 - graph_pool3).max()),
        "pool3_max_abs": float(np.abs(graph_pool3).max()),
        "logits_max_abs_diff": float(np.abs(logits - graph_logits).max()),
        "logits_max_abs": float(np.abs(graph_logits).max()),
    }


VERIFY_RTOL = 1e-3
"""Largest difference from the graph accepted by :func:`convert`, relative to the largest
output (float32 convolutions in another order differ by ~1e-6 relative)."""


def convert(
    source: str | os.PathLike, output: str | os.PathLike, verify: bool = True
) -> dict[str, float] | None:
    """``sde-jax convert-inception``: converts ``source`` to ``output`` (``.npz``), then checks.

    With ``verify``, runs the graph and the converted network on :func:`check_images` and
    raises if they differ by more than :data:`VERIFY_RTOL` (relative to the largest output).

    Returns:
      The differences of :func:`compare_with_graph` with ``verify``, else None.

    Raises:
      ValueError: from :func:`convert_graphdef`, or if the outputs differ.
    """
    inception.save_params(output, convert_graphdef(source))
    logging.info("Wrote the Inception weights to %s.", output)
    if not verify:
        return None
    feature_fn = jax.jit(inception.make_feature_fn(inception.load_params(output)))
    diffs = compare_with_graph(source, feature_fn, check_images())
    logging.info("Converted network vs the TensorFlow graph: %s", diffs)
    for name in ("pool3", "logits"):
        if diffs[f"{name}_max_abs_diff"] > VERIFY_RTOL * max(diffs[f"{name}_max_abs"], 1e-6):
            raise ValueError(
                f"the converted network's {name} differ from the graph's: {diffs}. Please "
                "report this with the graph's checksum."
            )
    return diffs
