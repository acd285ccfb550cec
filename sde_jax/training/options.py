"""Checks of the ``training`` section's values, run before anything is traced or compiled."""

from collections.abc import Mapping
from typing import Any

_POSITIVE_INTS = ("n_iters", "n_jitted_steps", "batch_size", "sample_batch_size")
_FREQUENCIES = ("log_freq", "eval_freq", "snapshot_freq", "snapshot_freq_for_preemption")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(name: str, value: Any, minimum: int, meaning: str) -> None:
    if not _is_int(value) or value < minimum:
        raise ValueError(
            f"training.{name} must be an integer >= {minimum}{meaning}, got {value!r}."
        )


def _check_fraction(name: str, value: Any, low_open: bool) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    ok = ok and (value > 0.0 if low_open else value >= 0.0) and value <= 1.0
    if not ok:
        bounds = "(0, 1]" if low_open else "[0, 1]"
        raise ValueError(f"training.{name} must be a number in {bounds}, got {value!r}.")


def check_training_options(training: Mapping[str, Any]) -> None:
    """Validates the ``training`` section (steps, frequencies, sizes, flags).

    Args:
      training: the config's ``training`` section.

    Raises:
      ValueError: naming the key, the value and the valid range, for the first bad value.
      TypeError: if ``training.allow_config_change`` is not a bool.
    """
    for name in _POSITIVE_INTS:
        _check_int(name, training[name], 1, "")
    for name in _FREQUENCIES:
        _check_int(name, training[name], 0, " (steps between events; 0: never)")
    if training.get("max_to_keep") is not None:
        _check_int("max_to_keep", training["max_to_keep"], 1, " or None (keep all)")
    _check_fraction("eps", training["eps"], low_open=True)
    if "label_dropout" in training:
        _check_fraction("label_dropout", training["label_dropout"], low_open=False)
    allow = training.get("allow_config_change", False)
    if not isinstance(allow, bool):
        raise TypeError(f"training.allow_config_change must be True or False, got {allow!r}.")
