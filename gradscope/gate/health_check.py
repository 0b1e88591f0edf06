"""The gradient-health gate (public as ``gradscope.check``): watch a model while a step runs,
then apply the Rules.

The same gate backs ``gradscope check`` (CLI), ``gradscope.check`` (Python) and
``gradscope.testing.assert_gradients_healthy`` (tests).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping, Union

if TYPE_CHECKING:  # imported when first used: the pytest plugin loads this module in every session
    import torch

    from gradscope.analysis.diagnosis import Diagnosis
    from gradscope.analysis.rules import Rules
    from gradscope.scope import Scope

RulesLike = Union[None, "Rules", Mapping[str, Any]]


class NothingRecordedError(RuntimeError):
    """``step()`` ran but no backward pass reached a watched module: nothing to judge.
    ``scope`` is the stopped Scope (``gradscope.analyze(error.scope)`` says so as a finding)."""

    def __init__(self, message, scope=None):
        super().__init__(message)
        self.scope = scope


def watch_steps(model: torch.nn.Module, step: Callable[[], object], steps: int = 1) -> Scope:
    """Watch ``model`` while ``step()`` runs ``steps`` times.

    Args:
        model: the model to watch.
        step: runs one forward and backward pass of ``model``.
        steps: how many times to call ``step``.
    Returns:
        The stopped Scope.
    Raises:
        NothingRecordedError: no step reached a watched module (an empty measurement never
            passes as healthy). Whatever ``step()`` raises passes through.
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


def check(model: torch.nn.Module, step: Callable[[], object], rules: RulesLike = None,
          steps: int = 1) -> Diagnosis:
    """Watch ``model`` while ``step()`` runs ``steps`` times and apply the Rules.

    Args:
        model: the model to watch.
        step: runs one forward and backward pass of ``model``.
        rules: a ``Rules``, a mapping of Rules fields to override, or None for the defaults.
        steps: how many times to call ``step``.
    Returns:
        ``analyze``'s Diagnosis; ``diagnosis.ok`` is the verdict (False when any finding has
        severity ``error``).
    Raises:
        NothingRecordedError: see ``watch_steps``.
        ValueError: an unknown rule name, before ``step`` runs.
    """
    from gradscope.analysis import analyze
    from gradscope.analysis.rules import as_rules

    rules = as_rules(rules)
    return analyze(watch_steps(model, step, steps), rules)
