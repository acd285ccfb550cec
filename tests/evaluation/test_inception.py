"""The Flax Inception of FID/IS: the reference network's parameter shapes, TensorFlow semantics
of its layers and preprocessing, the GraphDef converter and the weights file format."""

import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from sde_jax.evaluation import inception, inception_graph

# The parameters of the 2015-12-05 graph, by node name, written from the published facts:
# torchvision's Inception3 layer shapes (which pytorch-fid loads the converted graph into) and
# pytorch-fid's map from graph scopes to those layers (mixed = Mixed_5b ... mixed_10 =
# Mixed_7c; tower = the second branch, tower_1 the third, tower_2 the pool branch).
CONVS = {
    "conv": (3, 3, 3, 32),
    "conv_1": (3, 3, 32, 32),
    "conv_2": (3, 3, 32, 64),
    "conv_3": (1, 1, 64, 80),
    "conv_4": (3, 3, 80, 192),
}


def _block_a(name, cin, pool_features):
    return {
        f"{name}/conv": (1, 1, cin, 64),
        f"{name}/tower/conv": (1, 1, cin, 48),
        f"{name}/tower/conv_1": (5, 5, 48, 64),
        f"{name}/tower_1/conv": (1, 1, cin, 64),
        f"{name}/tower_1/conv_1": (3, 3, 64, 96),
        f"{name}/tower_1/conv_2": (3, 3, 96, 96),
        f"{name}/tower_2/conv": (1, 1, cin, pool_features),
    }


def _block_c(name, c7):
    return {
        f"{name}/conv": (1, 1, 768, 192),
        f"{name}/tower/conv": (1, 1, 768, c7),
        f"{name}/tower/conv_1": (1, 7, c7, c7),
        f"{name}/tower/conv_2": (7, 1, c7, 192),
        f"{name}/tower_1/conv": (1, 1, 768, c7),
        f"{name}/tower_1/conv_1": (7, 1, c7, c7),
        f"{name}/tower_1/conv_2": (1, 7, c7, c7),
        f"{name}/tower_1/conv_3": (7, 1, c7, c7),
        f"{name}/tower_1/conv_4": (1, 7, c7, 192),
        f"{name}/tower_2/conv": (1, 1, 768, 192),
    }


def _block_e(name, cin):
    return {
        f"{name}/conv": (1, 1, cin, 320),
        f"{name}/tower/conv": (1, 1, cin, 384),
        f"{name}/tower/mixed/conv": (1, 3, 384, 384),
        f"{name}/tower/mixed/conv_1": (3, 1, 384, 384),
        f"{name}/tower_1/conv": (1, 1, cin, 448),
        f"{name}/tower_1/conv_1": (3, 3, 448, 384),
        f"{name}/tower_1/mixed/conv": (1, 3, 384, 384),
        f"{name}/tower_1/mixed/conv_1": (3, 1, 384, 384),
        f"{name}/tower_2/conv": (1, 1, cin, 192),
    }


CONVS.update(_block_a("mixed", 192, 32))
CONVS.update(_block_a("mixed_1", 256, 64))
CONVS.update(_block_a("mixed_2", 288, 64))
CONVS.update(
    {
        "mixed_3/conv": (3, 3, 288, 384),
        "mixed_3/tower/conv": (1, 1, 288, 64),
        "mixed_3/tower/conv_1": (3, 3, 64, 96),
        "mixed_3/tower/conv_2": (3, 3, 96, 96),
    }
)
for _i, _c7 in enumerate((128, 160, 160, 192)):
    CONVS.update(_block_c(f"mixed_{4 + _i}", _c7))
CONVS.update(
    {
        "mixed_8/tower/conv": (1, 1, 768, 192),
        "mixed_8/tower/conv_1": (3, 3, 192, 320),
        "mixed_8/tower_1/conv": (1, 1, 768, 192),
        "mixed_8/tower_1/conv_1": (1, 7, 192, 192),
        "mixed_8/tower_1/conv_2": (7, 1, 192, 192),
        "mixed_8/tower_1/conv_3": (3, 3, 192, 192),
    }
)
CONVS.update(_block_e("mixed_9", 1280))
CONVS.update(_block_e("mixed_10", 2048))

