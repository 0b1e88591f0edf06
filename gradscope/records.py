"""The record schema: the columns of every table a Scope, a Run folder or a report reads, and
``TableSource``, the table methods a live Scope and a loaded Run both answer.

API.md fixes the names of the first three tables; ``gates`` is gradscope's own addition
(gate-activation statistics used by the saturation analyzer).
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional, Sequence, Union

import numpy as np
import pandas as pd

SCHEMA_VERSION = 1

TIMESTEP_COLUMNS = [
    "step", "module", "cell", "call", "layer", "direction", "state", "t", "batch",
    "grad_norm", "carried_norm", "direct_norm", "nonfinite",
    # gradscope's addition: grad_norm over the sequences whose gradient is finite (NaN when none
    # is), so a figure still shows the healthy sequences of a batch with one NaN sequence
    "finite_grad_norm",
]
SPECTRA_COLUMNS = [
    "step", "module", "layer", "direction", "gate", "rows", "cols",
    "sigma_max", "sigma_min", "spectral_radius", "stable_rank", "frobenius",
]
JACOBIAN_COLUMNS = ["step", "module", "call", "layer", "direction", "t", "jac_norm"]
LYAPUNOV_COLUMNS = ["step", "module", "layer", "direction", "index", "exponent"]
# Per gate (or tanh'd quantity) and recorded step: how many activations sit near the ends.
# low/high: share within Rules-independent margin 0.05 of the activation's bounds (0/1 for
# sigmoid gates, -1/+1 for tanh), mean: mean activation.
GATE_COLUMNS = [
    "step", "module", "call", "layer", "direction", "gate", "activation", "count",
    "mean", "low", "high",
]

# Forward-side NaN/Inf (exact route of nn.RNN/GRU/LSTM only), one row per call, place, layer
# and t where some sequence held one: place "input" (what enters layer 0) or "output" (the
# layer's h_t); nonfinite: how many sequences; sequences: the first few batch indices, "0,3".
FORWARD_NONFINITE_COLUMNS = [
    "step", "module", "call", "layer", "place", "t", "nonfinite", "sequences",
]

# Columns added after schema 1 was fixed: a run folder written before them lacks them, and
# reads them back as NaN.
ADDED_COLUMNS = {"timesteps": ("finite_grad_norm",)}

TABLES = {
    "timesteps": TIMESTEP_COLUMNS,
    "spectra": SPECTRA_COLUMNS,
    "jacobians": JACOBIAN_COLUMNS,
    "lyapunov": LYAPUNOV_COLUMNS,
    "gates": GATE_COLUMNS,
    "forward_nonfinite": FORWARD_NONFINITE_COLUMNS,
}


def frame(table, rows=None):
    """A DataFrame of ``table`` with exactly its columns, in order (empty when no rows)."""
    columns = TABLES[table]
    if rows is None or len(rows) == 0:
        return pd.DataFrame({c: pd.Series(dtype=dtype_of(c)) for c in columns})
    if isinstance(rows, pd.DataFrame):
        return rows.reindex(columns=columns).reset_index(drop=True)
    return pd.DataFrame(rows, columns=columns)


def dtype_of(column):
    """The pandas dtype of a column in every table."""
    if column in ("module", "cell", "direction", "state", "gate", "activation", "place", "sequences"):
        return object
    if column in ("step", "call", "layer", "t", "batch", "nonfinite", "rows", "cols", "index", "count"):
        return "int64"
    return "float64"


# ---- the table source ------------------------------------------------------------------------

Steps = Union[None, int, Iterable[int]]
Columns = Union[None, str, Sequence[str]]


def checked_columns(table: str, columns: Columns) -> list:
    """The columns of ``table`` asked for (all of them for None), or a ValueError naming the
    table's columns when one is unknown."""
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; the tables are {list(TABLES)}")
    if columns is None:
        return list(TABLES[table])
    columns = [columns] if isinstance(columns, str) else list(columns)
    unknown = [c for c in columns if c not in TABLES[table]]
    if unknown:
        raise ValueError(f"table {table!r} has no column(s) {unknown}; it has {TABLES[table]}")
    return columns


