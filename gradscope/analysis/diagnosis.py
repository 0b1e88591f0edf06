"""Finding and Diagnosis: what analyze returns, as objects, JSON and plain text."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List

import numpy as np
import pandas as pd

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
            where = f"{self.module or '<root>'} layer {self.layer} {self.direction}"
        lines = [f"[{self.severity}] {self.kind} in {where}: {self.message}"]
        numbers = {k: v for k, v in self.evidence.items() if not _is_sentence(v)}
        sentences = {k: v for k, v in self.evidence.items() if _is_sentence(v)}
        if numbers:
            lines.append("  evidence: " + ", ".join(
                f"{key}={_short(value)}" for key, value in numbers.items()))
        lines.extend(f"  {key}: {value}" for key, value in sentences.items())
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

    def by_kind(self, kind) -> List[Finding]:
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
            lines.append(_table(self._summary))
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


def _is_sentence(value):
    return isinstance(value, str) and " " in value


def _short(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


_TABLE_COLUMNS = [("module", "module"), ("layer", "layer"), ("direction", "dir"),
                  ("cell", "cell"), ("verdict_step", "step"), ("gain", "gain"), ("horizon", "horizon"),
                  ("max_grad_norm", "max|grad|"), ("nonfinite", "nonfinite"),
                  ("sigma_max", "sigma_max"), ("verdict", "verdict")]


def _table(summary):
    header = [title for _, title in _TABLE_COLUMNS]
    body = []
    for row in summary.to_dict(orient="records"):
        cells = []
        for column, _ in _TABLE_COLUMNS:
            value = row[column]
            if column == "module" and value == "":
                value = "<root>"
            if column == "verdict_step" and (value is None or value is pd.NA):
                value = "all"   # the latest step had no gain: the pooled numbers decide
            cells.append(_short(value) if isinstance(value, float) else str(value))
        body.append(cells)
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    render = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([render(header)] + [render(cells) for cells in body])
