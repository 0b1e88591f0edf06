"""Test helpers: fail a test when gradients vanish or explode through time (public as ``gradscope.testing``)."""

from gradscope.analysis.diagnosis import count_findings
from gradscope.gate.health_check import check


def describe_findings(diagnosis, title="gradients are not healthy"):
    """A readable list of the findings, errors first, each with its advice."""
    order = {"error": 0, "warning": 1}
    findings = sorted(diagnosis.findings, key=lambda f: order.get(f.severity, 2))
    lines = [f"{title}: {count_findings(findings)}"]
    for f in findings:
        lines.append(f"- [{f.severity}] {f.kind} at {where(f)}: {f.message}")
        if f.advice:
            lines.append(f"    advice: {f.advice}")
    return "\n".join(lines)


def where(finding):
    """``module l<layer> <direction>``, leaving out what the finding does not name."""
    parts = [finding.module if finding.module else ("(root)" if finding.module == "" else "(model)")]
    if finding.layer is not None:
        parts.append(f"l{finding.layer}")
    if finding.direction:
        parts.append(str(finding.direction))
    return " ".join(parts)


def assert_gradients_healthy(model, step, rules=None, steps=1):
    """Run ``gradscope.check`` and raise ``AssertionError`` listing the findings when not ok.

    Returns the Diagnosis when healthy, for further asserts.
    """
    diagnosis = check(model, step, rules=rules, steps=steps)
    if not diagnosis.ok:
        raise AssertionError(describe_findings(diagnosis))
    return diagnosis
