"""The input checks of ``sde_jax.validation``: what passes, and what each error names."""

import math

import numpy as np
import pytest

from sde_jax import validation


def test_integer_accepts_and_converts():
    assert validation.integer("n", 3, minimum=1) == 3
    assert type(validation.integer("n", np.int64(5), minimum=1, maximum=5)) is int


@pytest.mark.parametrize(
    ("value", "bounds", "message"),
    [
        (0, {"minimum": 1}, "n must be an integer >= 1, got 0."),
        (True, {"minimum": 0}, "n must be an integer >= 0, got True."),
        (2.0, {}, "n must be an integer, got 2.0."),
        (9, {"minimum": 1, "maximum": 8}, "n must be an integer in [1, 8], got 9."),
        (9, {"maximum": 8}, "n must be an integer <= 8, got 9."),
    ],
)
def test_integer_errors_name_the_requirement(value, bounds, message):
    with pytest.raises(ValueError) as info:
        validation.integer("n", value, **bounds)
    assert str(info.value) == message


def test_real_and_positive():
    assert validation.real("x", 2) == 2.0
    assert validation.real("x", math.inf, allow_inf=True) == math.inf
    with pytest.raises(TypeError, match="x must be a real number, got '1' of type str"):
        validation.real("x", "1")
    with pytest.raises(ValueError, match="x must be a finite number, got inf"):
        validation.real("x", math.inf)
    with pytest.raises(ValueError, match="x must be a non-NaN number, got nan"):
        validation.real("x", math.nan, allow_inf=True)
    assert validation.positive("s", 0.5) == 0.5
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="s must be finite and > 0"):
            validation.positive("s", bad)
    with pytest.raises(TypeError):
        validation.positive("s", False)


def test_interval_ends():
    assert validation.interval("p", 1, 0.0, 1.0) == 1.0
    assert validation.interval("p", 0.0, 0.0, 1.0, closed=(True, False)) == 0.0
    for value, closed in ((0.0, (False, True)), (1.0, (True, False)), (math.nan, (True, True))):
        with pytest.raises(ValueError, match=r"p must be a number in [\[(]0.0, 1.0[\])]"):
            validation.interval("p", value, 0.0, 1.0, closed=closed)
    with pytest.raises(ValueError, match=r"in \(0.0, 1.0\], got 0.0"):
        validation.interval("p", 0.0, 0.0, 1.0, closed=(False, True))


def test_choice_lists_the_valid_values():
    assert validation.choice("method", "pc", ("pc", "ode")) == "pc"
    with pytest.raises(ValueError) as info:
        validation.choice("method", "pcc", ("pc", "ode"))
    assert str(info.value) == "method must be one of ['pc', 'ode'], got 'pcc'."
    with pytest.raises(ValueError, match=r"one of \['a', 'b'\], got \['x'\]"):
        validation.choice("k", ["x"], {"b": 1, "a": 2}, sort=True)
