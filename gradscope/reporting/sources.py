"""Turn what the user hands to ``report`` / ``compare`` into the tables a report draws.

A source is a live ``Scope``, a loaded ``Run`` or a run folder (str or Path): a
``gradscope.records.TableSource``. A report never needs every row of a big run: the
per-timestep curves and tables use the last recorded step, the heatmap and the histories at
most ``MAX_HISTORY_STEPS`` steps spread evenly over training, and only those steps are read
(a Run seeks straight to their bytes), which keeps memory bounded for runs of any length.
"""

import types
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gradscope.store import open_source

MAX_HISTORY_STEPS = 400


def evenly_spaced(values, limit):
    """At most ``limit`` of the sorted ``values``, spread evenly, first and last included."""
    values = np.asarray(values)
    if len(values) <= limit:
        return values
    picks = np.unique(np.round(np.linspace(0, len(values) - 1, limit)).astype(int))
    return values[picks]


def sampled_timesteps(source, limit):
    """(every recorded step, the at most ``limit`` sampled steps, their timesteps rows); only
    the sampled steps are read."""
    steps = np.asarray(source.steps(), dtype=np.int64)
    sampled = evenly_spaced(steps, limit)
    return steps, sampled, source.timesteps(steps=sampled)


def last_step_rows(rows):
    if rows.empty:
        return rows
    return rows[rows["step"] == rows["step"].max()].reset_index(drop=True)


@dataclass
class RunData:
    """Everything one report draws for one run, read once."""

    name: str
    source: object
    meta: dict
    steps: np.ndarray                   # every recorded step number
    sampled: np.ndarray                 # at most MAX_HISTORY_STEPS of them, evenly spaced
    history: pd.DataFrame               # timesteps rows of the sampled steps
    last: pd.DataFrame                  # timesteps rows of the last recorded step
    spectra: pd.DataFrame               # spectra rows of the sampled steps
    jacobians: pd.DataFrame             # last recorded step
    lyapunov: pd.DataFrame              # last recorded step
    gates: pd.DataFrame                 # last recorded step
    diagnosis: object
    summary: pd.DataFrame

    def modules(self):
        """Module names in the order of meta (then any others seen in the tables)."""
        names = list((self.meta.get("modules") or {}).keys())
        for table in (self.last, self.spectra, self.jacobians, self.lyapunov):
            if not table.empty:
                names += [m for m in pd.unique(table["module"]) if m not in names]
        return names

    def spectrum(self, module, layer, direction, gate):
        """The full spectrum of one weight block at the last step, or None if not stored."""
        try:
            values = self.source.spectrum(module, layer=layer, direction=direction, gate=gate, step=-1)
        except (KeyError, ValueError, IndexError, LookupError):
            return None
        if not values:
            return None
        return {"singular_values": np.asarray(values.get("singular_values", []), dtype=float),
                "eigenvalues": np.asarray(values.get("eigenvalues", []), dtype=complex)}


def analyzer():
    """``gradscope.analyze`` the function. Asked for through ``gradscope`` first: importing the
    package ``gradscope.analyze`` directly would bind the package, not the function, to
    ``gradscope.analyze`` and break the user's later ``gradscope.analyze(scope)``."""
    import gradscope

    found = gradscope.analyze
    if isinstance(found, types.ModuleType):  # the package was imported first, elsewhere
        found = found.analyze
    return found


def collect(source, name=None, history_steps=MAX_HISTORY_STEPS):
    """Read a source once into a RunData (running ``gradscope.analyze`` for the verdicts)."""
    analyze = analyzer()
    source = open_source(source, "gradscope.report")
    meta = dict(source.meta or {})
    name = str(name if name is not None else (source.name or meta.get("name") or "run"))
    steps, sampled, history = sampled_timesteps(source, history_steps)
    last = steps[-1:] if len(steps) else steps
    diagnosis = analyze(source)
    return RunData(
        name=name, source=source, meta=meta, steps=steps, sampled=sampled,
        history=history, last=last_step_rows(history),
        spectra=source.spectra(steps=sampled),
        # per step too, but only the last step is drawn
        jacobians=source.jacobians(steps=last),
        lyapunov=source.lyapunov(steps=last),
        gates=source.gates(steps=last),
        diagnosis=diagnosis, summary=_summary(diagnosis),
    )


def _summary(diagnosis):
    summary = diagnosis.summary() if callable(getattr(diagnosis, "summary", None)) else None
    return summary if isinstance(summary, pd.DataFrame) else pd.DataFrame()