def wanted_steps(steps: Steps) -> Optional[set]:
    """``steps=`` of a table method as a set of step numbers (None: every step)."""
    if steps is None:
        return None
    if isinstance(steps, (int, np.integer)):
        return {int(steps)}
    return {int(s) for s in steps}


def select_rows(rows: pd.DataFrame, table: str, steps: Steps = None, columns: Columns = None) -> pd.DataFrame:
    """The rows of an in-memory ``table`` at ``steps`` with ``columns``, as a Run reads them.

    Args:
        rows: the whole table (any row order; ``frame(table)`` columns at least).
        table: a name of ``TABLES``.
        steps: a step number, an iterable of them, or None for every step.
        columns: a column name, a list of them (in the order given), or None for all.
    Returns:
        A new DataFrame with a fresh index.
    """
    columns = checked_columns(table, columns)
    wanted = wanted_steps(steps)
    if wanted is not None:
        rows = rows[rows["step"].isin(sorted(wanted))]
    return rows.loc[:, columns].reset_index(drop=True)


class TableSource:
    """The table methods a live ``Scope`` and a loaded ``Run`` share, with the same signatures,
    so that ``analyze``, ``report``, ``compare`` and ``check`` take either.

    A subclass implements ``table(table, steps=None, columns=None)``, ``steps()`` and, for
    ``spectrum()``, ``_spectrum_steps()`` and ``_spectrum_values(step)``; it sets ``name`` and
    ``meta``.
    """

    name: str
    meta: dict

    def table(self, table: str, steps: Steps = None, columns: Columns = None) -> pd.DataFrame:
        """One table of ``TABLES`` as a DataFrame with exactly its columns and dtypes.

        Args:
            table: ``"timesteps"``, ``"spectra"``, ``"jacobians"``, ``"lyapunov"``, ``"gates"``
                or ``"forward_nonfinite"``.
            steps: only these recorded steps (a number or an iterable; None: all).
            columns: only these columns (a name or a list; None: all).
        Returns:
            The rows, in step order; an empty frame with the columns when there are none.
        Raises:
            ValueError: for an unknown table or column.
        """
        raise NotImplementedError

    def steps(self) -> list:
        """The recorded step numbers, increasing."""
        raise NotImplementedError

    def timesteps(self, steps: Steps = None, columns: Columns = None) -> pd.DataFrame:
        """Per-timestep gradient norms, one row per step, module, call, layer, direction, state
        and t (columns in ``TIMESTEP_COLUMNS``; docs/api.md).

        Args:
            steps: only these recorded steps (a number or an iterable; None: all).
            columns: only these columns (a name or a list; None: all).
        Returns:
            A DataFrame with exactly the asked columns.
        """
        return self.table("timesteps", steps, columns)

    def spectra(self, steps: Steps = None, columns: Columns = None) -> pd.DataFrame:
        """Recurrent weight spectra, one row per weight block and recorded step
        (``SPECTRA_COLUMNS``). Args and Returns as ``timesteps``."""
        return self.table("spectra", steps, columns)

    def jacobians(self, steps: Steps = None, columns: Columns = None) -> pd.DataFrame:
        """Per-t batch mean of the spectral norm of d state_{t+1} / d state_t (only with
        ``watch(jacobians=True)``; ``JACOBIAN_COLUMNS``). Args and Returns as ``timesteps``."""
        return self.table("jacobians", steps, columns)

    def lyapunov(self, steps: Steps = None, columns: Columns = None) -> pd.DataFrame:
        """The Lyapunov spectrum per part and recorded step (only with ``watch(jacobians=True)``;
        ``LYAPUNOV_COLUMNS``). Args and Returns as ``timesteps``."""
        return self.table("lyapunov", steps, columns)

    def gates(self, steps: Steps = None, columns: Columns = None) -> pd.DataFrame:
        """Gate-activation statistics per gate and recorded step (``GATE_COLUMNS``). Args and
        Returns as ``timesteps``."""
        return self.table("gates", steps, columns)

    def forward_nonfinite(self, steps: Steps = None, columns: Columns = None) -> pd.DataFrame:
        """Where the forward pass held NaN/Inf: one row per call, place, layer and t
        (``FORWARD_NONFINITE_COLUMNS``; empty for runs written before it was recorded). Args and
        Returns as ``timesteps``."""
        return self.table("forward_nonfinite", steps, columns)

    def spectrum(self, module: str, layer: int = 0, direction: str = "forward", gate: Optional[str] = None,
                 step: int = -1) -> dict:
        """The full spectrum of one weight block at one recorded step.

        Args:
            module: the block's module (as in ``spectra()``), or a ``weights=`` label.
            layer: its layer.
            direction: ``"forward"`` or ``"reverse"``.
            gate: ``"all"``, a gate (``"hh"``, ``"r"``, ``"i"``, ...) or a label; None takes
                ``"all"`` where recorded, else the first gate recorded.
            step: a step number, or a negative position among the steps that recorded this
                block (-1: the latest).
        Returns:
            ``{"singular_values": float64 ndarray, "eigenvalues": complex128 ndarray}``.
        Raises:
            KeyError: naming what is recorded, when nothing matches.
        """
        if step >= 0 and step not in self.steps():
            raise KeyError(f"step {step} is not in run {self.name!r}; it holds "
                           f"{_describe_steps(self.steps())}")
        return pick_spectrum(self._spectrum_steps(), self._spectrum_values, module, layer=layer,
                             direction=direction, gate=gate, step=step, source=self.name)

    def _spectrum_steps(self) -> list:
        raise NotImplementedError

    def _spectrum_values(self, step: int) -> list:
        raise NotImplementedError


