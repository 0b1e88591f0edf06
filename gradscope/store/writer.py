"""RunWriter: stream closed steps into a run folder, durably, one commit line per step."""

import copy
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gradscope.records import SCHEMA_VERSION, TABLES
from gradscope.store import format as fmt
from gradscope.store.errors import RunFormatError
from gradscope.store.files import open_append, sync_dir, write_all, write_json_atomically


class RunWriter:
    """Writes one run folder as the run goes (format: gradscope/store/format.py).

    ``RunWriter(run_dir, meta, overwrite=False)`` creates ``run_dir`` (and its parents) and
    writes ``meta`` (a JSON-able dict; ``"schema": 1`` is added when absent) to meta.json.

    - A folder that already holds a run is refused (``RunFormatError``): appending to an old
      run would mix two runs' step numbers. Pick a new folder, or pass ``overwrite=True`` to
      delete the old run's files (only gradscope's own file names; nothing else is touched).
    - A folder holding other files is fine, unless one of them has a name the run needs
      (meta.json, steps.jsonl, values.jsonl, <table>.csv): then it is refused too.

    ``write_step(step, tables, values)`` appends one closed step and returns once it is on
    disk (flushed and fsynced): a process killed (even by SIGKILL) or a machine that loses power
    right after it returned leaves that step fully loadable. Steps must come in increasing
    order. The step's rows are written first, then its commit line in steps.jsonl; a reader
    ignores rows that no commit line names, so a step torn by a crash is dropped whole.

    ``update_meta(meta)`` atomically replaces meta.json (e.g. when a ``track`` label first
    shows up mid-run). ``close()`` ends the run; the writer is also a context manager.

    Distributed training: only rank 0 should hold a RunWriter; averaging rows over ranks
    belongs before ``write_step`` (the writer stores whatever tables it is given).
    """

    def __init__(self, run_dir, meta, *, overwrite=False):
        self.path = Path(run_dir)
        meta = self._checked_meta(meta)
        self._prepare_folder(overwrite)
        self._fds = {}
        self._pool = None  # fsync threads, made on first use, ended by close()
        self._last_step = None
        try:
            for table, name in fmt.TABLE_FILES.items():
                self._create(name, fmt.header_bytes(table))
            self._create(fmt.VALUES_FILE, b"")
            self._create(fmt.COMMIT_FILE, b"")
            sync_dir(self.path)
            # meta.json last: its presence is what makes the folder a run
            write_json_atomically(self.path / fmt.META_FILE, meta)
        except BaseException:
            self._close_fds()
            raise

    # -- public -----------------------------------------------------------------------------

    def write_step(self, step, tables, values=()):
        """Append step ``step``: ``tables`` maps table names of gradscope.records.TABLES to
        DataFrames with exactly those columns (a table may be absent or empty); ``values``
        are the full spectra, dicts with the keys of format.VALUE_KEYS. Durable on return."""
        if self._fds is None:
            raise RuntimeError(f"RunWriter for {self.path} is closed; open a new one to write")
        step = self._checked_step(step)
        unknown = sorted(set(tables) - set(TABLES))
        if unknown:
            raise ValueError(f"unknown table(s) {unknown}; the tables are {list(TABLES)}")
        # encode everything before writing anything: a bad table leaves the files untouched
        chunks, rows = {}, {}
        for table, df in tables.items():
            if df is not None and len(df):
                chunks[fmt.TABLE_FILES[table]] = fmt.encode_rows(table, df, step)
                rows[table] = len(df)
        values = list(values)
        if values:
            chunks[fmt.VALUES_FILE] = fmt.encode_values(values, step)
            rows["values"] = len(values)
        ranges = {}
        for name, data in chunks.items():
            fd = self._fds[name]
            # the true end of file, not a remembered one: after a failed write the next step
            # starts past whatever partial bytes it left, which no commit line covers
            start = os.fstat(fd).st_size
            write_all(fd, data)
            ranges[name] = (start, start + len(data), fmt.crc32(data))
        self._sync([self._fds[name] for name in chunks])
        commit = self._fds[fmt.COMMIT_FILE]
        write_all(commit, fmt.commit_line(step, ranges, rows))
        os.fsync(commit)
        self._last_step = step

    def update_meta(self, meta):
        """Atomically replace meta.json by ``meta`` (same rules as the constructor's)."""
        if self._fds is None:
            raise RuntimeError(f"RunWriter for {self.path} is closed")
        write_json_atomically(self.path / fmt.META_FILE, self._checked_meta(meta))

    def close(self):
        """Close the files. Every step written so far stays loadable; idempotent."""
        self._close_fds()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
        return False

    def __repr__(self):
        state = "closed" if self._fds is None else f"last step {self._last_step}"
        return f"RunWriter({str(self.path)!r}, {state})"

    # -- helpers ----------------------------------------------------------------------------

    def _checked_meta(self, meta):
        if not isinstance(meta, dict):
            raise TypeError(f"meta must be a dict, not {type(meta).__name__}")
        meta = copy.deepcopy(meta)
        schema = meta.setdefault("schema", SCHEMA_VERSION)
        if schema != SCHEMA_VERSION:
            raise ValueError(f"meta has schema {schema!r}; this gradscope writes schema "
                             f"{SCHEMA_VERSION}")
        try:
            json.dumps(meta, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise ValueError(f"meta must be JSON-serialisable (no NaN, no objects): {error}") \
                from error
        return meta

    def _checked_step(self, step):
        if isinstance(step, bool) or not isinstance(step, int):
            try:
                as_int = int(step)
            except (TypeError, ValueError):
                as_int = None
            if as_int is None or as_int != step:
                raise TypeError(f"step must be an int, not {step!r}")
            step = as_int
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if self._last_step is not None and step <= self._last_step:
            raise ValueError(f"step {step} comes after step {self._last_step}; steps must be "
                             "written in increasing order, each once")
        return step

    def _prepare_folder(self, overwrite):
        if self.path.exists() and not self.path.is_dir():
            raise RunFormatError(f"{self.path} exists and is not a folder; give run_dir a "
                                 "folder path")
        self.path.mkdir(parents=True, exist_ok=True)
        present = [n for n in fmt.ALL_FILES + (fmt.META_FILE + ".tmp",)
                   if (self.path / n).exists() or (self.path / n).is_symlink()]
        if not present:
            return
        if overwrite:
            for name in present:
                target = self.path / name
                if target.is_dir() and not target.is_symlink():
                    raise RunFormatError(f"{target} is a folder; overwrite only deletes "
                                         "gradscope's own files. Remove it or pick another "
                                         "run_dir")
                target.unlink()
            sync_dir(self.path)
            return
        if fmt.META_FILE in present:
            raise RunFormatError(
                f"{self.path} already holds a run ({self._describe_meta()}); gradscope does "
                "not append to an old run. Choose a new run_dir, delete the folder, or pass "
                "overwrite=True to replace it.")
        raise RunFormatError(
            f"{self.path} holds {present}, which a run folder needs for itself; choose "
            "another run_dir or move those files.")

    def _describe_meta(self):
        try:
            meta = json.loads((self.path / fmt.META_FILE).read_text(encoding="utf-8"))
            return f"schema {meta.get('schema')!r}, name {meta.get('name')!r}"
        except (OSError, ValueError, AttributeError):
            return "a meta.json that does not parse"

    def _create(self, name, header):
        fd = open_append(self.path / name)
        self._fds[name] = fd
        if header:
            write_all(fd, header)
        os.fsync(fd)

    def _sync(self, fds):
        """fsync ``fds`` at once: concurrent fsyncs share one journal commit on ext4 and the
        like, about 20x faster than one after another (measured in benchmarks/store_scale.py)."""
        if len(fds) <= 1:
            for fd in fds:
                os.fsync(fd)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(len(fmt.DATA_FILES), "gradscope-fsync")
        list(self._pool.map(os.fsync, fds))

    def _close_fds(self):
        fds, self._fds = self._fds, None
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        for fd in (fds or {}).values():
            os.close(fd)
