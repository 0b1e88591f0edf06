"""Verdicts over training: how a part's per-step verdicts developed, in words and numbers."""

from __future__ import annotations


def trend(part, kind) -> dict:
    """Evidence entries saying at which recorded steps ``part`` had verdict ``kind``, and
    whether it started healthy and degraded (``degraded``: the first recorded step was
    healthy, the latest is ``kind``)."""
    steps = part.per_step
    if steps.empty:
        return {}
    first, last = steps.iloc[0], steps.iloc[-1]
    hit = steps[steps["verdict"] == kind]
    n = len(steps)
    evidence = {
        "steps_recorded": n,
        "steps_with_verdict": int(len(hit)),
        "first_step_verdict": first["verdict"],
        "last_step_verdict": last["verdict"],
        "degraded": bool(first["verdict"] == "healthy" and last["verdict"] == kind),
    }
    if not hit.empty:
        evidence["first_step_with_verdict"] = int(hit["step"].iloc[0])
    evidence["trend"] = _words(first, last, hit, n, kind)
    return evidence


def _words(first, last, hit, n, kind) -> str:
    at = lambda row: f"step {int(row['step'])}, gain {row['gain']:.3g}"
    if n == 1:
        return f"one recorded step ({at(first)}): {first['verdict']}"
    if hit.empty:
        return (f"no single recorded step is {kind} on its own; the run as a whole is "
                f"({n} steps, first {first['verdict']}, latest {last['verdict']})")
    if len(hit) == n:
        return f"{kind} at every recorded step ({n}, from {at(first)} to {at(last)})"
    onset = hit.iloc[0]
    if first["verdict"] == "healthy" and last["verdict"] == kind:
        return (f"started healthy ({at(first)}) and degraded: {kind} from step "
                f"{int(onset['step'])} on, latest {at(last)}")
    if first["verdict"] == kind and last["verdict"] != kind:
        return (f"{kind} at first ({at(first)}), {last['verdict']} by the latest "
                f"recorded step ({at(last)})")
    return f"{kind} at {len(hit)} of {n} recorded steps, first at step {int(onset['step'])}"
