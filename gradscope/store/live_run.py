"""LiveRun: a run folder read back while its own writer (a Scope's RunWriter) is still writing.

A loaded ``Run`` is a snapshot; a LiveRun follows the commit log instead: ``refresh()`` reads
only the commit lines written since the last call, so a Scope that reads its tables back every
step does not parse the whole log every step. Its index is a few packed integers per step and
file (``CompactIndex``, ~100 bytes a step), not a dict per step (~1 KiB), so that a Scope
streaming for days holds little more than its run folder's length in memory.
"""

import os
from array import array
from bisect import bisect_left
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from gradscope.store import format as fmt
from gradscope.store.index import build_index
from gradscope.store.reader import Run


class _FileSpans:
    """Where each step's rows sit in one data file: packed arrays, ordered by step."""

    def __init__(self):
        self.steps, self.starts, self.ends, self.rows = array("q"), array("q"), array("q"), array("q")

    def add(self, step, start, end, rows):
        at = len(self.steps) if not self.steps or step > self.steps[-1] else bisect_left(self.steps, step)
        if at < len(self.steps) and self.steps[at] == step:
            return  # a step's rows in a file come once (the writer refuses a second add)
        for column, value in ((self.steps, step), (self.starts, start), (self.ends, end), (self.rows, rows)):
            column.insert(at, value)

    def find(self, step):
        at = bisect_left(self.steps, step)
        return at if at < len(self.steps) and self.steps[at] == step else None


class CompactIndex:
    """The parts of ``gradscope.store.index.CommitIndex`` a ``Run`` reads (``steps``,
    ``ranges[step]``, ``rows[step]``, ``headers``), kept as packed arrays."""

    def __init__(self, headers):
        self.headers = headers
        self.problems = []
        self.steps = array("q")
        self.files = {name: _FileSpans() for name in fmt.DATA_FILES}
        self.ranges = _Ranges(self)
        self.rows = _Rows(self)

    def add(self, step, ranges, rows, adds):
        """One commit line's step (``adds``: files joining a step committed before)."""
        if adds:
            if not self.has(step):
                return
        elif self.steps and step <= self.steps[-1]:
            return  # not increasing: a load() would drop it too
        else:
            self.steps.append(step)
        rows = rows if isinstance(rows, dict) else {}
        for name, (start, end, _) in ranges.items():
            self.files[name].add(step, start, end, int(rows.get(_table_of(name), 0)))

    def has(self, step):
        at = bisect_left(self.steps, step)
        return at < len(self.steps) and self.steps[at] == step


class _Ranges(Mapping):
    """``ranges[step]``: ``{file: (start, end, 0)}`` (the checksum is not kept: not verified)."""

    def __init__(self, index):
        self._index = index

    def __getitem__(self, step):
        return self._per_file(step, lambda name, spans, at: (name, (spans.starts[at], spans.ends[at], 0)))

    def _per_file(self, step, entry):
        """``dict(entry(file, spans, position))`` over the files that hold rows of ``step``."""
        if not self._index.has(step):
            raise KeyError(step)
        found = {}
        for name, spans in self._index.files.items():
            at = spans.find(step)
            if at is not None:
                key, value = entry(name, spans, at)
                found[key] = value
        return found

    def __iter__(self):
        return iter(self._index.steps)

    def __len__(self):
        return len(self._index.steps)


class _Rows(_Ranges):
    """``rows[step]``: ``{table or "values": row count}``."""

    def __getitem__(self, step):
        return self._per_file(step, lambda name, spans, at: (_table_of(name), spans.rows[at]))


def _table_of(name):
    """The table (or "values") whose rows the data file ``name`` holds."""
    return "values" if name == fmt.VALUES_FILE else name[:-len(".csv")]


class LiveRun(Run):
    """The steps from ``first_step`` on of the run folder ``path`` that a writer in this process
    is writing.

    Args:
        path: the run folder.
        meta: the writer's meta dict (kept by reference: the Scope updates it).
        first_step: earlier steps (those of a run appended to) are left out.
    """

    def __init__(self, path: os.PathLike, meta: dict, first_step: int = 0):
        path = Path(path)
        # the writer checked the folder (append cuts it to its last whole commit): no checksums
        full = build_index(path, verify=False)
        index = CompactIndex(full.headers)
        for step in full.steps:
            if step >= first_step:
                index.add(step, full.ranges[step], full.rows[step], adds=False)
        super().__init__(path, meta, index)
        self._first_step = first_step
        self._commit_end = max(full.line_ends.values(), default=0)

    def refresh(self) -> None:
        """Take in the commit lines appended since the last call (whole lines only: one being
        written now is taken next time)."""
        with open(self.path / fmt.COMMIT_FILE, "rb") as handle:
            handle.seek(self._commit_end)
            data = handle.read()
        whole = data[:data.rfind(b"\n") + 1]
        for line in whole.split(b"\n"):
            if line.strip():
                self._take(line)
        self._commit_end += len(whole)

    def steps_with_rows(self) -> list:
        """The committed steps that hold at least one table row (value records aside)."""
        found = set()
        for name, spans in self._index.files.items():
            if name != fmt.VALUES_FILE:
                found.update(s for s, n in zip(spans.steps, spans.rows) if n)
        return sorted(found)

    def steps_in(self, table: str) -> list:
        """The committed steps with rows of ``table`` (a name of gradscope.records.TABLES)."""
        return list(self._index.files[fmt.TABLE_FILES[table]].steps)

    def _take(self, line):
        try:
            step, ranges, rows = fmt.parse_commit(line)
            adds = fmt.commit_adds(line)
        except (ValueError, TypeError, KeyError, AttributeError):
            return  # the torn line of a failed write: its step was reported as not written
        if step >= self._first_step:
            self._index.add(step, ranges, rows, adds)

    def _spans(self, name, steps):
        spans = self._index.files[name]
        if not spans.steps:
            return []
        # copies, not views: an array('q') that exports its buffer cannot grow
        have = np.array(spans.steps, dtype=np.int64)
        wanted = np.array(steps, dtype=np.int64)
        at = np.searchsorted(have, wanted).clip(max=len(have) - 1)
        at = at[have[at] == wanted]
        starts, ends = np.array(spans.starts, dtype=np.int64), np.array(spans.ends, dtype=np.int64)
        return list(zip(starts[at].tolist(), ends[at].tolist()))

    def _spectrum_steps(self):
        return list(self._index.files[fmt.VALUES_FILE].steps)
