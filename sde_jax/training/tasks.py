"""What ``training.task`` trains, and the config checks of class-conditional training.

- ``'score'``: the score model by denoising score matching (``sde_jax.losses``); with
  ``model.num_classes`` set, a class-conditional NCSN++ / DDPM++ / DDPM, its labels replaced
  by the null label ``num_classes`` with probability ``training.label_dropout``
  (classifier-free guidance).
- ``'classifier'``: the noise-conditional Wide-ResNet classifier (``model.name=
  'wideresnet'``), by cross-entropy on data perturbed by the SDE (``sde_jax.classifier``).
"""

import ml_collections

from sde_jax import data

TASKS = ("score", "classifier")
"""Valid ``training.task`` values."""

CONDITIONAL_MODELS = ("ncsnpp", "ddpm")
"""Score networks with a class embedding (``model.num_classes``)."""


def check_task_options(config: ml_collections.ConfigDict) -> tuple[str, int | None]:
    """Validates ``training.task``, ``model.num_classes`` and ``training.label_dropout``.

    Returns:
      The task and the number of classes (None for an unconditional score model).

    Raises:
      ValueError: naming the key, the value and what was expected, for an unknown task, a
        classifier that is not a ``'wideresnet'`` or has no ``num_classes``, label dropout
        without a class-conditional model, a conditional model of another architecture, or
        ``num_classes`` that differs from the data set's (or a data set without labels).
    """
    t, model = config.training, config.model
    task = t.get("task", "score")
    if task not in TASKS:
        raise ValueError(f"training.task must be one of {list(TASKS)}, got {task!r}.")
    num_classes = model.get("num_classes", None)
    if task == "classifier" and num_classes is None:
        raise ValueError("training.task='classifier' needs model.num_classes, got None.")
    if task == "classifier" and model.name != "wideresnet":
        raise ValueError(
            f"training.task='classifier' needs model.name='wideresnet', got {model.name!r}."
        )
    if task == "score" and model.name == "wideresnet":
        raise ValueError("model.name='wideresnet' is a classifier: set training.task='classifier'.")
    rate = t.get("label_dropout", 0.0)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"training.label_dropout must be in [0, 1), got {rate!r}.")
    if rate > 0 and (task != "score" or num_classes is None):
        raise ValueError(
            f"training.label_dropout={rate} needs a class-conditional score model "
            "(training.task='score' and model.num_classes set)."
        )
    if task == "score" and num_classes is not None and model.name not in CONDITIONAL_MODELS:
        raise ValueError(
            f"model.num_classes={num_classes} (a class-conditional score model) needs "
            f"model.name in {list(CONDITIONAL_MODELS)}, got {model.name!r}."
        )
    if num_classes is not None:
        classes = data.num_classes(config.data)
        if classes is None:
            raise ValueError(
                f"model.num_classes={num_classes} needs class labels, but data.dataset="
                f"{config.data.dataset!r} has none."
            )
        if classes != num_classes:
            raise ValueError(
                f"model.num_classes must equal the {classes} classes of data.dataset="
                f"{config.data.dataset!r}, got {num_classes!r}."
            )
    return task, num_classes
