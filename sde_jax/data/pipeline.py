"""Input pipelines: config checks, preprocessing, and the train and eval iterators.

Preprocessing of one image: decode to ``uint8``; crop (CelebA: the central 140x140; LSUN,
folders and TFRecords: the central square); resize to ``image_size`` (bilinear, antialiased)
and round back to ``uint8``, so every data set is 8-bit at the model's resolution; then, for
training, a random horizontal flip and the map to model space: ``x / 255``, or
``(x + u) / 256`` with ``u ~ U[0, 1)`` under uniform dequantization, then ``2 x - 1`` when
centered.

Determinism: the train stream of a shard is a pure function of ``(seed, shard)``. Epoch ``e``
orders the shard by a seed drawn from ``(seed, shard index, e)``; example ``i`` of the epoch
gets its flip and dequantization noise from ``(that epoch's seed, i)`` with stateless ops.
An epoch yields ``n // batch_size`` batches (its last ``n % batch_size`` examples, different
ones every epoch, are left out), so step ``k`` is batch ``k % steps`` of epoch ``k // steps``
and resuming at ``k`` rebuilds that epoch and skips the encoded elements before it (reading,
not decoding, at most one epoch). Each epoch is its own tf.data pipeline, built when the
previous one ends; TFDS and TFRecord sources then refill their shuffle buffer.
"""

import itertools
import math
import operator
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import numpy as np
import tensorflow as tf

from sde_jax import validation
from sde_jax.data import sources
from sde_jax.data.sources import Shard, Source

LSUN_CATEGORIES = (
    "bedroom",
    "bridge",
    "church_outdoor",
    "classroom",
    "conference_room",
    "dining_room",
    "kitchen",
    "living_room",
    "restaurant",
    "tower",
)
"""LSUN scene categories; ``data.dataset`` names them as TFDS does: ``'lsun/church_outdoor'``."""

TFDS_DATASETS = ("cifar10", "celeb_a", *(f"lsun/{c}" for c in LSUN_CATEGORIES))
DATASETS = (*TFDS_DATASETS, "folder", "tfrecord", "digits")
"""Valid ``data.dataset`` values."""

CELEBA_CROP = 140
DEFAULT_SHUFFLE_BUFFER = 10_000
Batch = dict[str, np.ndarray]


def _prepare_hint(name: str, data_dir: str | None, looked_in: str) -> str:
    where = f" --data_dir={data_dir}" if data_dir else ""
    return (
        f"TFDS data set {name!r} is not prepared in data.data_dir={data_dir!r} (looked in "
        f"{looked_in}). Prepare it once with `tfds build {name}{where}` (on a machine with "
        "network access; LSUN also needs tensorflow-io to read its LMDB files), point "
        "data.data_dir at a directory or bucket that holds prepared data, or set "
        "data.download=True to let TFDS download and prepare it now."
    )


def _check_tfds(cfg: Mapping[str, Any]) -> None:
    source = sources.TFDSSource(cfg["dataset"], cfg["data_dir"])
    for key in ("train_split", "eval_split"):
        try:
            source.builder.as_dataset(split=cfg[key])  # builds a pipeline, reads nothing
        except AssertionError as e:  # what TFDS raises for data that is not prepared
            hint = _prepare_hint(cfg["dataset"], cfg["data_dir"], source.builder.data_dir)
            raise ValueError(hint) from e
        except (ValueError, KeyError) as e:
            splits = sorted(source.builder.info.splits)
            raise ValueError(
                f"data.{key} must be a split of {cfg['dataset']} (one of {splits}, optionally "
                f"sliced as 'train[:90%]'), got {cfg[key]!r}: {e}"
            ) from e


