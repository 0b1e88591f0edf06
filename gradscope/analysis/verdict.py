"""The verdict of a set of measurements under Rules, and the order of verdicts by gravity."""

from __future__ import annotations

import math
import numbers

# least to most grave; "unknown": too few finite pairs to measure a gain (e.g. one time step)
ORDER = ("healthy", "unknown", "vanishing", "exploding", "nonfinite")


def verdict(gain, horizon, max_grad_norm, nonfinite, required_horizon, rules) -> str:
    """nonfinite > exploding > vanishing > unknown > healthy, first test that holds wins."""
    if nonfinite > 0:
        return "nonfinite"
    if is_exploding(gain, max_grad_norm, required_horizon, rules):
        return "exploding"
    if is_vanishing(gain, horizon, required_horizon, rules):
        return "vanishing"
    if not _finite(gain):
        return "unknown"
    return "healthy"


def is_exploding(gain, max_grad_norm, required_horizon, rules) -> bool:
    if _finite(max_grad_norm) and max_grad_norm > rules.max_grad_norm:
        return True
    if not _finite(gain):
        return False
    if gain > 1.0 + rules.exploding_eps:
        return True
    return growth(gain, required_horizon) > rules.max_growth


def is_vanishing(gain, horizon, required_horizon, rules) -> bool:
    if not _finite(gain):
        return False
    if gain < rules.min_gain:
        return True
    return _finite(required_horizon) and horizon < required_horizon


def growth(gain, steps) -> float:
    """gain**steps, the factor a gradient changes by over ``steps`` steps back (inf-safe)."""
    if not (_finite(gain) and _finite(steps)) or gain <= 0:
        return math.nan
    exponent = steps * math.log(gain)
    return math.inf if exponent > 700 else math.exp(exponent)


def worst(*verdicts) -> str:
    return max(verdicts, key=ORDER.index)


def _finite(x) -> bool:
    return isinstance(x, numbers.Real) and math.isfinite(x)
