"""StepRows: where a Scope keeps the rows of its recorded steps.

Without a run folder they stay in memory. With one (``follow``), a step's rows live only on
disk once written, and the tables are read back from there (``gradscope.store.LiveRun``), so a
Scope that streams holds bounded memory however long it runs and gives exactly what
``gradscope.load`` of its folder gives. Rows that could not be written stay in memory.

Not thread-safe by itself: the Scope calls it under its lock.
"""

from typing import Optional

import pandas as pd

from gradscope.records import TABLES, Columns, Steps, checked_columns, frame, select_rows, wanted_steps


class StepRows:
    """The recorded rows of one Scope: in memory, read back from its run folder, or both."""

    def __init__(self):
        self._tables = {table: [] for table in TABLES}  # rows held in memory, a frame per step
        self._values = []  # value records (full spectra) held in memory
        self._folder = None  # LiveRun of the run folder the Scope writes, once it streams
        self._stale = False  # steps were written since the folder's commit log was last read
        self._cache = {}  # answers since the last step was kept or written

    @property
    def streams(self) -> bool:
        """Whether written rows are read back from a run folder (and not kept in memory)."""
        return self._folder is not None

    def follow(self, path, meta: dict, first_step: int) -> None:
        """Read written rows back from the run folder ``path`` from ``first_step`` on (the
        Scope's first step there; earlier steps belong to a run it appended to)."""
        from gradscope.store.live_run import LiveRun

        self._folder = LiveRun(path, meta, first_step)
        self._stale = False
        self._cache.clear()

    def keep(self, tables: dict, values: list) -> None:
        """Hold a step's rows in memory (no run folder, or its write failed)."""
        for table, df in tables.items():
            if df is not None and len(df):
                self._tables[table].append(df)
        self._values.extend(values)
        self._cache.clear()

    def written(self) -> None:
        """A step's rows reached the run folder: read them from there from now on."""
        self._stale = True
        self._cache.clear()

    def table(self, table: str, steps: Steps = None, columns: Columns = None) -> pd.DataFrame:
        """As ``TableSource.table``; a new frame each call."""
        columns = checked_columns(table, columns)
        wanted = wanted_steps(steps)
        if self._folder is None:
            return select_rows(self._in_memory(table), table, wanted, columns)
        key = (table, None if wanted is None else frozenset(wanted), tuple(columns))
        if key not in self._cache:
            self._cache[key] = self._read_back(table, wanted, columns)
        return self._cache[key].copy()

    def steps(self) -> list:
        """The recorded step numbers (those with rows in any table), increasing."""
        found = {int(s) for frames in self._tables.values() for f in frames for s in pd.unique(f["step"])}
        if self._folder is not None:
            found.update(self._refreshed().steps_with_rows())
        return sorted(found)

    def spectrum_steps(self) -> list:
        """The steps that hold full spectra (value records), increasing."""
        found = {int(v["step"]) for v in self._values}
        if self._folder is not None:
            found.update(self._refreshed()._spectrum_steps())
        return sorted(found)

    def spectrum_values(self, step: int) -> list:
        """The value records of ``step``."""
        found = [v for v in self._values if v["step"] == step]
        if self._folder is not None and step in self._refreshed()._index.ranges:
            found += self._folder._spectrum_values(step)
        return found

    def _in_memory(self, table):
        if ("memory", table) not in self._cache:
            parts = [f for f in self._tables[table] if len(f)]
            self._cache[("memory", table)] = frame(table, pd.concat(parts, ignore_index=True) if parts else None)
        return self._cache[("memory", table)]

    def _read_back(self, table, wanted: Optional[set], columns):
        if not self._tables[table]:
            return self._refreshed().table(table, wanted, columns)
        # rows of steps whose write failed are merged in, in step order
        need = columns if "step" in columns else columns + ["step"]
        held = select_rows(self._in_memory(table), table, wanted, need)
        # a write that failed after its commit line was out (its fsync) is on disk as well
        held = held[~held["step"].isin(self._refreshed().steps_in(table))]
        merged = pd.concat([self._folder.table(table, wanted, need), held], ignore_index=True)
        return merged.sort_values("step", kind="stable").loc[:, columns].reset_index(drop=True)

    def _refreshed(self):
        if self._stale:
            self._folder.refresh()
            self._stale = False
        return self._folder
