"""load() and Run: a run folder read back as the same tables a live Scope gives."""

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from gradscope.errors import GradscopeWarning
from gradscope.records import TABLES, frame
from gradscope.store import format as fmt
from gradscope.store.errors import RunFormatError
from gradscope.store.index import build_index
from gradscope.store.ranges import open_ranges

# the dtype pandas gives a column of Python strings (object before pandas 3, "str" since):
# the same as gradscope.records.frame gives a live Scope's non-empty tables
_STRING_DTYPE = pd.Series(["x"]).dtype
DEFAULT_CHUNK_BYTES = 32 << 20


def load(run_dir, *, verify=True):
    """Open the run folder ``run_dir`` (what ``watch(..., run_dir=...)`` wrote) as a ``Run``.

    Only steps whose commit line is whole and whose bytes are intact are loaded; anything else
    (a step cut short by a crash, a torn or damaged tail) is left out with one
    ``GradscopeWarning`` that says what was dropped. ``verify=False`` skips the checksum pass
    (faster on huge runs; damage inside committed rows then shows up as a parse error).
    A missing folder raises ``FileNotFoundError``; a folder that is not a run, or a run of a
    schema this gradscope does not know, raises ``RunFormatError`` (a ``ValueError``).
    """
    path = Path(run_dir)
    if not path.exists():
        raise FileNotFoundError(f"no run folder at {path}: pass the folder that "
                                "watch(..., run_dir=...) wrote")
    if not path.is_dir():
        raise RunFormatError(f"{path} is a file, not a run folder: pass the folder that "
                             "watch(..., run_dir=...) wrote")
    meta_path = path / fmt.META_FILE
    if not meta_path.is_file():
        raise RunFormatError(f"{path} is not a gradscope run folder (it has no "
                             f"{fmt.META_FILE}){_runs_inside(path)}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise RunFormatError(f"{meta_path} is not valid JSON ({error}); the run folder is "
                             "damaged") from error
    fmt.check_schema(meta, str(meta_path))
    index = build_index(path, verify=verify)
    if index.problems:
        warnings.warn(GradscopeWarning(
            f"run folder {path}: loaded {len(index.steps)} whole step(s) and left out what "
            "was not whole: " + "; ".join(index.problems)), stacklevel=2)
    return Run(path, meta, index)


