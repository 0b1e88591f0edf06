"""Rules: every threshold the analyzers apply, each with its default and the reason for it."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional


@dataclass(frozen=True)
class Rules:
    """Thresholds for :func:`gradscope.analyze`. Build with keywords (``Rules(min_horizon=100)``)
    or from a plain mapping (``Rules.from_mapping({"min_horizon": 100})``), as the CI gate does
    with ``[tool.gradscope.check]`` in ``pyproject.toml``.

    The per-step gain ``g`` is the geometric mean of carried_t / total_{t+1}: how much of the
    gradient survives one step back through the recurrence (see docs/analyze.md). After k steps
    back a gradient keeps about ``g**k`` of its size.
    """

    horizon_ratio: float = 1e-3
    """The horizon is the number of steps back before the product of gains falls below this
    share of the gradient's size. 1e-3: a gradient a thousand times smaller than the one the
    loss injects is lost in the noise of the recent steps' gradients (and of the optimizer's
    epsilon), so the model cannot learn from that far back."""

    min_horizon: Optional[float] = None
    """Vanishing when the horizon is shorter than this many steps. ``None`` (default): the
    longest sequence observed for that part (its number of time steps per call), i.e. the
    gradient must reach back over the whole sequence the model is trained on. Set it to the
    dependency length you need when you know it (a copy task with a lag of 100: 100).
    With the default and sequences of 60 steps, a linear tanh RNN with gain 0.8 (horizon 31)
    is vanishing and one with gain 0.95 (horizon 135) is healthy."""

    min_gain: float = 0.25
    """Vanishing whenever the gain is below this, whatever the sequence length: at 0.25 the
    gradient from 5 steps back is already below 1e-3 of its size (0.25**5 ~ 1e-3), which no
    sequence task survives. It catches short sequences where the horizon test is lenient."""

    exploding_eps: float = 0.05
    """Exploding when the gain exceeds 1 + exploding_eps: a sustained per-step growth of 5%
    multiplies the gradient by 18 over 60 steps and by 1e21 over 1000. Smaller excesses are
    within the noise of batch-mean norms for gains that are 1 in exact arithmetic."""

    max_growth: float = 1e3
    """Exploding also when the gain compounded over the required horizon (``min_horizon``, or
    the observed sequence length) exceeds this factor: a gain of 1.02 is within
    ``exploding_eps`` but grows a gradient 4e8-fold over 1000 steps. 1e3 mirrors
    ``horizon_ratio`` (the same factor, the other way)."""

    max_grad_norm: float = 1e6
    """Exploding when any recorded state gradient norm (batch mean of the L2 norm of dL/dh_t)
    exceeds this. The gain tests are scale-free; this bound catches a blow-up that the
    geometric mean hides (a few huge steps). 1e6 is far above any gradient of an O(1) loss;
    with mixed-precision loss scaling (GradScaler multiplies the loss by up to 65536) raise it
    by the scale factor, or watch the unscaled loss."""

    saturation_share: float = 0.5
    """A gate is saturated when more than this share of its activations sit within 0.05 of one
    of its bounds (sigmoid: 0 or 1; tanh: -1 or +1; relu: exactly 0, i.e. dead). There the
    derivative is below ~0.05 and the gate's own weights barely learn. 0.5: most of them."""

    clip_quantile: float = 0.5
    """The suggested ``clip_grad_norm_`` threshold is this quantile of the nonzero direct
    gradient norms (what the loss injects at each step, before any amplification through
    time), rounded to two significant digits. 0.5: the median, a typical healthy size."""

    norm_floor: float = 1e-30
    """Pairs (t, t+1) whose next-step total norm is below this are skipped in the gain: float32
    underflows near 1e-38, and a ratio of numbers that close to it is rounding, not signal."""

    def __post_init__(self):
        _check_range("horizon_ratio", self.horizon_ratio, 0.0, 1.0)
        if self.min_horizon is not None and not self.min_horizon > 0:
            raise ValueError(f"Rules.min_horizon must be > 0 or None, got {self.min_horizon!r}")
        _check_range("min_gain", self.min_gain, 0.0, 1.0, low_inclusive=True)
        if not self.exploding_eps >= 0:
            raise ValueError(f"Rules.exploding_eps must be >= 0, got {self.exploding_eps!r}")
        if not self.max_growth > 1:
            raise ValueError(f"Rules.max_growth must be > 1, got {self.max_growth!r}")
        if not self.max_grad_norm > 0:
            raise ValueError(f"Rules.max_grad_norm must be > 0, got {self.max_grad_norm!r}")
        _check_range("saturation_share", self.saturation_share, 0.0, 1.0, high_inclusive=True)
        _check_range("clip_quantile", self.clip_quantile, 0.0, 1.0, high_inclusive=True)
        if not self.norm_floor >= 0:
            raise ValueError(f"Rules.norm_floor must be >= 0, got {self.norm_floor!r}")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> "Rules":
        """Rules from a plain mapping of field names (e.g. a TOML table or parsed flags).
        Dashes in keys are read as underscores; unknown keys raise a ValueError naming them
        and the known fields."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {str(key).replace("-", "_"): value for key, value in dict(mapping).items()}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown gradscope rule(s): {', '.join(unknown)}; "
                f"known rules: {', '.join(sorted(known))}")
        values = {key: _number(key, value) for key, value in values.items()}
        return cls(**values)

    def to_dict(self) -> dict:
        """The fields as a plain dict (``Rules.from_mapping(r.to_dict()) == r``)."""
        return dataclasses.asdict(self)

    def required_horizon(self, seq_len: float) -> float:
        """The horizon a part must reach: ``min_horizon`` or the observed sequence length."""
        if self.min_horizon is not None:
            return float(self.min_horizon)
        return float(seq_len) if seq_len and seq_len > 0 else math.nan


def as_rules(rules: Optional[Rules | Mapping[str, Any]]) -> Rules:
    """The one way gradscope reads a ``rules=`` argument (analyze, check, the CI gate).

    Args:
        rules: a ``Rules``; a mapping of rule names to values (``Rules.from_mapping``: dashes
            read as underscores, values as numbers); or None for the defaults.
    Returns:
        The Rules.
    Raises:
        ValueError: an unknown rule name or a value that is not a number.
        TypeError: anything else.
    """
    if rules is None:
        return Rules()
    if isinstance(rules, Rules):
        return rules
    if isinstance(rules, Mapping):
        return Rules.from_mapping(rules)
    raise TypeError(f"rules must be a gradscope.Rules, a mapping of rule names (e.g. {{'min_horizon': 100}}) "
                    f"or None, got {type(rules).__name__}")


def _number(key, value):
    if key == "min_horizon" and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"gradscope rule {key} must be a number, got {value!r}")
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"gradscope rule {key} must be a number, got {value!r}") from None


def _check_range(name, value, low, high, low_inclusive=False, high_inclusive=False):
    above = value >= low if low_inclusive else value > low
    below = value <= high if high_inclusive else value < high
    if not (above and below):
        lo, hi = ("[" if low_inclusive else "("), ("]" if high_inclusive else ")")
        raise ValueError(f"Rules.{name} must be in {lo}{low}, {high}{hi}, got {value!r}")
