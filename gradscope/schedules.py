"""Schedules for ``gradscope.watch(every=...)``: which steps to record.

A schedule is any function ``step -> bool`` (``step`` counts from 0). The ready ones follow
Cockpit's ``utils/schedules.py``: ``linear`` records at a fixed interval, ``logarithmic`` records
many steps early in training and fewer later, when the gradients change more slowly. Both are
plain deterministic functions of the step, so every rank of a distributed run decides alike.
"""

import math
import numbers

import numpy as np

__all__ = ["linear", "logarithmic", "check_every"]


class _Schedule:
    """A named schedule: callable as ``schedule(step) -> bool``, with a readable repr that the
    run folder's meta.json keeps."""

    def __init__(self, description, decide):
        self._description = description
        self._decide = decide

    def __call__(self, step):
        return bool(self._decide(int(step)))

    def __repr__(self):
        return self._description


def _whole(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"gradscope.schedules: {name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def linear(interval, offset=0):
    """Record steps ``offset, offset + interval, offset + 2 * interval, ...``.

    Args:
        interval: steps between two records (a whole number >= 1).
        offset: the first recorded step (a whole number >= 0); earlier steps are not recorded.

    Returns:
        A schedule ``step -> bool``.
    """
    interval = _whole("linear(interval=...)", interval, 1)
    offset = _whole("linear(offset=...)", offset, 0)
    return _Schedule(f"linear(interval={interval}, offset={offset})",
                     lambda step: step >= offset and (step - offset) % interval == 0)


def logarithmic(start, end, steps=300, base=10, init=True):
    """Record about ``steps`` steps spaced evenly on a log scale between ``base**start`` and
    ``base**end`` (rounded down to whole steps; duplicates count once), plus step 0 if ``init``.

    ``logarithmic(0, 4, steps=50)`` records 46 steps: 0 to 7 each, then ever sparser up to
    10000 (about one in 2000 near the end), nothing after.

    Args:
        start: exponent of the first recorded step (a finite number >= 0).
        end: exponent of the last recorded step (finite, >= start).
        steps: how many points to place (a whole number >= 1).
        base: the logarithm's base (a finite number > 1).
        init: also record step 0.

    Returns:
        A schedule ``step -> bool``.
    """
    for name, value in (("start", start), ("end", end), ("base", base)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"gradscope.schedules: logarithmic({name}=...) must be a finite number, got {value!r}")
    if start < 0:
        raise ValueError(f"gradscope.schedules: logarithmic(start={start!r}) must be >= 0 "
                         "(base**start is the first recorded step)")
    if end < start:
        raise ValueError(f"gradscope.schedules: logarithmic(start={start!r}, end={end!r}): end must be >= start")
    if base <= 1:
        raise ValueError(f"gradscope.schedules: logarithmic(base={base!r}) must be > 1")
    steps = _whole("logarithmic(steps=...)", steps, 1)
    if base ** end > 2 ** 62:
        raise ValueError(f"gradscope.schedules: logarithmic(end={end!r}, base={base!r}) reaches step "
                         f"{base ** end:.3g}, beyond any training run; lower end")
    points = np.floor(np.logspace(start, end, steps, base=base) + 1e-9).astype(np.int64)
    chosen = frozenset(int(p) for p in points) | ({0} if init else frozenset())
    return _Schedule(f"logarithmic(start={start!r}, end={end!r}, steps={steps}, base={base!r}, init={bool(init)})",
                     chosen.__contains__)


def check_every(every, name="every"):
    """``every`` as given to ``watch`` (or ``spectra_every``, as ``name`` says): a whole number
    >= 1 or a schedule ``step -> bool``.

    Returns:
        The schedule to use (an int ``N`` becomes ``linear(N)``).

    Raises:
        ValueError or TypeError saying what to pass instead.
    """
    if callable(every):
        try:
            first = every(0)
        except Exception as err:
            raise TypeError(f"gradscope.watch({name}={every!r}): a schedule is called as schedule(step) -> bool "
                            f"with step = 0, 1, 2, ...; schedule(0) raised {type(err).__name__}: {err}") from err
        if not isinstance(first, (bool, np.bool_)):
            raise TypeError(f"gradscope.watch({name}={every!r}): a schedule must return True or False for each "
                            f"step; schedule(0) returned {first!r} ({type(first).__name__})")
        return every
    if isinstance(every, bool) or not isinstance(every, numbers.Integral) or every < 1:
        raise ValueError(f"gradscope.watch({name}={every!r}): {name} must be a whole number >= 1 "
                         "(1 records every step, 10 records steps 0, 10, 20, ...) or a schedule step -> bool, "
                         "such as gradscope.schedules.logarithmic(0, 4)")
    return linear(int(every))
