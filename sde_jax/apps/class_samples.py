r"""Class-conditional samples of a trained checkpoint to files (``sde-jax sample --class=...``).

Two ways to condition, chosen by the score model's config:

- a class-conditional score model (``model.num_classes`` set, trained with label dropout):
  classifier-free guidance, :math:`(1 + w)\,s(x, t, y) - w\,s(x, t, \varnothing)` with
  ``guidance_scale`` w (0: the conditional model alone; see
  ``sde_jax.controllable.classifier_free_score``);
- an unconditional score model plus a noise-conditional classifier checkpoint (its config
  and workdir): classifier guidance, :math:`s(x, t) + \lambda \nabla_x \log p_t(y \mid x)`
  with ``guidance_scale`` :math:`\lambda` (1: the paper's eq. 48; see
  ``sde_jax.controllable.get_conditional_sampler``, built by
  ``build.conditional_sampler_from_config``). The classifier must have been trained with
  the same SDE, so its noise levels are those of the samples.

Sampling uses the score config's ``sampling`` section, in batches of
``training.sample_batch_size``; sample ``i`` gets class ``classes[i % len(classes)]``.
"""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from sde_jax import evaluation, images, validation
from sde_jax.apps import writers
from sde_jax.experiment import build
from sde_jax.experiment.bundle import Experiment
from sde_jax.experiment.rng import stream_key

__all__ = ["parse_classes", "sample_classes_to_files"]


def parse_classes(text: str) -> tuple[int, ...]:
    """``'3'`` or ``'0,3,7'`` as a tuple of ints.

    Raises:
      ValueError: naming the text if an entry is not an integer or none is given.
    """
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    try:
        classes = tuple(int(p) for p in parts)
    except ValueError as e:
        raise ValueError(f"--class must be an int or a comma-separated list, got {text!r}.") from e
    if not classes:
        raise ValueError(f"--class must name at least one class, got {text!r}.")
    return classes


def _check_classes(classes: Sequence[int], num_classes: int, source: str) -> None:
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise ValueError(
            f"classes must be in [0, {num_classes}) ({source} has {num_classes} classes), "
            f"got {list(classes)}."
        )


def _guided_sample_fn(config: Any, experiment: Experiment, classifier_config, classifier_workdir):
    """The guided sampler of the mode, its name, its class count and the classifier's params.

    The sampler is ``sample(key, params, classifier_params, labels, scale) -> SampleOutput``;
    the classifier's EMA parameters are None for classifier-free guidance.
    """
    from sde_jax import controllable

    t = config.training
    shape = (t.sample_batch_size, *experiment.image_shape)
    if experiment.num_classes is not None:
        if classifier_workdir is not None:
            raise ValueError(
                "the score model is class-conditional (model.num_classes set): it samples with "
                "classifier-free guidance; drop --classifier_workdir."
            )

        def cfg_sample(key, params, classifier_params, labels, scale):
            del classifier_params
            score = controllable.classifier_free_score(
                experiment.conditional_score_fn(params), labels, scale, experiment.num_classes
            )
            return experiment.sampler(key, score)

        return cfg_sample, "classifier-free", experiment.num_classes, None

    if classifier_workdir is None or classifier_config is None:
        raise ValueError(
            "the score model is unconditional (model.num_classes is None): class-conditional "
            "sampling needs a noise-conditional classifier, --classifier_config and "
            "--classifier_workdir (train one with configs/classifier/cifar10_wrn28_10.py)."
        )
    clf = Experiment(classifier_config)
    if clf.task_name != "classifier":
        raise ValueError(
            f"--classifier_config must be a classifier config (training.task='classifier'), "
            f"got training.task={clf.task_name!r}."
        )
    if build.build_sde(classifier_config.sde) != experiment.sde:
        raise ValueError(
            f"the classifier was trained with {clf.sde}, the score model with {experiment.sde}; "
            "classifier guidance needs the noise levels of the same SDE."
        )
    if classifier_config.model.num_classes is None:
        raise ValueError("--classifier_config has model.num_classes=None.")
    clf_params, clf_step = evaluation.restore_ema_params(clf, classifier_workdir)
    logging.info("Classifier: step %d of %s.", clf_step, classifier_workdir)
    sampler = build.conditional_sampler_from_config(experiment.sde, config.sampling, shape)

    def guided_sample(key, params, classifier_params, labels, scale):
        log_prob = controllable.classifier_log_prob_fn(clf.model, classifier_params, experiment.sde)
        return sampler(key, experiment.score_fn(params), log_prob, labels, scale)

    return guided_sample, "classifier", classifier_config.model.num_classes, clf_params


