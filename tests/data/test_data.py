"""Input pipelines against truth: mocked TFDS data, the digits, and files written here."""

import collections
import itertools
import math
import time
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core import splits as tfds_splits

from configs import default
from sde_jax import data
from sde_jax.data import sources

NUM_MOCK = 20  # examples per mocked TFDS split


def config(**overrides):
    section = default.get_default_config().data
    section.update(overrides)
    return section


def digits_config(**overrides):
    return config(**{"dataset": "digits", "image_size": 8, "num_channels": 1, **overrides})


@pytest.fixture
def mock_tfds():
    with tfds.testing.mock_data(num_examples=NUM_MOCK):
        yield


def take(iterator, n, key="image"):
    return [batch[key] for batch in itertools.islice(iterator, n)]


def raw_tfds_images(name, split="train"):
    """The mocked data set's stored images, in order (call inside the mock).

    Decoded from the stored bytes: for JPEG data sets these differ from the mock's random
    arrays, which lose detail when encoded.
    """
    skip = {"image": tfds.decode.SkipDecoding()}
    stored = tfds.builder(name).as_dataset(split=split, decoders=skip)
    return [tf.io.decode_image(ex["image"]).numpy() for ex in stored]


def real_images(batches, key="image"):
    return np.concatenate([b[key][b["mask"]] for b in batches])


def multiset(images):
    return collections.Counter(image.tobytes() for image in images)


# --- scaling ------------------------------------------------------------------------------


@pytest.mark.parametrize("centered", [False, True])
def test_scaler_round_trip(centered):
    x = np.linspace(0.0, 1.0, 11, dtype=np.float32)
    y = data.scaler(centered)(x)
    assert (y.min(), y.max()) == ((-1.0, 1.0) if centered else (0.0, 1.0))
    np.testing.assert_allclose(data.inverse_scaler(centered)(y), x, atol=1e-7)


def test_image_shape():
    assert data.image_shape(digits_config(image_size=16)) == (16, 16, 1)


def test_tensorflow_sees_no_accelerator():
    assert tf.config.get_visible_devices("GPU") == []


# --- TFDS (mocked) ------------------------------------------------------------------------


@pytest.mark.parametrize("centered", [False, True])
def test_cifar10_batches_shape_dtype_range(mock_tfds, centered):
    (images,) = take(data.train_iterator(config(centered=centered), 8, seed=0), 1)
    assert images.shape == (8, 32, 32, 3) and images.dtype == np.float32
    low = -1.0 if centered else 0.0
    assert low <= images.min() < low + 0.05 and 0.95 < images.max() <= 1.0


def test_celeb_a_takes_the_central_140_crop(mock_tfds):
    raw = raw_tfds_images("celeb_a")[:4]
    assert raw[0].shape == (218, 178, 3)
    cfg = config(dataset="celeb_a", image_size=140, eval_split="train")
    (batch,) = itertools.islice(data.eval_iterator(cfg, 4, raw_uint8=True), 1)
    # offsets (218 - 140) // 2 = 39 and (178 - 140) // 2 = 19; resizing 140 -> 140 is exact
    np.testing.assert_array_equal(batch["image"], np.stack(raw)[:, 39:179, 19:159])
    cfg.image_size = 64
    (images,) = take(data.train_iterator(cfg, 4, seed=0), 1)
    assert images.shape == (4, 64, 64, 3)


def test_lsun_crops_the_central_square(mock_tfds):
    cfg = config(dataset="lsun/bedroom", image_size=16, eval_split="train")
    (batch,) = itertools.islice(data.eval_iterator(cfg, 4, raw_uint8=True), 1)
    assert batch["image"].shape == (4, 16, 16, 3) and batch["image"].dtype == np.uint8


def test_dequantized_values_are_k_plus_u_over_256(mock_tfds):
    plain = take(data.train_iterator(config(random_flip=False), NUM_MOCK, seed=3), 1)
    cfg = config(random_flip=False, uniform_dequantization=True)
    noisy = take(data.train_iterator(cfg, NUM_MOCK, seed=3), 1)
    k = np.round(np.stack(plain) * 255)
    np.testing.assert_allclose(np.stack(plain) * 255, k, atol=1e-4)  # x / 255 exactly
    scaled = np.stack(noisy) * 256
    np.testing.assert_array_equal(np.floor(scaled), k)
    u = scaled - k
    assert 0.45 < u.mean() < 0.55 and u.min() < 0.01 and u.max() > 0.99