def validate(data_config: Mapping[str, Any]) -> None:
    """Checks a config's ``data`` section before anything is loaded.

    Fast: for TFDS data sets with ``download=False`` it asks TFDS whether the data are prepared
    (a local look-up, no network); folders and TFRecord directories are listed.

    Raises:
      ValueError: naming the key, the value and what was expected: an unknown ``dataset``; an
        ``image_size`` that is not a positive int; a ``num_channels`` the data set lacks; no
        ``data_dir`` (or no files in it) for ``'folder'``/``'tfrecord'``; an unknown split; TFDS
        data that are not prepared while ``download`` is False (saying how to prepare them).
      ImportError: for ``'digits'`` without scikit-learn.
    """
    name = data_config["dataset"]
    validation.choice("data.dataset", name, DATASETS)
    validation.integer("data.image_size", data_config["image_size"], minimum=1)
    channels = (1,) if name == "digits" else (1, 3) if name in ("folder", "tfrecord") else (3,)
    if data_config["num_channels"] not in channels:
        raise ValueError(
            f"data.num_channels must be one of {list(channels)} for {name!r}, "
            f"got {data_config['num_channels']!r}."
        )
    if name in ("folder", "tfrecord"):
        data_dir = data_config["data_dir"]
        if not data_dir:
            raise ValueError(
                f"data.data_dir must name the directory (local or a bucket) holding the "
                f"{'image files' if name == 'folder' else 'TFRecord files'} for "
                f"data.dataset={name!r}, got {data_dir!r}."
            )
        found = sources.list_images if name == "folder" else sources.list_tfrecords
        if not tf.io.gfile.isdir(data_dir) or not found(data_dir):
            pattern = "*.png/*.jpg/*.jpeg (recursively)" if name == "folder" else "*.tfrecord*"
            raise ValueError(f"data.data_dir={data_dir!r} holds no {pattern} files.")
    elif name == "digits":
        for key in ("train_split", "eval_split"):
            if data_config[key] not in sources.DIGITS_SPLITS:
                raise ValueError(
                    f"data.{key} must be one of {list(sources.DIGITS_SPLITS)} for 'digits', "
                    f"got {data_config[key]!r}."
                )
        sources.load_digits()  # raises the ImportError early; the data are in the wheel
    elif not data_config["download"]:
        _check_tfds(data_config)


def get_source(data_config: Mapping[str, Any]) -> Source:
    """The :class:`Source` of a validated ``data`` section; downloads only if ``download``."""
    name, data_dir = data_config["dataset"], data_config["data_dir"]
    if name == "folder":
        return sources.FolderSource(data_dir, data_config["num_channels"])
    if name == "tfrecord":
        return sources.TFRecordSource(data_dir, data_config["num_channels"])
    if name == "digits":
        return sources.DigitsSource()
    crop = CELEBA_CROP if name == "celeb_a" else "square" if name.startswith("lsun/") else None
    source = sources.TFDSSource(name, data_dir, crop)
    if data_config["download"]:
        source.builder.download_and_prepare()
    return source


def num_classes(data_config: Mapping[str, Any]) -> int | None:
    """The number of classes of the data set's labels (10 for CIFAR-10 and the digits), or None.

    Batches of labeled data sets carry ``'label'`` (int32 ``[batch]``); folders, TFRecords,
    CelebA and LSUN have no labels. Reads TFDS metadata only (no download).
    """
    name = data_config["dataset"]
    if name in ("folder", "tfrecord"):
        return None
    if name == "digits":
        return sources.DIGITS_CLASSES
    return sources.TFDSSource(name, data_config["data_dir"]).num_classes


def _image_and_label(element: Any) -> tuple[Any, Any]:
    """An element of ``Source.read`` as (encoded image, label or None)."""
    if isinstance(element, dict):
        return element["image"], element["label"]
    return element, None


def image_shape(data_config: Mapping[str, Any]) -> tuple[int, int, int]:
    """``(image_size, image_size, num_channels)``: the shape of one example in model space."""
    return (data_config["image_size"], data_config["image_size"], data_config["num_channels"])


def scaler(centered: bool) -> Callable[[Any], Any]:
    """Maps data in [0, 1] to model space: [-1, 1] (``2 x - 1``) if ``centered``, else [0, 1]."""
    return (lambda x: 2 * x - 1) if centered else (lambda x: x)


def inverse_scaler(centered: bool) -> Callable[[Any], Any]:
    """Maps model space back to [0, 1]: the inverse of :func:`scaler`."""
    return (lambda x: (x + 1) / 2) if centered else (lambda x: x)


