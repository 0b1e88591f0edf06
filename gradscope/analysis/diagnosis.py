"""Finding and Diagnosis: what analyze returns, as objects, JSON and plain text."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List

import numpy as np
import pandas as pd

from gradscope.display import fmt, module_label

SEVERITIES = ("info", "warning", "error")

SUMMARY_COLUMNS = [
    "module", "layer", "direction", "cell", "gain", "horizon", "horizon_extrapolated",
    "required_horizon", "seq_len", "max_grad_norm", "nonfinite", "sigma_max", "method",
    "pairs", "steps", "first_verdict", "last_verdict", "verdict", "verdict_step", "flips",
    "gain_pooled", "horizon_pooled", "max_grad_norm_pooled", "pairs_pooled",
]
PER_STEP_COLUMNS = [
    "step", "module", "layer", "direction", "cell", "gain", "horizon", "max_grad_norm",
    "nonfinite", "method", "pairs", "verdict",
]


@dataclass
class Finding:
    """One verdict with its evidence and what to do about it.

    kind: ``vanishing``, ``exploding``, ``nonfinite``, ``saturation``, ``spectral_bound``,
    ``verdict_flips`` (or ``no_data``, ``no_steps``). module, layer and direction are None for a
    finding about the whole run. severity: ``error`` (the gradient is unusable), ``warning``
    (likely hurts training), ``info``. evidence: a dict of the numbers behind it (plain Python
    values). advice: concrete actions, with numbers, as one paragraph of text; its code sits
    between backticks (``code`` lists it).
    """

    kind: str
    severity: str
    module: str
    layer: int
    direction: str
    message: str
    evidence: Dict[str, Any] = field(default_factory=dict)
    advice: str = ""

    def __post_init__(self):
        if self.severity not in SEVERITIES:
            raise ValueError(f"Finding.severity must be one of {SEVERITIES}, got {self.severity!r}")

    @property
    def code(self) -> List[str]:
        """The code in ``advice``: each piece between backticks, valid Python that runs as
        written with ``model``, ``torch``, ``optimizer``, ``loss``, ``h`` and ``diagnosis``
        bound (docs/analyze.md, "Advice code")."""
        return re.findall(r"`([^`]+)`", self.advice or "")

    def to_dict(self) -> dict:
        return jsonable({
            "kind": self.kind, "severity": self.severity, "module": self.module,
            "layer": self.layer, "direction": self.direction, "message": self.message,
            "evidence": self.evidence, "advice": self.advice, "code": self.code,
        })

    def __str__(self) -> str:
        if self.module is None:  # a finding about the whole run (e.g. no_steps)
            where = "the whole run"
        else:
            where = f"{module_label(self.module)} layer {self.layer} {self.direction}"
        lines = [f"[{self.severity}] {self.kind} in {where}: {self.message}"]
        lines.extend(f"  {line}" for line in evidence_lines(self.evidence))
        if self.advice:
            lines.append(f"  advice: {self.advice}")
        return "\n".join(lines)


class Diagnosis:
    """The result of :func:`gradscope.analyze`.

    ``ok``: no finding of severity ``error``. ``findings``: list of Finding, most severe first.
    ``summary()``: one row per (module, layer, direction). ``per_step()``: one row per recorded
    step and part. ``to_dict()``: JSON-serialisable. ``str(diagnosis)``: a terminal report.
    """

    def __init__(self, name, findings, summary, per_step, rules):
        self.name = name
        self.findings: List[Finding] = sorted(
            findings, key=lambda f: -SEVERITIES.index(f.severity))
        self._summary = summary.reindex(columns=SUMMARY_COLUMNS)
        # None where the pooled numbers decide (the latest step has no gain): a nullable int
        self._summary["verdict_step"] = self._summary["verdict_step"].astype("Int64")
        self._per_step = per_step.reindex(columns=PER_STEP_COLUMNS)
        self.rules = rules

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    def summary(self) -> pd.DataFrame:
        """gain, horizon, max_grad_norm, nonfinite, sigma_max, verdict and more, per part."""
        return self._summary.copy()

    def per_step(self) -> pd.DataFrame:
        """The same measurements for each recorded step alone: did it start healthy and degrade?"""
        return self._per_step.copy()

    def by_kind(self, kind: str) -> List[Finding]:
        """The findings of one kind.

        Args:
            kind: ``"vanishing"``, ``"exploding"``, ``"nonfinite"``, ``"saturation"``, ...
        Returns:
            Those findings, most severe first.
        """
        return [f for f in self.findings if f.kind == kind]

    def to_dict(self) -> dict:
        """Plain JSON types only: numpy numbers become Python numbers, NaN becomes None,
        +inf/-inf become the strings "inf"/"-inf" (a horizon of "inf": the gradient does not
        decay). ``json.dumps(d, allow_nan=False)`` works."""
        return jsonable({
            "name": self.name,
            "ok": self.ok,
            "rules": self.rules.to_dict(),
            "summary": self._summary.to_dict(orient="records"),
            "per_step": self._per_step.to_dict(orient="records"),
            "findings": [f.to_dict() for f in self.findings],
        })

    def __str__(self) -> str:
        status = "OK" if self.ok else "NOT OK"
        head = f"gradscope diagnosis of {self.name}: {status} ({count_findings(self.findings)})"
        lines = [head, ""]
        if not self._summary.empty:
            lines.append(verdict_table(self._summary))
            lines.append("")
        lines.extend(str(f) for f in self.findings)
        return "\n".join(lines).rstrip() + "\n"

    def __repr__(self) -> str:
        return (f"<Diagnosis {self.name!r} ok={self.ok} findings="
                f"{[f'{f.severity}:{f.kind}' for f in self.findings]}>")


def count_findings(findings) -> str:
    """``"1 error(s), 2 warning(s), 0 info"``: the one way gradscope counts findings (terminal,
    check output, report page), so that no two places disagree.

    Args:
        findings: an iterable of Finding (or anything with a ``severity``).
    Returns:
        The counts per severity, most severe first.
    """
    severities = [f.severity for f in findings]
    return (f"{severities.count('error')} error(s), {severities.count('warning')} warning(s), "
            f"{severities.count('info')} info")


def jsonable(value):
    """``value`` with numpy types, NaN and inf made plain JSON (see Diagnosis.to_dict)."""
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return [jsonable(item) for item in value.tolist()]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if value is None or isinstance(value, str):
        return value
    if value is pd.NA or value is pd.NaT:
        return None
    return str(value)


def evidence_lines(evidence: Dict[str, Any]) -> List[str]:
    """A finding's evidence as text: ``evidence: key=value, ...`` for the numbers, then one
    ``key: sentence`` line for each sentence.

    Args:
        evidence: ``Finding.evidence``.
    Returns:
        The lines, without indent.
    """
    numbers, sentences = [], []
    for key, value in (evidence or {}).items():
        if isinstance(value, str) and " " in value:
            sentences.append(f"{key}: {value}")
        else:
            shown = str(value) if isinstance(value, (bool, str)) else fmt(value, digits=4)
            numbers.append(f"{key}={shown}")
    return ([f"evidence: {', '.join(numbers)}"] if numbers else []) + sentences


# the terminal verdict table (str(diagnosis), gradscope check, its Markdown summary):
# (summary column, title); numbers right-aligned
VERDICT_TABLE = [("module", "module"), ("layer", "layer"), ("direction", "direction"), ("cell", "cell"),
                 ("verdict_step", "step"), ("gain", "gain"), ("horizon", "horizon"),
                 ("max_grad_norm", "max_grad_norm"), ("nonfinite", "nonfinite"), ("sigma_max", "sigma_max"),
                 ("verdict", "verdict")]
_TEXT_COLUMNS = {"module", "direction", "cell", "verdict"}


def verdict_cells(summary: pd.DataFrame) -> List[List[str]]:
    """The verdict table's rows as display strings, one per module, layer and direction.

    Args:
        summary: ``Diagnosis.summary()`` (a column it lacks shows as ``n/a``).
    Returns:
        One list of strings per row, in ``VERDICT_TABLE`` order.
    """
    rows = []
    for record in summary.to_dict(orient="records"):
        cells = []
        for column, _ in VERDICT_TABLE:
            value = record.get(column)
            if column == "module":
                cells.append(module_label(value))
            elif column == "verdict_step" and (value is None or value is pd.NA):
                cells.append("all")  # the latest step had no gain: the pooled numbers decide
            else:
                cells.append(fmt(value, digits=4))
        rows.append(cells)
    return rows


def verdict_table(summary: pd.DataFrame) -> str:
    """The terminal verdict table: a header and one aligned line per part.

    Args:
        summary: ``Diagnosis.summary()``.
    Returns:
        The table, or ``(nothing measured)`` when the summary is empty.
    """
    rows = verdict_cells(summary)
    if not rows:
        return "(nothing measured)"
    header = [title for _, title in VERDICT_TABLE]
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]

    def line(cells):
        return "  ".join(cell.ljust(w) if column in _TEXT_COLUMNS else cell.rjust(w)
                         for cell, w, (column, _) in zip(cells, widths, VERDICT_TABLE)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(cells) for cells in rows])
