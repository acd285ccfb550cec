import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from sde_jax import images


def smallest_factor(tile, width, min_tile=32, min_width=512):
    """Brute force: the first f whose upscaled tile and width meet both minimums."""
    f = 1
    while f * min(tile) < min_tile or f * width < min_width:
        f += 1
    return f


def random_images(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.float32) / 255.0


@pytest.mark.parametrize(
    ("tile", "width", "expected"),
    [
        ((8, 8), 12 * 9 + 1, 5),  # 8x8 digits, 12 columns: width 109 -> 545 (tile 40 >= 32)
        ((16, 16), 8 * 17 + 1, 4),  # the quickstart's 64 16x16 digits: 137 -> 548
        ((32, 32), 4 * 33 + 1, 4),  # 16 CIFAR-10 images: 133 -> 532
        ((32, 32), 16 * 33 + 1, 1),  # 256 CIFAR-10 images: already 529 wide
        ((256, 256), 2 * 257 + 1, 1),  # CelebA-HQ
        ((256, 256), 256 + 2, 2),  # one 256 px image: the width rule alone (258 -> 516)
    ],
)
def test_viewing_factor_follows_the_rule(tile, width, expected):
    assert images.viewing_factor(tile, width) == expected == smallest_factor(tile, width)


@pytest.mark.parametrize("tile", [(1, 1), (5, 7), (8, 8), (31, 40), (32, 32), (100, 3)])
@pytest.mark.parametrize("width", [1, 37, 109, 511, 512, 2000])
def test_viewing_factor_is_the_smallest_that_meets_both_minimums(tile, width):
    f = images.viewing_factor(tile, width)
    assert f == smallest_factor(tile, width)
    assert f * min(tile) >= 32 and f * width >= 512
    assert f == 1 or (f - 1) * min(tile) < 32 or (f - 1) * width < 512


def test_image_grid_of_8x8_digits_in_12_columns_is_upscaled_by_5():
    x = random_images((24, 8, 8, 1))
    grid = images.image_grid(x, columns=12)
    raw = images.image_grid(x, columns=12, min_tile=1, min_width=1)
    assert raw.shape == (2 * 9 + 1, 12 * 9 + 1, 1)
    assert grid.shape == (5 * raw.shape[0], 5 * raw.shape[1], 1)
    assert grid.shape[1] >= 512 and 5 * 8 >= 32


def test_image_grid_leaves_large_images_alone():
    x = random_images((4, 256, 256, 3))
    grid = images.image_grid(x)
    np.testing.assert_array_equal(grid, images.image_grid(x, min_tile=1, min_width=1))
    assert grid.shape == (2 * 257 + 1, 2 * 257 + 1, 3)


def test_raw_grid_places_each_image_between_black_separators():
    x = random_images((5, 3, 4, 3))
    raw = images.image_grid(x, columns=3, min_tile=1, min_width=1)
    assert raw.shape == (2 * 4 + 1, 3 * 5 + 1, 3)
    for i in range(5):
        top, left = 1 + (i // 3) * 4, 1 + (i % 3) * 5
        np.testing.assert_array_equal(raw[top : top + 3, left : left + 4], np.round(x[i] * 255))
    assert not raw[0].any() and not raw[:, 0].any() and not raw[4].any()
    assert not raw[5:, 11:].any()  # the empty sixth slot


@pytest.mark.parametrize("channels", [1, 3])
def test_upscaled_grid_is_pixel_exact_and_keeps_dtype_and_channels(channels):
    x = random_images((16, 8, 8, channels), seed=channels)
    grid = images.image_grid(x)
    raw = images.image_grid(x, min_tile=1, min_width=1)
    f = grid.shape[0] // raw.shape[0]
    assert f == images.viewing_factor((8, 8), raw.shape[1]) == 14  # 4 columns: 37 px, 13 x 37 < 512
    assert grid.dtype == np.uint8 and grid.shape == (f * raw.shape[0], f * raw.shape[1], channels)
    np.testing.assert_array_equal(grid[::f, ::f], raw)  # striding recovers the raw grid
    for i, j in [(0, 0), (1, 1), (5, 7), (raw.shape[0] - 1, raw.shape[1] - 1)]:
        block = grid[i * f : (i + 1) * f, j * f : (j + 1) * f]
        np.testing.assert_array_equal(block, np.broadcast_to(raw[i, j], (f, f, channels)))


def test_upscale_nearest_blocks():
    image = np.arange(6, dtype=np.uint8).reshape(2, 3, 1)
    expected = np.array([[0, 0, 1, 1, 2, 2]] * 2 + [[3, 3, 4, 4, 5, 5]] * 2, np.uint8)[..., None]
    np.testing.assert_array_equal(images.upscale_nearest(image, 2), expected)
    np.testing.assert_array_equal(images.upscale_nearest(image, 1), image)


@pytest.mark.parametrize("channels", [1, 3])
def test_png_round_trip_has_the_upscaled_width(tmp_path, channels):
    x = random_images((64, 16, 16, channels))
    grid = images.image_grid(x)
    path = str(tmp_path / "sub" / "grid.png")
    images.save_png(path, grid)
    decoded = tf.io.decode_png(tf.io.read_file(path)).numpy()
    assert decoded.shape == (548, 548, channels)  # 8 columns of 16 px: 137 raw, factor 4
    np.testing.assert_array_equal(decoded, grid)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"min_tile": 0}, "min_tile"),
        ({"min_width": -1}, "min_width"),
        ({"min_tile": 2.5}, "min_tile"),
        ({"columns": 0}, "columns"),
        ({"padding": -1}, "padding"),
    ],
)
def test_image_grid_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        images.image_grid(random_images((4, 8, 8, 1)), **kwargs)


