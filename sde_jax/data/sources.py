"""Where images come from: TFDS data sets, a folder of image files, TFRecord files, the digits.

A source answers three questions for a split and a shard (this host's part of the split):
how many examples it holds (:meth:`num_examples`), the examples in an order (:meth:`read`:
natural order, or a shuffled order that is a pure function of a seed) and how one element
becomes a ``uint8`` image ``[height, width, channels]`` (:meth:`decode`). Sources with class
labels (CIFAR-10, the digits; ``num_classes`` not None) read ``{'image': encoded, 'label':
int}`` elements instead of the encoded image alone. Elements stay encoded
(PNG/JPEG bytes) until after shuffling and skipping, so shuffle buffers stay small and
resuming mid-epoch skips without decoding. Cropping, resizing, flips and scaling live in
``sde_jax.data.pipeline``.

Sharding: hosts split the examples into disjoint parts whose sizes differ by at most one
(``tfds.even_splits`` for TFDS; every ``count``-th file or record from ``index`` on for the
others), so the largest shard holds ``ceil(n / count)`` examples.
"""

import abc
import contextlib
import dataclasses
import functools
import importlib
import os
from typing import NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds


def hide_accelerators_from_tensorflow() -> None:
    """Keeps TensorFlow off GPUs and TPUs, which belong to JAX; tf.data runs on the CPU.

    TensorFlow otherwise reserves most of a GPU's memory when it first touches it. Called when
    ``sde_jax.data`` is imported; when TensorFlow has already initialized its devices it can no
    longer change them, and the call leaves them as they are.
    """
    for kind in ("GPU", "TPU"):
        # RuntimeError: devices already initialized; ValueError: no devices of that kind.
        with contextlib.suppress(RuntimeError, ValueError):
            tf.config.set_visible_devices([], kind)


class Shard(NamedTuple):
    """Part ``index`` of ``count`` disjoint parts of a split (one per host)."""

    index: int
    count: int


def _shard_size(n: int, shard: Shard) -> int:
    """Size of the shard holding every ``count``-th example of ``n`` from ``index`` on."""
    return len(range(shard.index, n, shard.count))


def deterministic_options() -> tf.data.Options:
    """tf.data options that keep element order fixed under parallel map and interleave."""
    options = tf.data.Options()
    options.deterministic = True
    return options


class Source(abc.ABC):
    """Images of one data set: counts, ordered elements and their decoding.

    Attributes:
      crop: ``None`` (no crop), ``"square"`` (the central square of the shorter side) or a side
        length in pixels (a central crop of that size, 140 for CelebA).
    """

    crop: int | str | None = None

    @property
    def num_classes(self) -> int | None:
        """Number of classes of the labels that :meth:`read` yields, or None if unlabeled."""
        return None

    @abc.abstractmethod
    def num_examples(self, split: str, shard: Shard) -> int:
        """Number of examples of ``split`` in ``shard``."""

    @abc.abstractmethod
    def read(self, split: str, shard: Shard, seed: int | None, buffer_size: int) -> tf.data.Dataset:
        """The shard's elements: in natural order if ``seed`` is None, else shuffled by ``seed``.

        Sources that can permute their whole shard do so exactly; the others shuffle their
        files and then pass the elements through a ``buffer_size`` shuffle buffer.
        """

    @abc.abstractmethod
    def decode(self, element: tf.Tensor) -> tf.Tensor:
        """One element of :meth:`read` as a ``uint8`` image ``[height, width, channels]``."""


