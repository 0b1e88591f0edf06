"""Turn what the user hands to ``report`` / ``compare`` into the tables a report draws.

A source is a live ``Scope``, a loaded ``Run`` or a run folder (str or Path). A report never
needs every row of a big run: the per-timestep curves and tables use the last recorded step,
the heatmap and the histories at most ``MAX_HISTORY_STEPS`` steps spread evenly over training.
When the source can read only some steps (``table(steps=[...])``, as a ``Run`` can), only those
are read, which keeps memory bounded for runs of any length.
"""

import inspect
import os
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gradscope.records import TABLES, frame

MAX_HISTORY_STEPS = 400


def open_source(source):
    """A Scope or Run as it is; a str or Path is loaded with ``gradscope.store.load``."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():  # a file goes on to load(), which says it is not a folder
            raise FileNotFoundError(
                f"run folder {str(path)!r} does not exist; pass the folder given to "
                "gradscope.watch(..., run_dir=...), a loaded gradscope.load(...) run, or a Scope")
        from gradscope.store import load

        return load(path)
    missing = [name for name in ("timesteps", "spectra") if not callable(getattr(source, name, None))]
    if missing:
        raise TypeError(
            f"cannot report on a {type(source).__name__}: expected a gradscope Scope, a Run from "
            "gradscope.load(run_dir), or the path of a run folder")
    return source


def evenly_spaced(values, limit):
    """At most ``limit`` of the sorted ``values``, spread evenly, first and last included."""
    values = np.asarray(values)
    if len(values) <= limit:
        return values
    picks = np.unique(np.round(np.linspace(0, len(values) - 1, limit)).astype(int))
    return values[picks]


def sampled_timesteps(source, limit):
    """(every recorded step, the at most ``limit`` sampled steps, their timesteps rows).

    A source that lists its steps and reads by step (a Run) reads only the sampled steps;
    any other is read once and filtered."""
    lister = getattr(source, "steps", None)  # a Run's method; a Scope's is a count, not a list
    method = getattr(source, "timesteps", None)
    if callable(lister) and callable(method) and _accepts_steps(method):
        steps = np.unique(np.asarray(list(lister()), dtype=np.int64))
        sampled = evenly_spaced(steps, limit)
        return steps, sampled, read_table(source, "timesteps", sampled)
    rows = read_table(source, "timesteps")
    steps = np.unique(rows["step"].to_numpy(dtype=np.int64))
    sampled = evenly_spaced(steps, limit)
    if len(sampled) < len(steps):
        rows = rows[rows["step"].isin(sampled)].reset_index(drop=True)
    return steps, sampled, rows


def read_table(source, table, steps=None):
    """The rows of ``table`` (optionally only those of ``steps``) with exactly the records
    columns; an empty frame when the source does not record that table."""
    method = getattr(source, table, None)
    if not callable(method):
        return frame(table)
    if steps is not None and _accepts_steps(method):
        rows = method(steps=[int(s) for s in steps])
    else:
        rows = method()
        if steps is not None and len(rows):
            rows = rows[rows["step"].isin(np.asarray(steps))]
    if rows is None or len(rows) == 0:
        return frame(table)
    missing = [c for c in TABLES[table] if c not in rows.columns]
    if missing:
        raise ValueError(f"{type(source).__name__}.{table}() lacks the columns {missing} "
                         "(see gradscope/records.py)")
    return rows.reset_index(drop=True)


def _accepts_steps(method):
    try:
        return "steps" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


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
        method = getattr(self.source, "spectrum", None)
        if not callable(method):
            return None
        try:
            values = method(module, layer=layer, direction=direction, gate=gate, step=-1)
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
    source = open_source(source)
    meta = dict(getattr(source, "meta", None) or {})
    name = str(name if name is not None else (getattr(source, "name", None) or meta.get("name") or "run"))
    steps, sampled, history = sampled_timesteps(source, history_steps)
    last = steps[-1:] if len(steps) else steps
    diagnosis = analyze(source)
    return RunData(
        name=name, source=source, meta=meta, steps=steps, sampled=sampled,
        history=history, last=last_step_rows(history),
        spectra=read_table(source, "spectra", sampled),
        # per step too, but only the last step is drawn
        jacobians=read_table(source, "jacobians", last),
        lyapunov=read_table(source, "lyapunov", last),
        gates=read_table(source, "gates", last),
        diagnosis=diagnosis, summary=_summary(diagnosis),
    )


def _summary(diagnosis):
    summary = diagnosis.summary() if callable(getattr(diagnosis, "summary", None)) else None
    return summary if isinstance(summary, pd.DataFrame) else pd.DataFrame()