EXPECTED = {"softmax/weights": (2048, 1008), "softmax/biases": (1008,)}
for _scope, _shape in CONVS.items():
    EXPECTED[f"{_scope}/conv2d_params"] = _shape
    for _leaf in ("beta", "gamma", "moving_mean", "moving_variance"):
        EXPECTED[f"{_scope}/batchnorm/{_leaf}"] = (_shape[-1],)

# Stride-2 and other VALID convolutions of the graph (299 -> 149 -> 147 ... -> 35 -> 17 -> 8).
VALID = {
    "conv": 2,
    "conv_1": 1,
    "conv_3": 1,
    "conv_4": 1,
    "mixed_3/conv": 2,
    "mixed_3/tower/conv_2": 2,
    "mixed_8/tower/conv_1": 2,
    "mixed_8/tower_1/conv_3": 2,
}


def test_parameter_shapes_are_those_of_the_2015_graph():
    assert inception.param_shapes() == EXPECTED
    trainable = sum(int(np.prod(s)) for name, s in EXPECTED.items() if "moving_" not in name)
    # torchvision's Inception3 has 27,161,264 parameters; without its auxiliary classifier
    # (3,326,696) and with 1008 instead of 1000 classes (+8 x 2049) it is this network.
    assert trainable == 27_161_264 - 3_326_696 + 8 * 2049 == 23_850_960


def test_convolution_strides_and_padding():
    layouts = inception_graph.conv_layouts()
    assert set(layouts) == set(CONVS)
    for scope, (stride, padding) in layouts.items():
        expected = (VALID[scope], "VALID") if scope in VALID else (1, "SAME")
        assert (stride, padding) == expected, scope


def test_full_network_shapes_at_299():
    params = inception.unflatten_params(
        {name: jax.ShapeDtypeStruct(shape, jnp.float32) for name, shape in EXPECTED.items()}
    )
    images = jax.ShapeDtypeStruct((3, 299, 299, 3), jnp.uint8)
    pool3, logits = jax.eval_shape(lambda p, x: inception.make_feature_fn(p)(x), params, images)
    assert pool3.shape == (3, 2048) and logits.shape == (3, 1008)


def test_jitted_feature_fn_takes_the_weights_as_arguments():
    params = inception.unflatten_params(
        {name: jax.ShapeDtypeStruct(shape, jnp.float32) for name, shape in EXPECTED.items()}
    )
    feature_fn = inception.make_feature_fn(params)
    images = jax.ShapeDtypeStruct((2, 299, 299, 3), jnp.uint8)
    # The traced call of jit_feature_fn: weights as inputs, no weight-sized constants.
    closed = jax.make_jaxpr(lambda fn, x: fn(x))(feature_fn, images)
    assert len(closed.jaxpr.invars) == len(EXPECTED) + 1
    assert sum(np.size(c) for c in closed.consts) < 10_000


def test_preprocess_matches_the_graph_ops():
    """TF1 resize_bilinear (the graph's ResizeBilinear node), then (x - 128) / 128."""
    images = np.random.default_rng(1).integers(0, 256, (2, 13, 21, 3)).astype(np.float32)
    expected = tf.compat.v1.image.resize_bilinear(
        images, [299, 299], align_corners=False, half_pixel_centers=False
    ).numpy()
    got = inception.preprocess(images)
    np.testing.assert_allclose(got, (expected - 128) / 128, atol=1e-5)
    gray = inception.preprocess(images[..., :1])
    np.testing.assert_allclose(gray, np.repeat(got[..., :1], 3, axis=-1), atol=1e-6)