def test_flips_are_exact_mirrors_about_half_the_time():
    cfg = digits_config(random_flip=False)
    (plain,) = take(data.train_iterator(cfg, 200, seed=5), 1)
    cfg.random_flip = True
    (flipped,) = take(data.train_iterator(cfg, 200, seed=5), 1)
    mirrored = np.all(plain[:, :, ::-1] == flipped, axis=(1, 2, 3))
    assert np.all(mirrored | np.all(plain == flipped, axis=(1, 2, 3)))
    asymmetric = np.any(plain[:, :, ::-1] != plain, axis=(1, 2, 3))
    assert asymmetric.sum() > 190
    fraction = mirrored[asymmetric].mean()
    assert 0.38 < fraction < 0.62  # 4.5 binomial standard deviations


def assert_resuming_equals_skipping(cfg, batch_size, starts, **shard):
    fresh = take(data.train_iterator(cfg, batch_size, seed=7, **shard), max(starts) + 3)
    for start in starts:
        resumed = take(data.train_iterator(cfg, batch_size, seed=7, start_step=start, **shard), 3)
        for a, b in zip(fresh[start:], resumed, strict=False):
            np.testing.assert_array_equal(a, b)


def test_tfds_resume_equals_skipping(mock_tfds):
    # 5 steps per epoch of 20; resume at an epoch start, mid-epoch, and across a boundary
    assert_resuming_equals_skipping(config(uniform_dequantization=True), 4, [3, 5, 7])


def test_eval_covers_every_example_once_with_mask(mock_tfds):
    raw = np.stack(raw_tfds_images("cifar10", "test"))
    batches = list(data.eval_iterator(config(), 8, raw_uint8=True, shard_index=0, num_shards=1))
    assert [b["mask"].sum() for b in batches] == [8, 8, 4]
    assert all(b["image"].shape == (8, 32, 32, 3) for b in batches)
    np.testing.assert_array_equal(real_images(batches), raw)
    assert not batches[-1]["image"][4:].any()
    scaled = list(data.eval_iterator(config(centered=True), 8, shard_index=0, num_shards=1))
    np.testing.assert_allclose(real_images(scaled), raw / 127.5 - 1, atol=1e-6)
    dropped = list(data.eval_iterator(config(), 8, drop_remainder=True))
    assert len(dropped) == 2 and all(b["mask"].all() for b in dropped)


def _sliced_mock(num_examples):
    """A mocked ``_as_dataset`` that honours split slicing, as prepared TFDS data do."""

    def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
        split_infos = tfds_splits.SplitDict(
            [tfds.core.SplitInfo(name="train", shard_lengths=[num_examples], num_bytes=0)]
        )
        spec = tfds_splits.AbstractSplit.from_spec(split)
        (part,) = spec.to_absolute(split_infos)
        indices = range(part.from_ or 0, num_examples if part.to is None else part.to)
        images = [np.full((32, 32, 3), i, np.uint8) for i in indices]
        if decoders is None:  # counting examples
            return tf.data.Dataset.from_tensor_slices({"image": np.zeros((len(images), 1))})
        assert isinstance(decoders["image"], tfds.decode.SkipDecoding)
        encoded = [tf.io.encode_png(image).numpy() for image in images]
        return tf.data.Dataset.from_tensor_slices({"image": encoded})

    return tfds.testing.mock_data(as_dataset_fn=as_dataset)


def test_tfds_host_shards_are_disjoint_and_cover():
    with _sliced_mock(10):
        cfg = config(random_flip=False, eval_split="train")
        seen = []
        for index in range(3):
            shard = dict(shard_index=index, num_shards=3)
            batches = list(data.eval_iterator(cfg, 2, raw_uint8=True, **shard))
            assert len(batches) == 2  # ceil(ceil(10 / 3) / 2) on every host
            mine = list(real_images(batches)[:, 0, 0, 0])
            (train,) = take(data.train_iterator(cfg, 3, seed=0, **shard), 1)
            assert set(np.round(train[:, 0, 0, 0] * 255)) <= set(mine)
            seen += mine
    assert sorted(seen) == list(range(10))


@pytest.fixture(scope="module")
def prepared_cifar10(tmp_path_factory):
    """A real TFDS cifar10 of 20 train and 6 test images, prepared from fake CIFAR binaries.

    Returns the TFDS data_dir and the train and test images (uint8 [n, 32, 32, 3]).
    """
    root = tmp_path_factory.mktemp("cifar")
    raw = root / "raw" / "cifar-10-batches-bin"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (26, 32, 32, 3), dtype=np.uint8)
    # the CIFAR binary format: per record one label byte, then the image channels-first
    records = np.concatenate(
        [np.zeros((26, 1), np.uint8), images.transpose(0, 3, 1, 2).reshape(26, -1)], 1
    )
    for i in range(5):
        (raw / f"data_batch_{i + 1}.bin").write_bytes(records[4 * i : 4 * i + 4].tobytes())
    (raw / "test_batch.bin").write_bytes(records[20:].tobytes())
    (raw / "batches.meta.txt").write_text("\n".join(f"class{i}" for i in range(10)))
    builder = tfds.builder("cifar10", data_dir=str(root / "tfds"))
    with mock.patch.object(
        tfds.download.DownloadManager, "download_and_extract", lambda self, url: root / "raw"
    ):
        skip_stats = tfds.download.ComputeStatsMode.SKIP
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(compute_stats=skip_stats)
        )
    return str(root / "tfds"), images[:20], images[20:]