@dataclasses.dataclass(frozen=True)
class TFDSSource(Source):
    """A TFDS data set with an ``'image'`` feature, read from ``data_dir`` (local or a bucket)."""

    name: str
    data_dir: str | None = None
    crop: int | str | None = None

    @functools.cached_property
    def builder(self) -> tfds.core.DatasetBuilder:
        """The TFDS builder (builds nothing, downloads nothing)."""
        return tfds.builder(self.name, data_dir=self.data_dir)

    @property
    def num_classes(self) -> int | None:
        """Classes of the data set's ``'label'`` feature (10 for CIFAR-10), or None."""
        features = self.builder.info.features
        if features is not None and "label" in features:
            feature = features["label"]
            if isinstance(feature, tfds.features.ClassLabel):
                return feature.num_classes
        return None

    def _split(self, split: str, shard: Shard):
        return split if shard.count == 1 else tfds.even_splits(split, n=shard.count)[shard.index]

    def num_examples(self, split: str, shard: Shard) -> int:
        """Number of examples of ``split`` in ``shard``, from the prepared data's metadata."""
        count = int(self.builder.as_dataset(split=self._split(split, shard)).cardinality())
        if count < 0:
            raise ValueError(f"TFDS does not know the size of {self.name} split {split!r}.")
        return count

    def read(self, split: str, shard: Shard, seed: int | None, buffer_size: int) -> tf.data.Dataset:
        """Encoded images; with a seed, files are shuffled, then a buffer shuffles examples."""
        shuffle = seed is not None
        read_config = tfds.ReadConfig(
            options=deterministic_options(),
            shuffle_seed=seed,
            try_autocache=False,
            skip_prefetch=True,
        )
        ds = self.builder.as_dataset(
            split=self._split(split, shard),
            shuffle_files=shuffle,
            decoders={"image": tfds.decode.SkipDecoding()},
            read_config=read_config,
        )
        labeled = self.num_classes is not None
        ds = ds.map(lambda example: _image_and_label(example, labeled))
        return ds.shuffle(buffer_size, seed=seed) if shuffle else ds

    def decode(self, element: tf.Tensor) -> tf.Tensor:
        """Decodes with the data set's own image feature (PNG or JPEG, known channels)."""
        return self.builder.info.features["image"].decode_example(element)


