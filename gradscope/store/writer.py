"""RunWriter: stream closed steps into a run folder, durably, one commit line per step."""

import copy
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gradscope.errors import GradscopeWarning
from gradscope.records import SCHEMA_VERSION, TABLES
from gradscope.store import format as fmt
from gradscope.store.errors import RunFormatError
from gradscope.store.index import build_index, committed_ends
from gradscope.store.files import open_append, refuse_odd_files, sync_dir, write_all, write_json_atomically


# beside a run, these are not the user's: hidden files (.gitkeep, .DS_Store) and the folder
# `gradscope report RUN_DIR` writes by default
IGNORED_ENTRIES = ("report",)


def foreign_entries(path):
    """Names in the folder ``path`` that a run does not account for, sorted."""
    own = set(fmt.ALL_FILES) | {fmt.META_FILE + ".tmp"} | set(IGNORED_ENTRIES)
    return sorted(entry.name for entry in path.iterdir()
                  if entry.name not in own and not entry.name.startswith("."))


class RunWriter:
    """Writes one run folder as the run goes (format: gradscope/store/format.py).

    ``RunWriter(run_dir, meta, overwrite=False, append=False)`` creates ``run_dir`` (and its
    parents) and writes ``meta`` (a JSON-able dict; ``"schema": 1`` is added when absent) to
    meta.json.

    - A folder that already holds a run is refused (``RunFormatError``) unless told otherwise:
      a new run in an old folder would mix two runs' step numbers. ``overwrite=True`` deletes
      the old run's files first (only gradscope's own file names; nothing else is touched).
      ``append=True`` goes on with the old run (same schema only; a fresh folder is fine too):
      whatever no whole commit names is cut off (with a ``GradscopeWarning``), meta.json is
      replaced by ``meta``, and later steps must come after the old run's last one. Use it
      to resume the same run (a Scope started again); one writer per folder at a time.
    - A folder holding files that are not a run's (e.g. the user's notes.txt) is refused for a
      new run and for ``overwrite=True``: nothing of the user's is written beside a run or
      deleted. Hidden files (``.gitkeep``) and a ``report/`` folder (what ``gradscope report``
      writes there) do not count. ``append=True`` to an existing run leaves them be.

    ``write_step(step, tables, values)`` appends one closed step and returns once it is on
    disk (flushed and fsynced): a process killed (even by SIGKILL) or a machine that loses power
    right after it returned leaves that step fully loadable. Steps must come in increasing
    order. The step's rows are written first, then its commit line in steps.jsonl; a reader
    ignores rows that no commit line names, so a step torn by a crash is dropped whole.

    ``add_to_step(step, tables, values)`` appends rows of a step written before (its spectra,
    computed off the training thread) with a commit line marked ``"adds": true``; until it
    returns, that step loads without them.

    ``update_meta(meta)`` atomically replaces meta.json (e.g. when a ``track`` label first
    shows up mid-run). ``close()`` ends the run; the writer is also a context manager.

    Distributed training: only rank 0 should hold a RunWriter; averaging rows over ranks
    belongs before ``write_step`` (the writer stores whatever tables it is given).
    """

    def __init__(self, run_dir, meta, *, overwrite=False, append=False):
        if overwrite and append:
            raise ValueError("RunWriter: pass overwrite=True or append=True, not both")
        self.path = Path(run_dir)
        meta = self._checked_meta(meta)
        self._fds = {}
        self._pool = None  # fsync threads, made on first use, ended by close()
        self._last_step = self._prepare_folder(overwrite, append)
        try:
            for table, name in fmt.TABLE_FILES.items():
                self._create(name, fmt.header_bytes(table))
            self._create(fmt.VALUES_FILE, b"")
            self._create(fmt.COMMIT_FILE, b"")
            # where the next commit line goes: the end of the last whole one
            self._commit_end = os.fstat(self._fds[fmt.COMMIT_FILE]).st_size
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
        self._append(step, tables, values, adds=False)
        self._last_step = step

    def add_to_step(self, step, tables, values=()):
        """Append rows computed after step ``step`` was written (its spectra, from the
        background worker) as a commit line that adds them to that step. ``tables`` must hold
        only tables the step has not written yet. Durable on return; steps written since are
        unaffected, and a crash before it returns loses only these rows."""
        if self._fds is None:
            raise RuntimeError(f"RunWriter for {self.path} is closed; open a new one to write")
        if isinstance(step, bool) or not isinstance(step, int) or self._last_step is None \
                or not 0 <= step <= self._last_step:
            raise ValueError(f"add_to_step({step!r}): the step must be one written before "
                             f"(last step written: {self._last_step})")
        self._append(step, tables, values, adds=True)

    def _append(self, step, tables, values, adds):
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
        if adds and not chunks:
            return  # nothing to add
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
        self._cut_torn_commit(commit)
        line = fmt.commit_line(step, ranges, rows, adds=adds)
        write_all(commit, line)
        os.fsync(commit)
        self._commit_end += len(line)

    def _cut_torn_commit(self, commit):
        """A commit write cut short (Ctrl-C, a full disk) may have left part of a line: cut it
        off, or the next commit line would be glued to it and that step lost with it. Whole
        lines written before the interruption stay."""
        size = os.fstat(commit).st_size
        if size == self._commit_end:
            return
        with open(self.path / fmt.COMMIT_FILE, "rb") as file:
            file.seek(self._commit_end)
            tail = file.read(size - self._commit_end)
        self._commit_end += tail.rfind(b"\n") + 1
        if self._commit_end != size:
            os.ftruncate(commit, self._commit_end)

    @property
    def last_step(self):
        """The last step in the folder (written here or by the run appended to), or None."""
        return self._last_step

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

    def _prepare_folder(self, overwrite, append):
        """Make the folder ready; the last step of the run appended to (or None)."""
        if self.path.exists() and not self.path.is_dir():
            raise RunFormatError(f"{self.path} exists and is not a folder; give run_dir a "
                                 "folder path")
        self.path.mkdir(parents=True, exist_ok=True)
        present = [n for n in fmt.ALL_FILES + (fmt.META_FILE + ".tmp",)
                   if (self.path / n).exists() or (self.path / n).is_symlink()]
        if append and fmt.META_FILE in present:
            return self._cut_to_last_commit()  # the user's files were there beside this run
        others = foreign_entries(self.path)
        if others:
            raise RunFormatError(self._foreign_message(others, overwrite, present))
        if not present:
            return None
        if overwrite:
            for name in present:
                target = self.path / name
                if target.is_dir() and not target.is_symlink():
                    raise RunFormatError(f"{target} is a folder; overwrite only deletes "
                                         "gradscope's own files. Remove it or pick another "
                                         "run_dir")
                target.unlink()
            sync_dir(self.path)
            return None
        if fmt.META_FILE in present:
            raise RunFormatError(
                f"{self.path} already holds a run ({self._describe_meta()}); gradscope does "
                "not mix two runs in one folder. Choose a new run_dir, delete the folder, or "
                "pass overwrite=True to replace the run or append=True to go on with it "
                "(gradscope.watch(model, run_dir=..., overwrite=True) or RunWriter(..., "
                "overwrite=True); append=True likewise).")
        raise RunFormatError(
            f"{self.path} holds {present}, which a run folder needs for itself; choose "
            "another run_dir, move those files, or pass overwrite=True (to gradscope.watch or "
            "RunWriter) to delete them (e.g. what a writer killed before its first step left).")

    def _foreign_message(self, others, overwrite, present):
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        if overwrite and present:
            what = ("overwrite=True replaces a run only in a folder that holds nothing else: "
                    "gradscope never deletes files it did not write, and will not leave them "
                    "beside a new run they do not describe")
        else:
            what = ("gradscope writes a new run only into a new or empty folder, so that nothing "
                    "of yours is mixed into a run or mistaken for part of it")
        return (f"{self.path} holds files that are not part of a gradscope run ({shown}); "
                f"{what}. Choose another run_dir (e.g. a subfolder), or move those files out.")

    def _cut_to_last_commit(self):
        """Before appending: check the old run's schema and cut every file back to the end of
        its last whole commit, so new steps follow committed bytes directly."""
        refuse_odd_files(self.path, fmt.ALL_FILES, "append to")  # appending would write through them
        meta_path = self.path / fmt.META_FILE
        try:
            old_meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise RunFormatError(f"cannot append to {self.path}: {meta_path} does not parse "
                                 f"({error})") from error
        fmt.check_schema(old_meta, str(meta_path))
        index = build_index(self.path, verify=True)
        for name, (_, columns) in index.headers.items():
            tables = [t for t, file in fmt.TABLE_FILES.items() if file == name]
            older = [c for c in TABLES[tables[0]] if c not in columns] if tables else []
            if older:
                raise RunFormatError(
                    f"cannot append to {self.path}: it was written by an earlier gradscope whose {name} "
                    f"has no column(s) {older}; start a new run folder, or pass overwrite=True to replace it")
        ends, commit_end = committed_ends(index)
        for name, end in list(ends.items()) + [(fmt.COMMIT_FILE, commit_end)]:
            target = self.path / name
            if target.exists() and target.stat().st_size > end:
                os.truncate(target, end)
        if index.problems:
            warnings.warn(GradscopeWarning(
                f"appending to run folder {self.path}: cut off what was not whole: "
                + "; ".join(index.problems)), stacklevel=4)
        return index.steps[-1] if index.steps else None

    def _describe_meta(self):
        try:
            meta = json.loads((self.path / fmt.META_FILE).read_text(encoding="utf-8"))
            return f"schema {meta.get('schema')!r}, name {meta.get('name')!r}"
        except (OSError, ValueError, AttributeError):
            return "a meta.json that does not parse"

    def _create(self, name, header):
        fd = open_append(self.path / name)
        self._fds[name] = fd
        if header and os.fstat(fd).st_size == 0:  # a file appended to has its header
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
