"""Checks of hyperparameters, shared by every task, method and backbone ``__init__``.

A comparison such as ``lr <= 0`` lets NaN through (every comparison with NaN is False), so a
run configured with ``lr=nan`` used to start and write NaN weights. Each check here rejects
non-numbers, bools and non-finite values first, then the range, and names the parameter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "check_bounds",
    "check_count",
    "check_finite",
    "check_non_negative",
    "check_positive",
    "check_probability",
]


def check_finite(name: str, value: object) -> float:
    """``value`` as a float if it is a finite real number.

    Raises:
        ValueError: ``value`` is not an int/float (bools rejected), or is NaN/inf.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def check_positive(name: str, value: object) -> float:
    """``value`` as a float if it is finite and > 0 (learning rates, temperatures...).

    Raises:
        ValueError: Not a finite number > 0.
    """
    number = check_finite(name, value)
    if number <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return number


def check_non_negative(name: str, value: object) -> float:
    """``value`` as a float if it is finite and >= 0 (weight decay, shrinkage, penalties...).

    Raises:
        ValueError: Not a finite number >= 0.
    """
    number = check_finite(name, value)
    if number < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return number


def check_probability(name: str, value: object, *, allow_one: bool = True) -> float:
    """``value`` as a float if it lies in ``[0, 1]`` (``[0, 1)`` without ``allow_one``).

    Raises:
        ValueError: Not a finite number in the interval.
    """
    number = check_finite(name, value)
    if not (0.0 <= number <= 1.0) or (not allow_one and number == 1.0):
        interval = "[0, 1]" if allow_one else "[0, 1)"
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")
    return number


def check_bounds(
    name: str, bounds: Sequence[object], low: float = 0.0, high: float = 1.0
) -> tuple[float, float]:
    """``bounds`` as ``(lo, hi)``: a pair of finite numbers, ``low <= lo <= hi <= high``.

    Raises:
        ValueError: Not a pair, a non-finite entry, outside ``[low, high]`` or reversed.
    """
    if isinstance(bounds, (str, bytes)) or len(bounds) != 2:
        raise ValueError(f"{name} must be a pair (low, high), got {bounds!r}")
    lo, hi = (check_finite(name, b) for b in bounds)
    if not low <= lo <= hi <= high:
        raise ValueError(
            f"{name} must be ordered bounds with {low} <= low <= high <= {high}, "
            f"got {tuple(bounds)}"
        )
    return lo, hi


def check_count(name: str, value: object, minimum: int = 1) -> int:
    """``value`` if it is an int >= ``minimum`` (bools rejected).

    Raises:
        ValueError: Not an int, or below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value