def _image_and_label(example: dict, labeled: bool):
    """A TFDS example as its encoded image, or ``{'image', 'label'}`` if it has a label."""
    if labeled and "label" in example:
        return {"image": example["image"], "label": tf.cast(example["label"], tf.int32)}
    return example["image"]


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def list_images(data_dir: str) -> list[str]:
    """PNG and JPEG files under ``data_dir`` (recursively, local or a bucket), sorted."""
    found = []
    for directory, _, names in tf.io.gfile.walk(data_dir):
        found += [os.path.join(directory, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)


def list_tfrecords(data_dir: str) -> list[str]:
    """Files directly in ``data_dir`` whose names contain ``.tfrecord``, sorted."""
    return sorted(tf.io.gfile.glob(os.path.join(data_dir, "*.tfrecord*")))


def _decode_any(encoded: tf.Tensor, channels: int) -> tf.Tensor:
    image = tf.io.decode_image(encoded, channels=channels, dtype=tf.uint8, expand_animations=False)
    image.set_shape([None, None, channels])
    return image


@dataclasses.dataclass(frozen=True)
class FolderSource(Source):
    """Every PNG/JPEG file under ``data_dir``, whatever the split; shuffled exactly per epoch."""

    data_dir: str
    channels: int
    crop: int | str | None = "square"

    @functools.cached_property
    def files(self) -> list[str]:
        """The image files, sorted (the natural order)."""
        return list_images(self.data_dir)

    def num_examples(self, split: str, shard: Shard) -> int:
        """Number of files in the shard (``split`` is ignored: the folder is one split)."""
        return _shard_size(len(self.files), shard)

    def read(self, split: str, shard: Shard, seed: int | None, buffer_size: int) -> tf.data.Dataset:
        """File contents, the shard's files permuted by ``seed`` (no buffer needed)."""
        files = np.array(self.files[shard.index :: shard.count])
        if seed is not None:
            files = np.random.default_rng(seed).permutation(files)
        ds = tf.data.Dataset.from_tensor_slices(files)
        return ds.map(tf.io.read_file, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def decode(self, element: tf.Tensor) -> tf.Tensor:
        """Decodes PNG or JPEG bytes to ``channels`` channels (gray or RGB, converted)."""
        return _decode_any(element, self.channels)


@functools.lru_cache(maxsize=16)
def _count_records(files: tuple[str, ...]) -> int:
    return int(tf.data.TFRecordDataset(list(files)).reduce(np.int64(0), lambda n, _: n + 1))


@dataclasses.dataclass(frozen=True)
class TFRecordSource(Source):
    """``tf.train.Example`` records with an encoded (PNG/JPEG) bytes feature ``'image'``.

    The records are those of every file in ``data_dir`` whose name contains ``.tfrecord``, in
    sorted file order, whatever the split. Counting them reads the files once per process.
    Each host keeps every ``count``-th record (so it reads all files, decoding only its own).
    """

    data_dir: str
    channels: int
    crop: int | str | None = "square"

    @functools.cached_property
    def files(self) -> tuple[str, ...]:
        """The record files, sorted."""
        return tuple(list_tfrecords(self.data_dir))

    def num_examples(self, split: str, shard: Shard) -> int:
        """Number of records in the shard (``split`` is ignored)."""
        return _shard_size(_count_records(self.files), shard)

    def read(self, split: str, shard: Shard, seed: int | None, buffer_size: int) -> tf.data.Dataset:
        """Encoded images of the shard's records, through a shuffle buffer if seeded."""
        ds = tf.data.TFRecordDataset(list(self.files)).shard(shard.count, shard.index)
        if seed is not None:
            ds = ds.shuffle(buffer_size, seed=seed)
        feature = {"image": tf.io.FixedLenFeature([], tf.string)}
        return ds.map(lambda record: tf.io.parse_single_example(record, feature)["image"])

    def decode(self, element: tf.Tensor) -> tf.Tensor:
        """Decodes PNG or JPEG bytes to ``channels`` channels."""
        return _decode_any(element, self.channels)


DIGITS_CLASSES = 10

DIGITS_SPLITS = {"train": slice(0, 1500), "test": slice(1500, None)}
"""The fixed split of scikit-learn's 1797 digits: the first 1500 train, the last 297 test."""

QUICKSTART_HINT = "pip install -e '.[quickstart]'"


def load_digits() -> np.ndarray:
    """scikit-learn's 8x8 digits as 8-bit images ``[1797, 8, 8, 1]``: ``round(v * 255 / 16)``.

    Raises:
      ImportError: when scikit-learn (an optional extra) is missing.
    """
    try:
        datasets = importlib.import_module("sklearn.datasets")
    except ImportError as e:
        raise ImportError(
            f"data.dataset='digits' needs scikit-learn; install it with {QUICKSTART_HINT}."
        ) from e
    values = datasets.load_digits().images  # [1797, 8, 8], integers 0..16 as floats
    return np.round(values * (255 / 16)).astype(np.uint8)[..., None]


def load_digit_labels() -> np.ndarray:
    """The class (digit 0-9) of each of scikit-learn's 1797 digits, ``int32 [1797]``."""
    load_digits()  # the ImportError with the install hint when scikit-learn is missing
    datasets = importlib.import_module("sklearn.datasets")
    return datasets.load_digits().target.astype(np.int32)


@dataclasses.dataclass(frozen=True)
class DigitsSource(Source):
    """The UCI 8x8 handwritten digits shipped in scikit-learn's wheel (no download)."""

    @functools.cached_property
    def images(self) -> np.ndarray:
        """All 1797 images, ``uint8 [1797, 8, 8, 1]``."""
        return load_digits()

    @functools.cached_property
    def labels(self) -> np.ndarray:
        """The digit (0-9) of each image, ``int32 [1797]``."""
        return load_digit_labels()

    @property
    def num_classes(self) -> int:
        """The ten digits."""
        return DIGITS_CLASSES

    def _shard(self, split: str, shard: Shard) -> np.ndarray:
        """The indices of the shard's digits."""
        if split not in DIGITS_SPLITS:
            raise ValueError(
                f"split must be one of {list(DIGITS_SPLITS)} for 'digits', got {split!r}."
            )
        return np.arange(len(self.images))[DIGITS_SPLITS[split]][shard.index :: shard.count]

    def num_examples(self, split: str, shard: Shard) -> int:
        """Number of digits of ``split`` ('train' or 'test') in the shard."""
        return len(self._shard(split, shard))

    def read(self, split: str, shard: Shard, seed: int | None, buffer_size: int) -> tf.data.Dataset:
        """The shard's images and labels, permuted exactly by ``seed`` (no buffer needed)."""
        indices = self._shard(split, shard)
        if seed is not None:
            indices = np.random.default_rng(seed).permutation(indices)
        elements = {"image": self.images[indices], "label": self.labels[indices]}
        return tf.data.Dataset.from_tensor_slices(elements)

    def decode(self, element: tf.Tensor) -> tf.Tensor:
        """Already a ``uint8`` image."""
        return element
