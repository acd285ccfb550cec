"""The one sample writer: the .npz and the PNG grids hold exactly the pixels written."""

import os

import numpy as np
import pytest
import tensorflow as tf

from sde_jax import images
from sde_jax.apps import writers


def test_npz_and_png_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    samples = rng.integers(0, 256, (6, 8, 8, 3)).astype(np.uint8)
    labels = np.arange(6, dtype=np.int32)
    path = str(tmp_path / "sub" / "out.npz")
    grids = [writers.Grid(samples), writers.Grid(samples[:2], columns=1, suffix="_first")]
    written = writers.write_samples(path, {"samples": samples, "labels": labels, "step": 3}, grids)
    stem = str(tmp_path / "sub" / "out")
    assert written == [path, stem + ".png", stem + "_first.png"]
    assert sorted(os.listdir(tmp_path / "sub")) == ["out.npz", "out.png", "out_first.png"]

    with np.load(path, allow_pickle=False) as stored:
        assert sorted(stored.files) == ["labels", "samples", "step"]
        assert stored["samples"].dtype == np.uint8
        np.testing.assert_array_equal(stored["samples"], samples)
        np.testing.assert_array_equal(stored["labels"], labels)
        assert int(stored["step"]) == 3
    for grid, png in zip(grids, written[1:], strict=True):
        decoded = tf.io.decode_png(tf.io.read_file(png)).numpy()
        np.testing.assert_array_equal(decoded, images.uint8_grid(grid.tiles, grid.columns))
    # Every pixel of every tile comes back: tile i of the 3-column grid, upscaled by f.
    decoded = tf.io.decode_png(tf.io.read_file(written[1])).numpy()
    f = images.viewing_factor((8, 8), 3 * 9 + 1)
    for i, tile in enumerate(samples):
        top, left = 1 + (i // 3) * 9, 1 + (i % 3) * 9
        np.testing.assert_array_equal(
            decoded[top * f : (top + 8) * f : f, left * f : (left + 8) * f : f], tile
        )


def test_paths_follow_numpy_savez(tmp_path):
    """Like ``np.savez``, a path without ``.npz`` gets it; the PNG replaces the extension."""
    one = np.zeros((1, 2, 2, 1), np.uint8)
    written = writers.write_samples(str(tmp_path / "plain"), {"x": one}, [writers.Grid(one)])
    assert written == [str(tmp_path / "plain.npz"), str(tmp_path / "plain.png")]
    assert writers.npz_path("a/b.tar") == "a/b.tar.npz" and writers.png_path("a/b.tar") == "a/b.png"
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]  # the temporary file is renamed


def test_any_array_name_is_a_key(tmp_path):
    """``interpolate`` stores its decoded path under the key ``path``."""
    path = str(tmp_path / "interpolate.npz")
    writers.write_samples(path, {"path": np.ones((2, 3), np.uint8), "step": 1})
    with np.load(path) as stored:
        assert sorted(stored.files) == ["path", "step"] and stored["path"].sum() == 6


def test_a_grid_of_floats_is_refused(tmp_path):
    with pytest.raises(TypeError, match="uint8"):
        writers.write_samples(
            str(tmp_path / "x.npz"), {}, [writers.Grid(np.zeros((1, 2, 2, 1), np.float32))]
        )
