"""load() and Run: a run folder read back as the same tables a live Scope gives."""

import json
import os
import warnings
from pathlib import Path
from typing import Iterator, Union

import numpy as np
import pandas as pd

from gradscope.errors import GradscopeWarning
from gradscope.records import Columns, Steps, TableSource, checked_columns, frame, wanted_steps
from gradscope.store import format as fmt
from gradscope.store.errors import RunFormatError
from gradscope.store.files import refuse_odd_files
from gradscope.store.index import build_index
from gradscope.store.ranges import open_ranges

# the dtype pandas gives a column of Python strings (object before pandas 3, "str" since):
# the same as gradscope.records.frame gives a live Scope's non-empty tables
_STRING_DTYPE = pd.Series(["x"]).dtype
DEFAULT_CHUNK_BYTES = 32 << 20


def load(run_dir: Union[str, os.PathLike], *, verify: bool = True) -> "Run":
    """Open the run folder ``run_dir`` (what ``watch(..., run_dir=...)`` wrote) as a ``Run``.

    Only steps whose commit line is whole and whose bytes are intact are loaded; anything else
    (a step cut short by a crash, a torn or damaged tail) is left out with one
    ``GradscopeWarning`` that says what was dropped.

    Args:
        run_dir: the run folder.
        verify: check every committed step's checksum; False is faster on huge runs (damage
            inside committed rows then shows up as a parse error).
    Returns:
        The Run: the same table methods as a live Scope (``gradscope.records.TableSource``).
    Raises:
        FileNotFoundError: no folder at ``run_dir``.
        RunFormatError: (a ``ValueError``) a folder that is not a run, a run of a schema
            this gradscope does not know, or a folder whose run files are symbolic links
            (never followed: they could point anywhere), folders, FIFOs or devices.
    """
    path = Path(run_dir)
    if not path.exists():
        raise FileNotFoundError(f"no run folder at {path}: pass the folder that "
                                "watch(..., run_dir=...) wrote")
    if not path.is_dir():
        raise RunFormatError(f"{path} is a file, not a run folder: pass the folder that "
                             "watch(..., run_dir=...) wrote")
    refuse_odd_files(path, fmt.ALL_FILES, "load")
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


class Run(TableSource):
    """A loaded run folder: the tables of a live Scope, read from disk on demand.

    ``name``, ``meta`` (the dict the Scope wrote), ``path``; the table methods of
    ``gradscope.records.TableSource`` (``timesteps()``, ``spectra()``, ``jacobians()``,
    ``lyapunov()``, ``gates()``, ``forward_nonfinite()``, ``spectrum(...)``, ``steps()``), the
    same as a live Scope's, give DataFrames with exactly the columns and dtypes of
    gradscope.records.

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

    # -- the table source shared with Scope (gradscope.records.TableSource) ------------------

    def _spectrum_steps(self):
        return [s for s in self._index.steps if fmt.VALUES_FILE in self._index.ranges[s]]

    # -- bounded-memory access ----------------------------------------------------------------

    def steps(self) -> list:
        """The committed steps, increasing.

        Returns:
            The step numbers whose commit line was whole when the run was loaded.
        """
        return list(self._index.steps)

    def sample_steps(self, n: int) -> list:
        """At most ``n`` committed steps, evenly spaced, the first and the last included.

        Args:
            n: how many at most (0 or less: none).
        Returns:
            The step numbers, increasing.
        """
        steps = self._index.steps
        if n <= 0 or not steps:
            return []
        if len(steps) <= n:
            return list(steps)
        positions = np.unique(np.linspace(0, len(steps) - 1, n).round().astype(int))
        return [steps[i] for i in positions]

    def row_count(self, table: str, steps: Steps = None) -> int:
        """How many rows ``table`` holds, from the commit log alone (nothing is parsed).

        Args:
            table: a name of ``gradscope.records.TABLES``.
            steps: only these steps (a number or an iterable; None: all).
        Returns:
            The row count.
        """
        _check_table(table)
        return sum(self._index.rows[s].get(table, 0) for s in self._selected(steps))

    def table(self, table: str, steps: Steps = None, columns: Columns = None) -> pd.DataFrame:
        """``table`` (a name of gradscope.records.TABLES) as one DataFrame, read from disk (only
        the bytes of ``steps``, only ``columns`` parsed). See ``TableSource.table``."""
        columns = checked_columns(table, columns)
        return self._read(table, self._selected(steps), columns)

    def iter_table(self, table: str, steps: Steps = None, columns: Columns = None,
                   chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[pd.DataFrame]:
        """``table`` in pieces of whole steps, for runs too big to read at once.

        Args:
            table, steps, columns: as ``table()``.
            chunk_bytes: about how many bytes of file each piece is read from.
        Returns:
            An iterator of DataFrames, in step order.
        """
        columns = checked_columns(table, columns)
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
        wanted = wanted_steps(steps)
        if wanted is None:
            return self._index.steps
        return [s for s in self._index.steps if s in wanted]

    def _read(self, table, steps, columns):
        name = fmt.TABLE_FILES[table]
        spans = self._spans(name, steps)
        if not spans:
            return frame(table).loc[:, columns]
        header, present = self._index.headers[name]
        stored = [c for c in columns if c in present]  # a column added later reads back as NaN
        with open_ranges(self.path / name, spans, prefix=header) as stream:
            df = pd.read_csv(stream, **fmt.read_csv_options(table, stored))
        lost = fmt.categories_lost_text(df, stored)
        if lost:  # e.g. every module name numeric-looking ("0", "00"): rare, so read again
            with open_ranges(self.path / name, spans, prefix=header) as stream:
                text = pd.read_csv(stream, **fmt.read_csv_options(table, lost, as_text=lost))
            df[lost] = text[lost]
        for column in columns:
            if column not in present:
                df[column] = np.nan
        for column in columns:
            if isinstance(df[column].dtype, pd.CategoricalDtype):
                df[column] = df[column].astype(_STRING_DTYPE)
        return df.loc[:, columns]

    def _spans(self, name, steps):
        """(start, end) of each of ``steps``' rows in the file ``name``, where it has some."""
        return [self._index.ranges[s][name][:2] for s in steps if name in self._index.ranges[s]]

    def _spectrum_values(self, step):
        span = self._index.ranges[step].get(fmt.VALUES_FILE)
        if span is None:
            return []
        with open(self.path / fmt.VALUES_FILE, "rb") as handle:
            handle.seek(span[0])
            return fmt.decode_values(handle.read(span[1] - span[0]))


def _check_table(table):
    checked_columns(table, None)


def _runs_inside(path):
    """A hint naming run folders one level below ``path`` (e.g. a demo's runs/)."""
    found = sorted(p.parent for p in path.glob("*/" + fmt.META_FILE))
    found += sorted(p.parent for p in path.glob("runs/*/" + fmt.META_FILE))
    if not found:
        return "; pass the folder that watch(..., run_dir=...) wrote"
    names = ", ".join(str(p) for p in found[:5])
    return f"; run folders inside it: {names}"