def test_pools_and_conv_bn_match_tensorflow():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 7, 7, 5)).astype(np.float32)
    np.testing.assert_allclose(
        inception._avg_pool_same(x), tf.nn.avg_pool2d(x, 3, 1, "SAME"), atol=1e-6
    )
    np.testing.assert_allclose(
        inception._max_pool_valid(x), tf.nn.max_pool2d(x, 3, 2, "VALID"), atol=1e-6
    )
    for stride, padding, kernel in [(1, "SAME", (1, 3)), (2, "VALID", (3, 3))]:
        module = inception.ConvBN(4, kernel, stride, padding)
        variables = module.init(jax.random.key(1), x)
        bn = {k: rng.uniform(0.5, 2.0, 4).astype(np.float32) for k in ("gamma", "moving_variance")}
        bn.update({k: rng.normal(size=4).astype(np.float32) for k in ("beta", "moving_mean")})
        p = {"conv2d_params": variables["params"]["conv2d_params"], "batchnorm": bn}
        y = tf.nn.conv2d(x, np.asarray(p["conv2d_params"]), stride, padding)
        y = tf.nn.batch_normalization(
            y, bn["moving_mean"], bn["moving_variance"], bn["beta"], bn["gamma"], 1e-3
        )
        got = module.apply({"params": p}, x)
        np.testing.assert_allclose(got, tf.nn.relu(y), rtol=1e-5, atol=1e-5)


def _const(name, array):
    node = tf.compat.v1.NodeDef(name=name, op="Const")
    node.attr["dtype"].type = tf.float32.as_datatype_enum
    node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(array))
    return node


def _synthetic_graph(path, values, scale_after_normalization=True, conv_padding=None):
    """A GraphDef with a Const node per parameter (random values) and, for a few scopes, the
    ops that use them, as in classify_image_graph_def.pb; plus unrelated constants."""
    graph = tf.compat.v1.GraphDef()
    graph.node.append(_const("Sub/y", np.float32(128)))
    for name, value in values.items():
        graph.node.append(_const(name, value))
    for scope in ("conv", "mixed_3/conv", "mixed_10/tower/mixed/conv_1"):
        conv = tf.compat.v1.NodeDef(name=f"{scope}/Conv2D", op="Conv2D")
        stride = VALID.get(scope, 1)
        conv.attr["strides"].list.i.extend([1, stride, stride, 1])
        padding = "VALID" if scope in VALID else "SAME"
        conv.attr["padding"].s = (conv_padding or padding).encode()
        bn = tf.compat.v1.NodeDef(name=f"{scope}/batchnorm", op="BatchNormWithGlobalNormalization")
        bn.attr["variance_epsilon"].f = 1e-3
        bn.attr["scale_after_normalization"].b = scale_after_normalization
        graph.node.extend([conv, bn])
    path.write_bytes(graph.SerializeToString())
    return path


@pytest.fixture(scope="module")
def graph_values():
    rng = np.random.default_rng(3)
    return {name: rng.normal(size=shape).astype(np.float32) for name, shape in EXPECTED.items()}


def test_convert_inception_command_round_trip(tmp_path, graph_values):
    """GraphDef constants -> `sde-jax convert-inception` -> .npz -> load_params: identical."""
    source = _synthetic_graph(tmp_path / "classify_image_graph_def.pb", graph_values)
    output = tmp_path / "inception.npz"
    code = "from sde_jax.apps.cli import run; import sys; run(sys.argv)"
    args = ["convert-inception", f"--source={source}", f"--output={output}", "--noverify"]
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).resolve().parents[2])},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = inception.flatten_params(inception.load_params(output))
    assert set(loaded) == set(graph_values)
    for name, value in graph_values.items():
        np.testing.assert_array_equal(np.asarray(loaded[name]), value, err_msg=name)


def test_converter_reads_the_graphs_batchnorm_and_convolution_attributes(tmp_path, graph_values):
    # Where the graph's batch norm ignores gamma (scale_after_normalization false), so do we.
    source = _synthetic_graph(tmp_path / "g.pb", graph_values, scale_after_normalization=False)
    flat = inception.flatten_params(inception_graph.convert_graphdef(source))
    np.testing.assert_array_equal(flat["conv/batchnorm/gamma"], np.ones(32, np.float32))
    np.testing.assert_array_equal(
        flat["mixed_1/conv/batchnorm/gamma"], graph_values["mixed_1/conv/batchnorm/gamma"]
    )
    source = _synthetic_graph(tmp_path / "bad.pb", graph_values, conv_padding="SAME")
    with pytest.raises(ValueError, match=r"conv/Conv2D.*padding"):
        inception_graph.convert_graphdef(source)