def test_bad_shapes_and_factors_are_rejected():
    with pytest.raises(ValueError, match="images"):
        images.image_grid(np.zeros((8, 8, 1)))
    with pytest.raises(ValueError, match="images"):
        images.image_grid(np.zeros((0, 8, 8, 1)))
    with pytest.raises(ValueError, match="factor"):
        images.upscale_nearest(np.zeros((2, 2, 1), np.uint8), 0)
    with pytest.raises(ValueError, match="image"):
        images.upscale_nearest(np.zeros((2, 2), np.uint8), 2)
    with pytest.raises(ValueError, match="tile_size"):
        images.viewing_factor((8, 0), 100)
    with pytest.raises(ValueError, match="width"):
        images.viewing_factor((8, 8), 0)


def previous_formula(x, centered):
    """The conversion each writer spelled out before :func:`images.to_uint8`."""
    unit = (x + 1) / 2 if centered else x
    return np.round(np.clip(unit, 0.0, 1.0) * 255).astype(np.uint8)


EDGES = np.array(
    [-np.inf, -3.0, -1e-7, 0.0, 0.5 / 255, 1.5 / 255, 0.5, 254.5 / 255, 1.0, 1.0 + 1e-7, 2.0]
    + [np.inf]
    + [(k + 0.5) / 255 for k in range(255)]  # every rounding boundary between two levels
    + [
        np.nextafter(np.float32((k + 0.5) / 255), np.float32(d))
        for k in (0, 127, 254)
        for d in (0, 1)
    ],
    np.float32,
)


@pytest.mark.parametrize("centered", [False, True])
def test_to_uint8_equals_the_previous_formula_on_edge_values(centered):
    x = 2 * EDGES - 1 if centered else EDGES
    expected = previous_formula(x, centered)
    for got in (
        images.to_uint8(x, centered),
        np.asarray(jax.jit(images.to_uint8, static_argnums=1)(jnp.asarray(x), centered)),
    ):
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, expected)
    unit = images.to_uint8(EDGES)
    # Out of range clips; the exact half-way value 127.5 rounds to even.
    assert unit[[0, 1, 2, 3, 6, 8, 9, 10, 11]].tolist() == [0, 0, 0, 0, 128, 255, 255, 255, 255]


def test_to_uint8_takes_boolean_masks_as_unit_values():
    mask = np.array([[0, 1], [1, 0]], bool)
    np.testing.assert_array_equal(images.to_uint8(mask), [[0, 255], [255, 0]])
    np.testing.assert_array_equal(images.to_uint8(mask.astype(np.float32)), images.to_uint8(mask))


def test_uint8_grid_keeps_every_tile_and_refuses_floats():
    tiles = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3)).astype(np.uint8)
    grid = images.uint8_grid(tiles, columns=3)
    f = images.viewing_factor((8, 8), 3 * 9 + 1)
    for i, tile in enumerate(tiles):
        top, left = 1 + (i // 3) * 9, 1 + (i % 3) * 9
        np.testing.assert_array_equal(
            grid[top * f : (top + 8) * f : f, left * f : (left + 8) * f : f], tile
        )
    with pytest.raises(TypeError, match="uint8"):
        images.uint8_grid(tiles.astype(np.float32))