def test_prepared_tfds_shards_cover_the_split(prepared_cifar10):
    data_dir, train, test = prepared_cifar10
    cfg = config(data_dir=data_dir, random_flip=False)
    data.validate(cfg)
    for split, expected, batch_size in [("train", train, 3), ("test", test, 2)]:
        got = collections.Counter()
        for index in range(3):
            shard = dict(shard_index=index, num_shards=3)
            batches = list(
                data.eval_iterator(cfg, batch_size, split=split, raw_uint8=True, **shard)
            )
            assert len(batches) == math.ceil(math.ceil(len(expected) / 3) / batch_size)
            got += multiset(real_images(batches))
        assert got == multiset(expected)


def test_prepared_tfds_train_stream_resumes_exactly(prepared_cifar10):
    data_dir, train, _ = prepared_cifar10
    cfg = config(data_dir=data_dir, random_flip=False)
    epoch = np.concatenate(
        take(data.train_iterator(cfg, 4, seed=1, shard_index=0, num_shards=1), 5)
    )
    assert multiset(np.round(epoch * 255).astype(np.uint8)) == multiset(train)
    cfg.uniform_dequantization = True
    assert_resuming_equals_skipping(cfg, 2, [2, 5, 6], shard_index=1, num_shards=2)


def test_prepared_tfds_unknown_split_lists_the_splits(prepared_cifar10):
    with pytest.raises(
        ValueError, match=r"data.eval_split must be a split of cifar10 \(one of \['test', 'train'\]"
    ):
        data.validate(config(data_dir=prepared_cifar10[0], eval_split="validation"))


# --- digits, folders and TFRecords ---------------------------------------------------------


def test_digits_split_values_and_shapes():
    images = sources.load_digits()
    assert images.shape == (1797, 8, 8, 1) and images.dtype == np.uint8
    levels = np.round(np.arange(17) * 255 / 16)  # 8-bit values of the 17 gray levels 0..16
    assert set(np.unique(images)) == set(levels)
    for split, expected in [("train", images[:1500]), ("test", images[1500:])]:
        batches = list(data.eval_iterator(digits_config(), 256, split=split, raw_uint8=True))
        np.testing.assert_array_equal(real_images(batches), expected)
    (x,) = take(data.train_iterator(digits_config(image_size=16), 32, seed=0), 1)
    assert x.shape == (32, 16, 16, 1) and x.min() >= 0 and x.max() <= 1


def test_digits_stream_is_deterministic_and_reshuffles_each_epoch():
    cfg = digits_config(random_flip=False)
    a = take(data.train_iterator(cfg, 500, seed=1), 6)  # 3 batches per epoch
    b = take(data.train_iterator(cfg, 500, seed=1), 6)
    c = take(data.train_iterator(cfg, 500, seed=2), 1)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[0], a[3])
    assert multiset(np.concatenate(a[:3])) == multiset(np.concatenate(a[3:]))  # whole epochs


def test_digits_resume_equals_skipping():
    # shard 1 of 2 holds 750 training digits: 7 steps per epoch of 100
    cfg = digits_config(uniform_dequantization=True)
    assert_resuming_equals_skipping(cfg, 100, [5, 7, 15], shard_index=1, num_shards=2)


def test_digits_host_shards_are_disjoint_and_cover():
    cfg = digits_config(random_flip=False)
    everything = sources.load_digits()[:1500]
    shards = []
    for index in range(3):
        batches = list(
            data.eval_iterator(
                cfg, 128, split="train", raw_uint8=True, shard_index=index, num_shards=3
            )
        )
        assert len(batches) == 4  # ceil(500 / 128)
        shards.append(multiset(real_images(batches)))
        epoch = np.concatenate(
            take(data.train_iterator(cfg, 100, seed=0, shard_index=index, num_shards=3), 5)
        )
        assert multiset(np.round(epoch * 255).astype(np.uint8)) == shards[-1]
    assert sum(shards, collections.Counter()) == multiset(everything)


def _make_images(count):
    """Images 8 high and 12 wide whose central 8x8 square encodes their index."""
    images = []
    for i in range(count):
        image = np.zeros((8, 12, 3), np.uint8)
        image[:, 2:10] = 10 * i + np.arange(8, dtype=np.uint8)[None, :, None]
        images.append(image)
    return images