def test_converter_errors(tmp_path, graph_values):
    values = dict(graph_values)
    del values["mixed_7/tower_1/conv_4/conv2d_params"]
    source = _synthetic_graph(tmp_path / "missing.pb", values)
    with pytest.raises(ValueError, match="mixed_7/tower_1/conv_4/conv2d_params"):
        inception_graph.convert_graphdef(source)
    values["mixed_7/tower_1/conv_4/conv2d_params"] = np.zeros((7, 1, 192, 192), np.float32)
    source = _synthetic_graph(tmp_path / "transposed.pb", values)
    with pytest.raises(ValueError, match=r"\(1, 7, 192, 192\)"):
        inception_graph.convert_graphdef(source)
    with pytest.raises(FileNotFoundError, match=r"inception-2015-12-05\.tgz"):
        inception_graph.convert_graphdef(tmp_path / "nothing.pb")


def test_load_params_errors(tmp_path, graph_values):
    with pytest.raises(FileNotFoundError, match="convert-inception"):
        inception.load_params(None)
    with pytest.raises(FileNotFoundError, match=r"inception-2015-12-05\.tgz"):
        inception.load_params(tmp_path / "missing.npz")
    values = dict(graph_values)
    values.pop("softmax/biases")
    np.savez(tmp_path / "incomplete.npz", **values)
    with pytest.raises(ValueError, match="softmax/biases"):
        inception.load_params(tmp_path / "incomplete.npz")
    values["softmax/biases"] = np.array([object()], dtype=object)
    np.savez(tmp_path / "pickled.npz", **values)
    with pytest.raises(ValueError, match="allow_pickle"):
        inception.load_params(tmp_path / "pickled.npz")


def test_feature_fn_rejects_bad_images():
    fn = inception.make_feature_fn({})  # images are checked before parameters are used
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        fn(np.zeros((2, 16, 16, 2), np.uint8))


