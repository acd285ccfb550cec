"""Fingerprints of evaluation results: which settings determine each part.

Each part's result is stored under ``{part}-{fingerprint}`` (its ``summary.json`` entry, its
progress file ``bpd-<fp>.npz``, its sample directory ``samples-<fp>/``), where the
fingerprint hashes everything that determines it: the model, SDE and data sections, the
time conditioning (``training.continuous``), the seed, the checkpoint step, that the EMA
parameters are used, the version of the random streams the seed is folded into
(``sde_jax.experiment.rng.STREAMS_VERSION``), and the part's own keys (:data:`PART_KEYS`).
A rerun with other settings gets another fingerprint, so it computes a new entry beside the
old one instead of reusing it or completing it; the same settings again reuse it.

Results of versions before fingerprints (entries ``bpd``, ``samples``, files ``bpd.npz``,
``samples/``) are left on disk and ignored.
"""

from collections.abc import Mapping
from typing import Any

from sde_jax import validation
from sde_jax.evaluation import store
from sde_jax.experiment.rng import STREAMS_VERSION

COMMON_KEYS = ("model", "sde", "data", "seed", "training.continuous")
"""Config keys (sections or dotted keys) that determine every part."""

_LOSS = (
    "eval.batch_size",  # the loss's time and noise draws are per batch
    "training.task",
    "training.reduce_mean",
    "training.likelihood_weighting",
    "training.importance_sampling",
    "training.eps",
    "training.label_dropout",
)
_BPD = ("eval.batch_size", "eval.bpd_repeats", "eval.bpd_max_examples")
_SAMPLES = ("sampling", "eval.num_samples", "eval.batch_size")

PART_KEYS: dict[str, tuple[str, ...]] = {
    "bpd": _BPD,
    "bpd_train": _BPD,
    "loss": _LOSS,
    "samples": _SAMPLES,
    "quality": (*_SAMPLES, "eval.inception_path", "eval.reference_stats"),
}
"""The keys of each part beyond :data:`COMMON_KEYS` (batch size: key draws are per batch)."""


def _lookup(config: Any, dotted: str) -> Any:
    value = config
    for name in dotted.split("."):
        value = value.get(name) if hasattr(value, "get") else None
    return value.to_dict() if hasattr(value, "to_dict") else value


def settings(config: Any, part: str, step: int) -> dict[str, Any]:
    """The values that determine ``part`` of checkpoint ``step`` under ``config``.

    Raises:
      ValueError: for a part not in :data:`PART_KEYS`.
    """
    validation.choice("part", part, PART_KEYS, sort=True)
    values = {key: _lookup(config, key) for key in (*COMMON_KEYS, *PART_KEYS[part])}
    return {**values, "step": int(step), "ema": True, "rng": STREAMS_VERSION}


def part_fingerprint(config: Any, part: str, step: int) -> str:
    """The fingerprint of :func:`settings`."""
    return store.fingerprint(settings(config, part, step))


def entry(part: str, fingerprint: str) -> str:
    """The name of a result: ``summary.json`` key, and stem of its files."""
    return f"{part}-{fingerprint}"


def describe(step: int, part: str, fingerprint: str, summary: Mapping[str, Any]) -> str:
    """One line saying whether ``part`` is reused or recomputed, and why."""
    name = entry(part, fingerprint)
    if name in summary:
        return f"Step {step}: reusing {part} (fingerprint {fingerprint})."
    others = sorted(k for k in summary if k.startswith(f"{part}-") or k == part)
    if others:
        return (
            f"Step {step}: computing {part} (fingerprint {fingerprint}): the settings differ "
            f"from those of the stored {others}, which are kept and not reused."
        )
    return f"Step {step}: computing {part} (fingerprint {fingerprint})."