# ---- the spectrum picker ---------------------------------------------------------------------

def pick_spectrum(steps: Sequence[int], values_at: Callable[[int], list], module: str, layer: int = 0,
                  direction: str = "forward", gate: Optional[str] = None, step: int = -1,
                  source: str = "the run") -> dict:
    """The one way a full spectrum is chosen among recorded value records (Scope and Run).

    Args:
        steps: the steps that hold full spectra, increasing.
        values_at: ``step -> list`` of that step's value records (dicts with ``module, layer,
            direction, gate, singular_values, eigenvalues_real, eigenvalues_imag``); called
            newest step first and only as far as needed.
        module, layer, direction, gate, step: as ``TableSource.spectrum``.
        source: the source's name, for the error message.
    Returns:
        ``spectrum_of`` the chosen record.
    Raises:
        KeyError: naming the recorded blocks, when nothing matches.
    """
    def matches(record):
        return (record["module"] == module and record["layer"] == layer and record["direction"] == direction
                and (gate is None or record["gate"] == gate))

    if step >= 0:
        order, wanted = ([step] if step in set(steps) else []), 1
    else:
        order, wanted = reversed(list(steps)), -step
    seen = set()
    for candidate in order:
        records = values_at(candidate)
        seen.update((r["module"], r["layer"], r["direction"], r["gate"]) for r in records)
        found = [r for r in records if matches(r)]
        if found:
            wanted -= 1
            if wanted == 0:
                return spectrum_of(next((r for r in found if r["gate"] == "all"), found[0])
                                   if gate is None else found[0])
    block = f"module={module!r}, layer={layer}, direction={direction!r}, gate={gate!r}"
    known = ", ".join(f"({m!r}, {l}, {d!r}, {g!r})" for m, l, d, g in sorted(seen)[:20])
    raise KeyError(f"{source!r} has no spectrum for {block} at step={step}; recorded (module, layer, "
                   f"direction, gate): {known or 'none'}; full spectra recorded at "
                   f"{_describe_steps(list(steps))}")


def spectrum_of(record: dict) -> dict:
    """A value record as ``{"singular_values", "eigenvalues"}`` arrays (float64, complex128).

    The parts are set one by one, not as ``real + 1j*imag``: that product turns an infinite
    imaginary part into a NaN real part (``1j * inf`` is ``nan+infj``)."""
    real = np.asarray(record["eigenvalues_real"], dtype=np.float64)
    eigenvalues = np.empty(real.shape, dtype=np.complex128)
    eigenvalues.real = real
    eigenvalues.imag = np.asarray(record["eigenvalues_imag"], dtype=np.float64)
    return {"singular_values": np.asarray(record["singular_values"], dtype=np.float64),
            "eigenvalues": eigenvalues}


def _describe_steps(steps):
    if not steps:
        return "no steps"
    return f"{len(steps)} step(s) from {steps[0]} to {steps[-1]}"