def crop_and_resize(image: tf.Tensor, crop: int | str | None, size: int) -> tf.Tensor:
    """Central crop (``crop``: None, ``"square"`` or a side), resize to ``size``, as uint8."""
    if crop is not None:
        height, width = tf.shape(image)[0], tf.shape(image)[1]
        side = tf.minimum(height, width) if crop == "square" else crop
        top, left = (height - side) // 2, (width - side) // 2
        image = image[top : top + side, left : left + side]
    image = tf.image.resize(tf.cast(image, tf.float32), [size, size], antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


# Largest dequantization noise kept: k + u must stay below k + 1 in float32 for k < 256 (the
# float32 spacing there is 2**-16), so floor(256 x) always recovers k.
_MAX_NOISE = 1 - 2.0**-16


def to_unit_interval(image: tf.Tensor, noise_seed: tf.Tensor | None) -> tf.Tensor:
    """uint8 -> float32 in [0, 1]: ``x / 255``, or ``(x + u) / 256`` given a noise seed."""
    x = tf.cast(image, tf.float32)
    if noise_seed is None:
        return x / 255
    u = tf.random.stateless_uniform(tf.shape(x), seed=noise_seed, dtype=tf.float32)
    return (x + tf.minimum(u, _MAX_NOISE)) / 256


def _resolve_shard(shard_index: int | None, num_shards: int | None) -> Shard:
    shard = Shard(
        jax.process_index() if shard_index is None else _as_int("shard_index", shard_index, 0),
        jax.process_count() if num_shards is None else _as_int("num_shards", num_shards, 1),
    )
    if not 0 <= shard.index < shard.count:
        raise ValueError(
            f"shard_index must be in [0, num_shards), got shard_index={shard.index}, "
            f"num_shards={shard.count}."
        )
    return shard


def _as_int(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int of at least ``minimum``; numpy and JAX integer scalars count."""
    try:
        number = operator.index(value)
    except TypeError:
        number = None
    if isinstance(value, bool) or number is None or number < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.")
    return number


def _epoch_seeds(seed: int, shard: Shard, epoch: int) -> tuple[int, int]:
    """(order seed, augmentation seed) of one epoch of one shard."""
    sequence = np.random.SeedSequence([seed % 2**64, shard.index, shard.count, epoch])
    order, augment = sequence.generate_state(2, dtype=np.uint32)
    return int(order), int(augment)


def _train_epoch(
    source: Source,
    cfg: Mapping[str, Any],
    shard: Shard,
    seeds: tuple[int, int],
    steps: int,
    first_step: int,
    batch_size: int,
    buffer_size: int,
) -> tf.data.Dataset:
    order_seed, augment_seed = seeds

    def preprocess(index, element):
        encoded, label = _image_and_label(element)
        image = crop_and_resize(source.decode(encoded), source.crop, cfg["image_size"])
        example_seed = tf.stack([tf.constant(augment_seed, tf.int64), index])
        flip_seed, noise_seed = tf.unstack(tf.random.split(example_seed, 2))
        if cfg["random_flip"]:
            image = tf.image.stateless_random_flip_left_right(image, flip_seed)
        x = to_unit_interval(image, noise_seed if cfg["uniform_dequantization"] else None)
        x = scaler(cfg["centered"])(x)
        return {"image": x} if label is None else {"image": x, "label": label}

    ds = source.read(cfg["train_split"], shard, order_seed, buffer_size)
    ds = ds.take(steps * batch_size).enumerate().skip(first_step * batch_size)
    ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=True)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(sources.deterministic_options())


def train_iterator(
    data_config: Mapping[str, Any],
    batch_size: int,
    *,
    seed: int,
    start_step: int = 0,
    shard_index: int | None = None,
    num_shards: int | None = None,
    shuffle_buffer_size: int = DEFAULT_SHUFFLE_BUFFER,
) -> Iterator[Batch]:
    """An endless stream of shuffled, augmented training batches of this host's shard.

    The sequence is a pure function of ``(seed, shard)``, and ``start_step=k`` yields exactly
    what a fresh iterator yields from its ``k``-th batch on (see the module docstring), so a
    run resumed after preemption sees the data it would have seen.

    Args:
      data_config: the config's ``data`` section.
      batch_size: this host's batch size (the global batch divided by the number of hosts).
      seed: any int.
      start_step: batches to skip, e.g. the step of a restored checkpoint.
      shard_index: this host's shard; default ``jax.process_index()``.
      num_shards: the number of disjoint shards; default ``jax.process_count()``.
      shuffle_buffer_size: examples in the shuffle buffer of TFDS and TFRecord sources (the
        folder and digits sources permute their whole shard).

    Returns:
      An iterator of ``{'image': float32 [batch_size, H, W, C]}`` in model space, with
      ``'label': int32 [batch_size]`` for labeled data sets (see :func:`num_classes`).

    Raises:
      ValueError: from :func:`validate`, or for a bad ``batch_size``, ``start_step`` or shard,
        or a shard smaller than one batch.
    """
    validate(data_config)
    batch_size = _as_int("batch_size", batch_size, 1)
    start_step = _as_int("start_step", start_step, 0)
    shard = _resolve_shard(shard_index, num_shards)
    source = get_source(data_config)
    steps = source.num_examples(data_config["train_split"], shard) // batch_size
    if steps == 0:
        raise ValueError(
            f"batch_size={batch_size} is larger than shard {shard.index} of {shard.count} of "
            f"{data_config['dataset']} split {data_config['train_split']!r}."
        )
    first_epoch, first_step = divmod(start_step, steps)

    def batches() -> Iterator[Batch]:
        skip = first_step
        for epoch in itertools.count(first_epoch):
            seeds = _epoch_seeds(seed, shard, epoch)
            ds = _train_epoch(
                source, data_config, shard, seeds, steps, skip, batch_size, shuffle_buffer_size
            )
            skip = 0
            yield from ds.as_numpy_iterator()

    return batches()


def _num_eval_batches(total: int, num_shards: int, batch_size: int, drop_remainder: bool) -> int:
    if drop_remainder:
        return (total // num_shards) // batch_size
    return math.ceil(math.ceil(total / num_shards) / batch_size)


def num_eval_batches(
    data_config: Mapping[str, Any],
    batch_size: int,
    *,
    split: str | None = None,
    num_shards: int | None = None,
    drop_remainder: bool = False,
) -> int:
    """The number of batches :func:`eval_iterator` yields on every host, with the same args."""
    validate(data_config)
    batch_size = _as_int("batch_size", batch_size, 1)
    shard = _resolve_shard(None, num_shards)
    split = data_config["eval_split"] if split is None else split
    total = get_source(data_config).num_examples(split, Shard(0, 1))
    return _num_eval_batches(total, shard.count, batch_size, drop_remainder)


def eval_iterator(
    data_config: Mapping[str, Any],
    batch_size: int,
    *,
    split: str | None = None,
    raw_uint8: bool = False,
    shard_index: int | None = None,
    num_shards: int | None = None,
    drop_remainder: bool = False,
) -> Iterator[Batch]:
    """One pass over this host's shard of an eval split, in order, without augmentation.

    Every host yields the same number of batches of the same shape, so a sharded eval step
    never waits on a host that ran out: ``ceil(ceil(n / num_shards) / batch_size)`` batches,
    the last ones padded with zero images. ``'mask'`` (bool ``[batch_size]``) is always
    present and marks the real examples; average metrics over ``mask`` only. With
    ``drop_remainder`` every host yields ``floor(floor(n / num_shards) / batch_size)`` full
    batches instead (a few examples are left out; ``mask`` is all True).

    Args:
      data_config: the config's ``data`` section.
      batch_size: this host's batch size.
      split: a split of the data set; default ``data.eval_split``.
      raw_uint8: yield the ``uint8`` images (cropped and resized to ``image_size``) instead of
        float32 in model space, e.g. for bits/dim with the caller's own dequantization noise.
      shard_index: this host's shard; default ``jax.process_index()``.
      num_shards: the number of shards; default ``jax.process_count()``.
      drop_remainder: yield full batches only, see above.

    Returns:
      An iterator of ``{'image': [batch_size, H, W, C], 'mask': bool [batch_size]}``, images
      float32 in model space, or uint8 with ``raw_uint8``; with ``'label': int32
      [batch_size]`` (0 for padding) for labeled data sets.

    Raises:
      ValueError: from :func:`validate`, or for a bad ``batch_size`` or shard.
    """
    validate(data_config)
    batch_size = _as_int("batch_size", batch_size, 1)
    shard = _resolve_shard(shard_index, num_shards)
    split = data_config["eval_split"] if split is None else split
    source = get_source(data_config)
    total = source.num_examples(split, Shard(0, 1))
    num_batches = _num_eval_batches(total, shard.count, batch_size, drop_remainder)

    def preprocess(element):
        encoded, label = _image_and_label(element)
        image = crop_and_resize(source.decode(encoded), source.crop, data_config["image_size"])
        if not raw_uint8:
            image = scaler(data_config["centered"])(to_unit_interval(image, None))
        return {"image": image} if label is None else {"image": image, "label": label}

    ds = source.read(split, shard, None, 0)
    ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    ds = ds.with_options(sources.deterministic_options())
    shape = image_shape(data_config)
    dtype = np.uint8 if raw_uint8 else np.float32
    labeled = isinstance(ds.element_spec, dict) and "label" in ds.element_spec

    def batches() -> Iterator[Batch]:
        real = ds.as_numpy_iterator()
        for _ in range(num_batches):
            batch = next(real, {"image": np.zeros((0, *shape), dtype)})
            count = len(batch["image"])
            padded = {
                "image": np.concatenate(
                    [batch["image"], np.zeros((batch_size - count, *shape), dtype)]
                ),
                "mask": np.arange(batch_size) < count,
            }
            if labeled:
                labels = batch.get("label", np.zeros((0,), np.int32))
                padded["label"] = np.concatenate(
                    [labels, np.zeros((batch_size - count,), np.int32)]
                )
            yield padded
        # Read the split to its end: destroying a tf.data iterator that still has prefetch
        # and map threads running stalled the caller for up to a minute.
        for _ in real:
            pass

    return batches()
