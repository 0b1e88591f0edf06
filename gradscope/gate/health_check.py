"""The gradient-health gate (public as ``gradscope.check``): watch a model while a step runs,
then apply the Rules.

The same gate backs ``gradscope check`` (CLI), ``gradscope.check`` (Python) and
``gradscope.testing.assert_gradients_healthy`` (tests).
"""

from collections.abc import Mapping


class NothingRecordedError(RuntimeError):
    """``step()`` ran but no backward pass reached a watched module: nothing to judge.
    ``scope`` is the stopped Scope (``gradscope.analyze(error.scope)`` says so as a finding)."""

    def __init__(self, message, scope=None):
        super().__init__(message)
        self.scope = scope


def as_rules(rules):
    """A ``Rules`` from None (defaults), a ``Rules``, or a mapping of field overrides."""
    from gradscope.analysis import Rules

    if rules is None or isinstance(rules, Rules):
        return rules
    if isinstance(rules, Mapping):
        from gradscope.gate.config import make_rules

        return make_rules(rules)
    raise TypeError(f"rules must be a gradscope.Rules, a mapping of its fields, or None; got {type(rules).__name__}")


def measure(model, step, steps=1):
    """Watch ``model`` while ``step()`` runs ``steps`` times; return the stopped Scope.

    Raises ``NothingRecordedError`` when no step reached a watched module (so an empty
    measurement never passes as healthy); whatever ``step()`` raises passes through.
    """
    from gradscope.scope import watch

    if not callable(step):
        raise TypeError(f"step must be a callable that runs one forward and backward pass, got {type(step).__name__}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    with watch(model) as scope:
        for _ in range(steps):
            step()
    if len(scope.timesteps()) == 0:
        raise NothingRecordedError(
            f"step() ran {steps} time(s) but no backward pass went through a watched module of "
            f"{type(model).__name__}; make step() compute a loss from the model's output and call "
            "loss.backward() with gradients enabled",
            scope,
        )
    return scope


def check(model, step, rules=None, steps=1):
    """Watch ``model`` while ``step()`` runs ``steps`` times and return ``analyze``'s Diagnosis.

    ``step`` runs one forward and backward pass of ``model``; ``rules`` is a ``Rules``, a
    mapping of Rules fields to override, or None for the defaults. ``diagnosis.ok`` is the
    verdict: False when any finding has severity ``error``.
    """
    from gradscope.analysis import analyze

    rules = as_rules(rules)
    return analyze(measure(model, step, steps), rules)
