"""Checks of user input made in Python before tracing, with errors that name what is wrong.

Every check names the argument (or config key), the value received and what was expected:
``num_steps must be an integer >= 2, got 1.``, ``sampling.method must be one of ['ddim',
'pc'], got 'pcc'.``. They return the value converted to a plain Python number, so a caller
validates and converts in one line. Booleans are refused where numbers are expected
(``True`` is an ``int`` in Python, never a step count).
"""

import math
import numbers
from collections.abc import Collection
from typing import Any


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def integer(
    name: str,
    value: object,
    minimum: int | None = None,
    maximum: int | None = None,
    meaning: str = "",
) -> int:
    """``value`` as an int, if it is an integer in ``[minimum, maximum]`` (bounds optional).

    Args:
      name: the argument or config key, as the user spells it.
      value: what was received.
      minimum: the smallest valid value, or None.
      maximum: the largest valid value, or None.
      meaning: appended to the requirement, e.g. ``" (steps per jitted call)"``.

    Raises:
      ValueError: naming ``name``, the requirement and ``value``.
    """
    ok = _is_int(value)
    ok = ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    if not ok:
        if minimum is not None and maximum is not None:
            bound = f" in [{minimum}, {maximum}]"
        elif minimum is not None:
            bound = f" >= {minimum}"
        elif maximum is not None:
            bound = f" <= {maximum}"
        else:
            bound = ""
        raise ValueError(f"{name} must be an integer{bound}{meaning}, got {value!r}.")
    return int(value)


def real(name: str, value: object, allow_inf: bool = False) -> float:
    """``value`` as a float, if it is a real number, not NaN, and finite unless ``allow_inf``.

    Raises:
      TypeError: if ``value`` is not a real number (booleans included).
      ValueError: if it is NaN, or infinite and ``allow_inf`` is False.
    """
    if not _is_real(value):
        kind = type(value).__name__
        raise TypeError(f"{name} must be a real number, got {value!r} of type {kind}.")
    if math.isnan(value) or (math.isinf(value) and not allow_inf):
        kind = "a non-NaN" if allow_inf else "a finite"
        raise ValueError(f"{name} must be {kind} number, got {value!r}.")
    return float(value)


def positive(name: str, value: object) -> float:
    """``value`` as a float, if it is a finite real number > 0.

    Raises:
      TypeError: if ``value`` is not a real number.
      ValueError: if it is not finite or not > 0.
    """
    if not _is_real(value):
        raise TypeError(f"{name} must be a real number, got {value!r}.")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}.")
    return float(value)


def interval(
    name: str,
    value: object,
    low: float,
    high: float,
    closed: tuple[bool, bool] = (True, True),
) -> float:
    """``value`` as a float, if it is a real number in the interval from ``low`` to ``high``.

    Args:
      name: the argument or config key.
      value: what was received.
      low: the lower end.
      high: the upper end.
      closed: whether each end belongs to the interval: ``(True, False)`` is ``[low, high)``.

    Raises:
      ValueError: naming ``name``, the interval and ``value``.
    """
    ok = _is_real(value) and not math.isnan(value)
    if ok:
        ok = (value >= low if closed[0] else value > low) and (
            value <= high if closed[1] else value < high
        )
    if not ok:
        shown = f"{'[' if closed[0] else '('}{low}, {high}{']' if closed[1] else ')'}"
        raise ValueError(f"{name} must be a number in {shown}, got {value!r}.")
    return float(value)


def choice(name: str, value: Any, choices: Collection[Any], sort: bool = False) -> Any:
    """``value``, if it is one of ``choices``.

    Args:
      name: the argument or config key.
      value: what was received.
      choices: the valid values, listed in the error in their order (sorted if ``sort``).
      sort: list the choices sorted (for mappings and sets, whose order means nothing).

    Raises:
      ValueError: naming ``name``, the valid choices and ``value``.
    """
    try:
        valid = value in choices
    except TypeError:  # an unhashable value asked of a set or a mapping
        valid = False
    if not valid:
        shown = sorted(choices) if sort else list(choices)
        raise ValueError(f"{name} must be one of {shown}, got {value!r}.")
    return value
