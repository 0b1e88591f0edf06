"""Test helpers: fail a test when gradients vanish or explode through time (public as ``gradscope.testing``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from gradscope.analysis.diagnosis import count_findings
from gradscope.display import compact_part_label
from gradscope.gate.health_check import RulesLike, check

if TYPE_CHECKING:
    import torch

    from gradscope.analysis.diagnosis import Diagnosis, Finding


def describe_findings(diagnosis: "Diagnosis", title: str = "gradients are not healthy") -> str:
    """A readable list of the findings, errors first, each with its advice.

    Args:
        diagnosis: what ``gradscope.analyze`` or ``gradscope.check`` returned.
        title: the first line's words, before the counts.
    Returns:
        The text, one finding per line (and its advice indented below).
    """
    order = {"error": 0, "warning": 1}
    findings = sorted(diagnosis.findings, key=lambda f: order.get(f.severity, 2))
    lines = [f"{title}: {count_findings(findings)}"]
    for f in findings:
        lines.append(f"- [{f.severity}] {f.kind} at {where(f)}: {f.message}")
        if f.advice:
            lines.append(f"    advice: {f.advice}")
    return "\n".join(lines)


def where(finding: "Finding") -> str:
    """``module l<layer> <direction>``, leaving out what the finding does not name."""
    return compact_part_label(finding.module, finding.layer, finding.direction)


def assert_gradients_healthy(model: "torch.nn.Module", step: Callable[[], object], rules: RulesLike = None,
                             steps: int = 1) -> "Diagnosis":
    """Run ``gradscope.check`` in a test and fail the test when gradients are not healthy.

    Args:
        model, step, rules, steps: as ``gradscope.check``.
    Returns:
        The Diagnosis when healthy, for further asserts.
    Raises:
        AssertionError: listing the findings (``describe_findings``) when ``diagnosis.ok`` is
            False.
    """
    diagnosis = check(model, step, rules=rules, steps=steps)
    if not diagnosis.ok:
        raise AssertionError(describe_findings(diagnosis))
    return diagnosis