class Run:
    """A loaded run folder: the tables of a live Scope, read from disk on demand.

    ``name``, ``meta`` (the dict the Scope wrote), ``path``; ``timesteps()``, ``spectra()``,
    ``jacobians()``, ``lyapunov()``, ``gates()`` give DataFrames with exactly the columns and
    dtypes of gradscope.records; ``spectrum(...)`` gives one weight block's full spectrum.

    A Run is a snapshot of the steps committed when it was loaded; load again to see steps a
    still-running writer added since. Nothing is cached: each call reads the file again.

    Big runs with bounded memory:
      - ``steps()`` lists the committed steps; ``sample_steps(n)`` picks at most n of them,
        evenly spaced, first and last included.
      - every table method takes ``steps=`` (read only those steps: the reader seeks straight
        to their bytes) and ``columns=`` (parse only those columns).
      - ``iter_table(table, steps=None, columns=None, chunk_bytes=32 MiB)`` yields the table
        in DataFrames of whole steps, each from about ``chunk_bytes`` of file.
      - ``row_count(table, steps=None)`` counts rows without reading them.
    """

    def __init__(self, path, meta, index):
        self.path = Path(path)
        self.meta = meta
        self.name = str(meta.get("name") or self.path.name)
        self._index = index

    def __repr__(self):
        steps = self._index.steps
        span = f"steps {steps[0]}..{steps[-1]}" if steps else "no steps"
        return f"Run({self.name!r}, {len(steps)} step(s), {span}, path={str(self.path)!r})"

    # -- the source interface shared with Scope ---------------------------------------------

    def timesteps(self, steps=None, columns=None):
        return self.table("timesteps", steps, columns)

    def spectra(self, steps=None, columns=None):
        return self.table("spectra", steps, columns)

    def jacobians(self, steps=None, columns=None):
        return self.table("jacobians", steps, columns)

    def lyapunov(self, steps=None, columns=None):
        return self.table("lyapunov", steps, columns)

    def gates(self, steps=None, columns=None):
        return self.table("gates", steps, columns)

    def forward_nonfinite(self, steps=None, columns=None):
        """Where the forward pass held NaN/Inf (empty for runs written before it was recorded)."""
        return self.table("forward_nonfinite", steps, columns)

    def spectrum(self, module, layer=0, direction="forward", gate=None, step=-1):
        """``{"singular_values": ndarray, "eigenvalues": complex ndarray}`` of one weight block.

        ``gate=None`` takes ``"all"`` where recorded, else the first gate recorded. ``step`` is a
        step number, or a negative position among the steps that recorded this block (-1: the
        latest). Raises ``KeyError`` naming what is recorded when nothing matches.
        """
        def matches(record):
            return (record["module"] == module and record["layer"] == layer
                    and record["direction"] == direction
                    and (gate is None or record["gate"] == gate))

        with_values = [s for s in self._index.steps if fmt.VALUES_FILE in self._index.ranges[s]]
        if step >= 0:
            if step not in self._index.ranges:
                raise KeyError(f"step {step} is not in run {self.name!r}; it holds "
                               f"{_describe_steps(self._index.steps)}")
            order = [step]
        else:
            order = reversed(with_values)
        seen, wanted, last_records = set(), -step if step < 0 else 1, []
        for candidate in order:
            records = self._values(candidate)
            last_records = last_records or records
            found = [r for r in records if matches(r)]
            seen.update((r["module"], r["layer"], r["direction"], r["gate"]) for r in records)
            if found:
                wanted -= 1
                if wanted == 0:
                    return _spectrum_of(_pick_gate(found, gate))
        block = f"module={module!r}, layer={layer}, direction={direction!r}, gate={gate!r}"
        known = ", ".join(f"({m!r}, {l}, {d!r}, {g!r})" for m, l, d, g in sorted(seen)[:20])
        raise KeyError(f"run {self.name!r} has no spectrum for {block} at step={step}; "
                       f"recorded (module, layer, direction, gate): {known or 'none'}")

    # -- bounded-memory access ----------------------------------------------------------------

    def steps(self):
        """The committed steps, increasing."""
        return list(self._index.steps)

    def metrics(self, step=None):
        """One recorded step (None: the latest) as a flat ``{name: float}``, as Scope.metrics."""
        from gradscope.metrics import metrics

        return metrics(self, step)

    def sample_steps(self, n):
        """At most ``n`` committed steps, evenly spaced, the first and the last included."""
        steps = self._index.steps
        if n <= 0 or not steps:
            return []
        if len(steps) <= n:
            return list(steps)
        positions = np.unique(np.linspace(0, len(steps) - 1, n).round().astype(int))
        return [steps[i] for i in positions]

    def row_count(self, table, steps=None):
        """How many rows ``table`` holds (in ``steps``), from the commit log alone."""
        _check_table(table)
        return sum(self._index.rows[s].get(table, 0) for s in self._selected(steps))

    def table(self, table, steps=None, columns=None):
        """``table`` (a name of gradscope.records.TABLES) as one DataFrame."""
        columns = _checked_columns(table, columns)
        return self._read(table, self._selected(steps), columns)

    def iter_table(self, table, steps=None, columns=None, chunk_bytes=DEFAULT_CHUNK_BYTES):
        """Yield ``table`` as DataFrames of whole steps, each read from about ``chunk_bytes``."""
        columns = _checked_columns(table, columns)
        name = fmt.TABLE_FILES[table]
        batch, size = [], 0
        for step in self._selected(steps):
            span = self._index.ranges[step].get(name)
            if span is None:
                continue
            batch.append(step)
            size += span[1] - span[0]
            if size >= chunk_bytes:
                yield self._read(table, batch, columns)
                batch, size = [], 0
        if batch:
            yield self._read(table, batch, columns)

    # -- helpers ----------------------------------------------------------------------------

    def _selected(self, steps):
        if steps is None:
            return self._index.steps
        if isinstance(steps, (int, np.integer)):
            steps = [steps]
        wanted = {int(s) for s in steps}
        return [s for s in self._index.steps if s in wanted]

    def _read(self, table, steps, columns):
        name = fmt.TABLE_FILES[table]
        spans = [self._index.ranges[s][name][:2] for s in steps if name in self._index.ranges[s]]
        if not spans:
            return frame(table).loc[:, columns]
        header = self._index.headers[name][0]
        with open_ranges(self.path / name, spans, prefix=header) as stream:
            df = pd.read_csv(stream, **fmt.read_csv_options(table, columns))
        for column in columns:
            if isinstance(df[column].dtype, pd.CategoricalDtype):
                df[column] = df[column].astype(_STRING_DTYPE)
        return df.loc[:, columns]

    def _values(self, step):
        span = self._index.ranges[step].get(fmt.VALUES_FILE)
        if span is None:
            return []
        with open(self.path / fmt.VALUES_FILE, "rb") as handle:
            handle.seek(span[0])
            return fmt.decode_values(handle.read(span[1] - span[0]))


def _check_table(table):
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; the tables are {list(TABLES)}")


def _checked_columns(table, columns):
    _check_table(table)
    if columns is None:
        return list(TABLES[table])
    columns = [columns] if isinstance(columns, str) else list(columns)
    unknown = [c for c in columns if c not in TABLES[table]]
    if unknown:
        raise ValueError(f"table {table!r} has no column(s) {unknown}; it has {TABLES[table]}")
    return columns


def _pick_gate(found, gate):
    if gate is None:
        for record in found:
            if record["gate"] == "all":
                return record
    return found[0]


def _spectrum_of(record):
    real = np.asarray(record["eigenvalues_real"], dtype=np.float64)
    eigenvalues = np.empty(real.shape, dtype=np.complex128)
    # set the parts, not real + 1j*imag: that turns an infinite part into NaN
    eigenvalues.real = real
    eigenvalues.imag = np.asarray(record["eigenvalues_imag"], dtype=np.float64)
    return {"singular_values": np.asarray(record["singular_values"], dtype=np.float64),
            "eigenvalues": eigenvalues}


def _describe_steps(steps):
    if not steps:
        return "no steps"
    return f"{len(steps)} step(s) from {steps[0]} to {steps[-1]}"


def _runs_inside(path):
    """A hint naming run folders one level below ``path`` (e.g. a demo's runs/)."""
    found = sorted(p.parent for p in path.glob("*/" + fmt.META_FILE))
    found += sorted(p.parent for p in path.glob("runs/*/" + fmt.META_FILE))
    if not found:
        return "; pass the folder that watch(..., run_dir=...) wrote"
    names = ", ".join(str(p) for p in found[:5])
    return f"; run folders inside it: {names}"