def sample_classes_to_files(
    config: Any,
    workdir: str,
    output: str,
    classes: Sequence[int],
    num_samples: int,
    guidance_scale: float = 1.0,
    *,
    classifier_config: Any = None,
    classifier_workdir: str | None = None,
    step: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draws ``num_samples`` images of ``classes`` with guidance; writes .npz and PNG grids.

    Args:
      config: the score model's experiment config.
      workdir: its working directory (the EMA parameters of checkpoint ``step`` are used).
      output: the .npz path: ``samples`` uint8 ``[n, H, W, C]``, ``labels`` int ``[n]``,
        ``step``, ``guidance_scale``, ``mode``. Beside it: ``<output>.png``, a grid with
        one row per class, and ``<output>_class<k>.png`` for each class k.
      classes: the classes to draw (sample i gets ``classes[i % len(classes)]``).
      num_samples: the number of images.
      guidance_scale: w of classifier-free guidance, or lambda of classifier guidance.
      classifier_config: the classifier's config (classifier guidance only).
      classifier_workdir: the classifier's working directory (classifier guidance only).
      step: the score model's checkpoint step (default: newest).

    Returns:
      The uint8 samples and their labels.

    Raises:
      ValueError: for a bad mode, classes outside ``[0, num_classes)``, ``num_samples < 1``,
        or a classifier trained with another SDE.
      FileNotFoundError: when a workdir has no checkpoint.
    """
    num_samples = validation.integer("num_samples", num_samples, minimum=1)
    classes = tuple(int(c) for c in classes)
    experiment = Experiment(config)
    if experiment.task_name != "score":
        raise ValueError(
            f"--config must be a score model's config, got task {experiment.task_name!r}."
        )
    sample, mode, num_classes, clf_params = _guided_sample_fn(
        config, experiment, classifier_config, classifier_workdir
    )
    _check_classes(classes, num_classes, "the classifier" if mode == "classifier" else "the model")
    params, step = evaluation.restore_ema_params(experiment, workdir, step)
    sample = jax.jit(sample)
    batch = config.training.sample_batch_size
    labels = np.asarray([classes[i % len(classes)] for i in range(num_samples)], np.int32)
    key = stream_key(config.seed, "class_samples")
    batches = []
    label = images.sampler_label(
        config.sampling.method, config.sampling.predictor, config.sampling.corrector
    )
    for start in range(0, num_samples, batch):
        chunk = labels[start : start + batch]
        padded = np.concatenate([chunk, np.full(batch - len(chunk), chunk[0], np.int32)])
        key_i = jax.random.fold_in(key, start)
        out = sample(key_i, params, clf_params, jnp.asarray(padded), guidance_scale)
        x = np.asarray(out.x)[: len(chunk)]
        images.check_finite(x, output, sampler=f"{label} ({mode} guidance)", step=step)
        batches.append(images.to_uint8(x, config.data.centered))
        logging.info(
            "Sampled %d/%d class-conditional images (%s guidance, scale %g).",
            start + len(chunk),
            num_samples,
            mode,
            guidance_scale,
        )
    samples = np.concatenate(batches)
    _write(output, samples, labels, classes, step=step, scale=guidance_scale, mode=mode)
    return samples, labels


def _write(output, samples, labels, classes, *, step, scale, mode) -> None:
    """The .npz, a grid with one row per class (padded with black) and one grid per class."""
    per_class = {c: samples[labels == c] for c in dict.fromkeys(classes)}
    columns = max(len(v) for v in per_class.values())
    rows = [
        np.concatenate([group, np.zeros((columns - len(group), *samples.shape[1:]), np.uint8)])
        for group in per_class.values()
    ]
    grids = [writers.Grid(np.concatenate(rows), columns=columns)]
    grids += [writers.Grid(group, suffix=f"_class{c}") for c, group in per_class.items()]
    arrays = dict(samples=samples, labels=labels, step=step, guidance_scale=scale, mode=mode)
    if writers.write_samples(output, arrays, grids):
        logging.info("Wrote %s, %s and one grid per class.", output, writers.png_path(output))
