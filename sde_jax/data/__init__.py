"""Input pipelines (tf.data) for training and evaluation.

Data sets (``data.dataset``, see :data:`DATASETS`):

- ``'cifar10'``, ``'celeb_a'`` (central 140x140 crop, then resized) and the LSUN scene
  categories as TFDS names them, ``'lsun/bedroom'``, ``'lsun/church_outdoor'`` ... (central
  square crop, then resized): TFDS data sets read from ``data.data_dir`` (a local directory or
  a bucket such as ``gs://...``; None: the TFDS default). Nothing is downloaded unless
  ``data.download`` is True; missing data fail at once with the ``tfds build`` command to run.
- ``'folder'``: every ``.png``/``.jpg``/``.jpeg`` file under ``data.data_dir``, recursively
  (FFHQ or CelebA-HQ as images); central square crop, then resized. One split: every split
  name reads all the files.
- ``'tfrecord'``: the files ``data.data_dir/*.tfrecord*``, each record a ``tf.train.Example``
  whose bytes feature ``'image'`` holds one PNG or JPEG image; central square crop, then
  resized. One split, as for folders.
- ``'digits'``: scikit-learn's 1797 8x8 handwritten digits (in its wheel; install with
  ``pip install -e '.[quickstart]'``), 8-bit gray, resized to ``image_size``; split ``'train'``
  is the first 1500, ``'test'`` the last 297.

CIFAR-10 and the digits have class labels (10 each): their batches also carry ``'label'``
(int32), for the noise-conditional classifier and class-conditional score models.

Every image is cropped, resized to ``image_size`` and rounded to 8 bits; training adds a random
horizontal flip (``data.random_flip``) and uniform dequantization
(``data.uniform_dequantization``); model space is [0, 1], or [-1, 1] with ``data.centered``.
Each host reads its own disjoint shard. The train stream is a pure function of the seed and
the shard and resumes exactly at any step (see ``sde_jax.data.pipeline``). TensorFlow is kept
off GPUs and TPUs when this package is imported.
"""

from sde_jax.data.pipeline import (
    DATASETS,
    LSUN_CATEGORIES,
    eval_iterator,
    image_shape,
    inverse_scaler,
    num_classes,
    num_eval_batches,
    scaler,
    train_iterator,
    validate,
)
from sde_jax.data.sources import hide_accelerators_from_tensorflow

hide_accelerators_from_tensorflow()

__all__ = [
    "DATASETS",
    "LSUN_CATEGORIES",
    "eval_iterator",
    "image_shape",
    "inverse_scaler",
    "num_classes",
    "num_eval_batches",
    "scaler",
    "train_iterator",
    "validate",
]
