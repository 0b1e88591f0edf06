"""``metrics(source, step=None)``: one recorded step as a flat ``{name: float}`` for any logger.

Keys are ``gradscope/<module>/l<layer>/<direction>/<name>`` (docs/integrations.md). The key
set depends only on the model (its recurrent parts, layers and directions), never on what a
step happened to record, so a logger sees the same columns at every step: a value that does
not exist is NaN, never a missing key.
"""

from __future__ import annotations

import math
from typing import Dict, Optional

import pandas as pd

from gradscope.analysis.verdict import ORDER
from gradscope.records import TableSource, select_rows
from gradscope.store import open_source

PREFIX = "gradscope"
ROOT_NAME = "_root"  # the key name of the model itself when it is the recurrent part ("")
NAMES = ("gain", "horizon", "max_grad_norm", "nonfinite", "sigma_max", "verdict")
# verdict as a number: its place in gradscope's order of gravity (higher is worse)
VERDICT_CODES = {verdict: float(code) for code, verdict in enumerate(ORDER)}


def metric_key(module: str, layer: int, direction: str, name: str) -> str:
    """The key of one number, e.g. ``gradscope/encoder.rnn/l0/forward/gain``."""
    return f"{PREFIX}/{module or ROOT_NAME}/l{int(layer)}/{direction}/{name}"


def metrics(source, step: Optional[int] = None) -> Dict[str, float]:
    """The numbers of one recorded step of a live Scope or a loaded Run, flat.

    Args:
        source: a ``Scope`` (``gradscope.watch``), a ``Run`` (``gradscope.load``), another
            ``TableSource``, or the path of a run folder.
        step: a recorded step number; None takes the latest recorded step.

    Returns:
        ``{key: float}`` with, per (module, layer, direction), ``gain``, ``horizon``,
        ``max_grad_norm``, ``nonfinite``, ``sigma_max`` and ``verdict`` (``VERDICT_CODES``:
        healthy 0, unknown 1, vanishing 2, exploding 3, nonfinite 4). NaN where a value does
        not exist (nothing recorded yet, a part that step did not reach, no gain to measure).

    Raises:
        ValueError: ``step`` is not a recorded step (the message lists the recorded ones).
    """
    from gradscope.analysis import analyze

    source = open_source(source, "gradscope.metrics")
    recorded = list(source.steps())
    if step is not None and int(step) not in recorded:
        shown = recorded if len(recorded) <= 10 else recorded[:5] + ["..."] + recorded[-5:]
        raise ValueError(f"metrics(step={step!r}): step {step} was not recorded; the recorded steps are "
                         f"{shown} (pass one of them, or step=None for the latest)")
    out = {metric_key(m, l, d, name): math.nan for m, l, d in _parts_of(source.meta) for name in NAMES}
    if not recorded:
        return out
    chosen = int(step) if step is not None else recorded[-1]
    summary = analyze(_OneStep(source, chosen)).summary()
    for row in summary.to_dict(orient="records"):
        for name in NAMES:
            out[metric_key(row["module"], row["layer"], row["direction"], name)] = _number(name, row[name])
    return out


class _OneStep(TableSource):
    """One step of a source, as a source ``analyze`` reads (reading only that step's rows)."""

    def __init__(self, source, step):
        self.meta = source.meta
        self.name = source.name
        self._source = source
        self._step = step

    def table(self, table, steps=None, columns=None):
        rows = self._source.table(table, [self._step], columns)
        return rows if steps is None else select_rows(rows, table, steps, columns)

    def steps(self):
        return [self._step]


def _parts_of(meta):
    """(module, layer, direction) of every recurrent part the run's meta names."""
    for module, info in (meta or {}).get("modules", {}).items():
        for layer in range(int(info.get("layers") or 1)):
            for direction in info.get("directions") or ["forward"]:
                yield module, layer, direction


def _number(name, value) -> float:
    if name == "verdict":
        return VERDICT_CODES.get(value, math.nan)
    if value is None or value is pd.NA:
        return math.nan
    return float(value)