def _tf_reference_graph(values):
    """The reference network built from TensorFlow ops, with the 2015 graph's node names: its
    input ``ExpandDims``, ``ResizeBilinear``, ``Sub``/``Mul``, the parameter constants, the
    ``Conv2D`` ops, ``pool_3`` and ``softmax/logits/MatMul``."""
    tf1 = tf.compat.v1

    def conv(scope, x):
        w = tf.constant(values[f"{scope}/conv2d_params"], name=f"{scope}/conv2d_params")
        stride = VALID.get(scope, 1)
        padding = "VALID" if scope in VALID else "SAME"
        y = tf.nn.conv2d(x, w, [1, stride, stride, 1], padding, name=f"{scope}/Conv2D")
        bn = {
            k: tf.constant(values[f"{scope}/batchnorm/{k}"], name=f"{scope}/batchnorm/{k}")
            for k in ("beta", "gamma", "moving_mean", "moving_variance")
        }
        y = (y - bn["moving_mean"]) * tf.math.rsqrt(bn["moving_variance"] + 1e-3)
        return tf.nn.relu(y * bn["gamma"] + bn["beta"])

    def tower(scope, x, n):
        for i in range(n):
            x = conv(f"{scope}/conv" if i == 0 else f"{scope}/conv_{i}", x)
        return x

    def split(scope, x):
        return tf.concat([conv(f"{scope}/mixed/conv", x), conv(f"{scope}/mixed/conv_1", x)], -1)

    def avg(x):
        return tf.nn.avg_pool2d(x, 3, 1, "SAME")

    def max_valid(x):
        return tf.nn.max_pool2d(x, 3, 2, "VALID")

    graph = tf.Graph()
    with graph.as_default():
        x = tf1.placeholder(tf.float32, [1, None, None, 3], name="ExpandDims")
        x = tf1.image.resize_bilinear(x, [299, 299], name="ResizeBilinear")
        x = tf.multiply(tf.subtract(x, 128.0, name="Sub"), 1 / 128, name="Mul")
        for scope in ("conv", "conv_1", "conv_2"):
            x = conv(scope, x)
        x = max_valid(x)
        x = max_valid(conv("conv_4", conv("conv_3", x)))
        for name in ("mixed", "mixed_1", "mixed_2"):
            branches = [conv(f"{name}/conv", x), tower(f"{name}/tower", x, 2)]
            branches += [tower(f"{name}/tower_1", x, 3), conv(f"{name}/tower_2/conv", avg(x))]
            x = tf.concat(branches, -1)
        x = tf.concat([conv("mixed_3/conv", x), tower("mixed_3/tower", x, 3), max_valid(x)], -1)
        for name in ("mixed_4", "mixed_5", "mixed_6", "mixed_7"):
            branches = [conv(f"{name}/conv", x), tower(f"{name}/tower", x, 3)]
            branches += [tower(f"{name}/tower_1", x, 5), conv(f"{name}/tower_2/conv", avg(x))]
            x = tf.concat(branches, -1)
        branches = [tower("mixed_8/tower", x, 2), tower("mixed_8/tower_1", x, 4), max_valid(x)]
        x = tf.concat(branches, -1)
        for name in ("mixed_9", "mixed_10"):
            pooled = avg(x) if name == "mixed_9" else tf.nn.max_pool2d(x, 3, 1, "SAME")
            branches = [conv(f"{name}/conv", x)]
            branches.append(split(f"{name}/tower", tower(f"{name}/tower", x, 1)))
            branches.append(split(f"{name}/tower_1", tower(f"{name}/tower_1", x, 2)))
            branches.append(conv(f"{name}/tower_2/conv", pooled))
            x = tf.concat(branches, -1)
        pool3 = tf.nn.avg_pool2d(x, 8, 1, "VALID", name="pool_3")
        weights = tf.constant(values["softmax/weights"], name="softmax/weights")
        biases = tf.constant(values["softmax/biases"], name="softmax/biases")
        logits = tf.matmul(tf.reshape(pool3, [-1, 2048]), weights, name="softmax/logits/MatMul")
        tf.nn.softmax(logits + biases, name="softmax")
    return graph.as_graph_def()


@pytest.fixture(scope="module")
def network_values():
    """Random but well-scaled weights (He-normal kernels, batch norm near the identity)."""
    rng = np.random.default_rng(4)
    values = {}
    for name, shape in EXPECTED.items():
        leaf = name.rsplit("/", 1)[-1]
        if leaf in ("conv2d_params", "weights"):
            values[name] = rng.normal(size=shape) * np.sqrt(2 / np.prod(shape[:-1]))
        elif leaf in ("gamma", "moving_variance"):
            values[name] = rng.uniform(0.8, 1.2, size=shape)
        else:
            values[name] = rng.normal(size=shape) * 0.1
    return {name: value.astype(np.float32) for name, value in values.items()}


def test_converted_network_equals_the_tensorflow_graph(tmp_path, network_values):
    """convert-inception's check: the graph run by TensorFlow (its resize, SAME pools that
    exclude padding, max pool in mixed_10 ...) and the converted Flax network agree."""
    source = tmp_path / "classify_image_graph_def.pb"
    source.write_bytes(_tf_reference_graph(network_values).SerializeToString())
    output = tmp_path / "inception.npz"
    diffs = inception_graph.convert(source, output, verify=True)
    assert diffs["pool3_max_abs"] > 0.1 and diffs["logits_max_abs"] > 0.1  # not trivial
    assert diffs["pool3_max_abs_diff"] < 1e-4 * diffs["pool3_max_abs"], diffs
    assert diffs["logits_max_abs_diff"] < 1e-4 * diffs["logits_max_abs"], diffs
    loaded = inception.flatten_params(inception.load_params(output))
    np.testing.assert_array_equal(
        loaded["mixed_10/conv/conv2d_params"], network_values["mixed_10/conv/conv2d_params"]
    )
