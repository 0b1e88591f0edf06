"""analyze(source, rules) -> Diagnosis: read the tables, measure each part, collect findings."""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Union

import pandas as pd

from gradscope.analysis import findings as finding_kinds
from gradscope.analysis.diagnosis import Diagnosis, Finding
from gradscope.analysis.measures import build_parts
from gradscope.analysis.nonfinite_origin import trace_nonfinite
from gradscope.analysis.nothing_recorded import NO_STEPS_ADVICE, no_steps_finding, recorded_steps
from gradscope.analysis.rules import Rules, as_rules
from gradscope.records import TableSource
from gradscope.store import open_source


def analyze(source: Union[TableSource, str, os.PathLike],
            rules: Optional[Union[Rules, Mapping[str, Any]]] = None) -> Diagnosis:
    """Verdicts with evidence and advice for a watched run. Never raises on bad gradients: NaN
    and Inf are findings.

    Args:
        source: a live ``Scope`` (``gradscope.watch``), a loaded ``Run`` (``gradscope.load``),
            another ``gradscope.records.TableSource``, or the path of a run folder.
        rules: a ``Rules``, a plain mapping of rule names (``Rules.from_mapping``), or None
            for the defaults.
    Returns:
        The Diagnosis: ``ok``, ``findings``, ``summary()``, ``per_step()``, ``to_dict()``.
    Raises:
        TypeError: a source it cannot read, or rules of another type.
        ValueError: an unknown rule name or a rule value that is not a number.
        FileNotFoundError: a run folder path that does not exist.
    """
    rules = as_rules(rules)
    source = open_source(source, "gradscope.analyze")
    timesteps, spectra, gates = source.timesteps(), source.spectra(), source.gates()
    meta = source.meta or {}
    name = source.name or meta.get("name") or type(source).__name__

    parts = build_parts(timesteps, spectra, gates, meta, rules)
    found = []
    for part in parts:
        for kind in finding_kinds.ALL:
            found.extend(kind(part, rules))
    forward = source.forward_nonfinite()
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
