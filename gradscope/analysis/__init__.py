"""Verdicts with evidence and advice: ``analyze(source, rules=None) -> Diagnosis``.

rules.py (thresholds), gain.py (gain and horizon math), measures.py (per part and per step),
verdict.py, findings.py (one function per finding kind), advice.py, trend.py,
diagnosis.py (Finding, Diagnosis). Definitions: docs/analyze.md.
"""

from gradscope.analysis.analyzer import analyze
from gradscope.analysis.diagnosis import Diagnosis, Finding
from gradscope.analysis.rules import Rules

__all__ = ["analyze", "Rules", "Finding", "Diagnosis"]