def test_folder_source_reads_crops_and_shards(tmp_path):
    images = _make_images(7)
    for i, image in enumerate(images):
        sub = tmp_path / f"part{i % 2}"
        sub.mkdir(exist_ok=True)
        (sub / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())
    (tmp_path / "notes.txt").write_text("not an image")
    cfg = config(dataset="folder", data_dir=str(tmp_path), image_size=8, random_flip=False)
    expected = multiset(image[:, 2:10] for image in images)  # the central 8x8 square
    got = collections.Counter()
    for index in range(2):
        shard = dict(shard_index=index, num_shards=2)
        got += multiset(real_images(list(data.eval_iterator(cfg, 3, raw_uint8=True, **shard))))
    assert got == expected
    (x,) = take(data.train_iterator(cfg, 7, seed=0, shard_index=0, num_shards=1), 1)
    assert multiset(np.round(x * 255).astype(np.uint8)) == expected


def test_tfrecord_source_reads_encoded_image_records(tmp_path):
    images = _make_images(6)
    for part in range(2):
        with tf.io.TFRecordWriter(str(tmp_path / f"faces.tfrecord-{part}")) as writer:
            for image in images[part::2]:
                png = tf.io.encode_png(image).numpy()
                feature = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png]))}
                example = tf.train.Example(features=tf.train.Features(feature=feature))
                writer.write(example.SerializeToString())
    cfg = config(dataset="tfrecord", data_dir=str(tmp_path), image_size=4, random_flip=False)
    batches = list(data.eval_iterator(cfg, 4, raw_uint8=True, shard_index=0, num_shards=1))
    assert [b["mask"].sum() for b in batches] == [4, 2]
    assert real_images(batches).shape == (6, 4, 4, 3)
    cfg.image_size = 8
    batches = list(data.eval_iterator(cfg, 6, raw_uint8=True, shard_index=0, num_shards=1))
    assert multiset(real_images(batches)) == multiset(image[:, 2:10] for image in images)
    fresh = take(data.train_iterator(cfg, 2, seed=0, shard_index=1, num_shards=2), 4)
    resumed = take(
        data.train_iterator(cfg, 2, seed=0, start_step=1, shard_index=1, num_shards=2), 3
    )
    np.testing.assert_array_equal(np.stack(fresh[1:]), np.stack(resumed))


# --- validation -----------------------------------------------------------------------------


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(ValueError, match=r"data.dataset must be one of \[.*'lsun/bedroom'.*"):
        data.validate(config(dataset="mnist"))


@pytest.mark.parametrize("dataset", ["folder", "tfrecord"])
def test_files_need_a_data_dir(dataset, tmp_path):
    with pytest.raises(ValueError, match=r"data\.data_dir must name the directory"):
        data.validate(config(dataset=dataset))
    with pytest.raises(ValueError, match="holds no"):
        data.validate(config(dataset=dataset, data_dir=str(tmp_path)))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(image_size=0), "data.image_size must be an integer >= 1, got 0"),
        (dict(image_size=-8), "data.image_size must be an integer >= 1, got -8"),
        (dict(num_channels=3), r"data.num_channels must be one of \[1\] for 'digits'"),
        (dict(eval_split="validation"), r"data.eval_split must be one of \['train', 'test'\]"),
    ],
)
def test_invalid_digits_settings(overrides, message):
    with pytest.raises(ValueError, match=message):
        data.validate(digits_config(**overrides))


def test_unprepared_tfds_data_fail_fast_saying_how_to_prepare(tmp_path):
    start = time.perf_counter()
    with pytest.raises(ValueError, match="not prepared") as error:
        data.train_iterator(config(data_dir=str(tmp_path)), 8, seed=0)
    assert time.perf_counter() - start < 5
    message = str(error.value)
    assert f"tfds build cifar10 --data_dir={tmp_path}" in message
    assert "data.data_dir" in message and "data.download=True" in message


def test_batch_larger_than_the_shard_is_an_error():
    with pytest.raises(ValueError, match="batch_size=1501 is larger than shard 0 of 1"):
        data.train_iterator(digits_config(), 1501, seed=0, shard_index=0, num_shards=1)


def test_numpy_integers_are_accepted_and_bad_arguments_named():
    cfg = digits_config()
    a = take(data.train_iterator(cfg, np.int64(50), seed=0, start_step=np.int64(2)), 1)
    b = take(data.train_iterator(cfg, 50, seed=0, start_step=2), 1)
    np.testing.assert_array_equal(a[0], b[0])
    with pytest.raises(ValueError, match="start_step must be an int >= 0, got -1"):
        data.train_iterator(cfg, 50, seed=0, start_step=-1)
    with pytest.raises(ValueError, match=r"shard_index must be in \[0, num_shards\)"):
        data.eval_iterator(cfg, 50, shard_index=2, num_shards=2)
    with pytest.raises(ValueError, match="split must be one of"):
        data.eval_iterator(cfg, 50, split="validation")
