"""analyze(source, rules) -> Diagnosis: read the tables, measure each part, collect findings."""

from __future__ import annotations

import os

import pandas as pd

from gradscope.analysis import findings as finding_kinds
from gradscope.analysis.diagnosis import Diagnosis, Finding
from gradscope.analysis.measures import build_parts
from gradscope.analysis.nonfinite_origin import trace_nonfinite
from gradscope.analysis.nothing_recorded import NO_STEPS_ADVICE, no_steps_finding, recorded_steps
from gradscope.analysis.rules import Rules


def analyze(source, rules=None) -> Diagnosis:
    """Verdicts with evidence and advice for a watched run.

    source: a live ``Scope`` (``gradscope.watch``), a loaded ``Run`` (``gradscope.load``), or
    the path of a run folder. rules: a ``Rules``, a plain mapping of rule names (see
    ``Rules.from_mapping``), or None for the defaults. Never raises on bad gradients (NaN and
    Inf are findings); raises TypeError for a source it cannot read.
    """
    rules = _rules(rules)
    source = _resolve(source)
    timesteps = _table(source, "timesteps")
    spectra = _table(source, "spectra")
    gates = _table(source, "gates")
    meta = getattr(source, "meta", None) or {}
    name = getattr(source, "name", None) or meta.get("name") or type(source).__name__

    parts = build_parts(timesteps, spectra, gates, meta, rules)
    found = []
    for part in parts:
        for kind in finding_kinds.ALL:
            found.extend(kind(part, rules))
    forward = _table(source, "forward_nonfinite")
    found = [trace_nonfinite(f, forward, meta) for f in found]
    if not recorded_steps(timesteps, spectra, gates):
        found.append(no_steps_finding(source))
    elif not parts:
        found.append(Finding(
            kind="no_data", severity="warning", module=None, layer=None, direction=None,
            message="no per-timestep gradient was recorded: the recorded steps hold weight "
                    "spectra only (no backward pass went through a watched recurrent part)",
            evidence={"timesteps_rows": 0},
            advice=NO_STEPS_ADVICE))
    summary = pd.DataFrame([part.numbers for part in parts])
    per_step = (pd.concat([part.per_step for part in parts], ignore_index=True)
                if parts else pd.DataFrame())
    return Diagnosis(str(name), found, summary, per_step, rules)


def _rules(rules) -> Rules:
    if rules is None:
        return Rules()
    if isinstance(rules, Rules):
        return rules
    if hasattr(rules, "items"):
        return Rules.from_mapping(rules)
    raise TypeError(f"rules must be a gradscope.Rules, a mapping of rule names or None, "
                    f"got {type(rules).__name__}")


def _resolve(source):
    if isinstance(source, (str, os.PathLike)):
        from gradscope.store import load  # written alongside; imported when first needed
        return load(source)
    if not callable(getattr(source, "timesteps", None)):
        raise TypeError(
            f"gradscope.analyze needs a Scope (gradscope.watch), a Run (gradscope.load) or a "
            f"run folder path; got {type(source).__name__}, which has no timesteps() method")
    return source


def _table(source, name):
    """The table, or None when the source does not offer it (a minimal custom source)."""
    method = getattr(source, name, None)
    if not callable(method):
        return None
    frame = method()
    return frame if isinstance(frame, pd.DataFrame) else pd.DataFrame(frame)
