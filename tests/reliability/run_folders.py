"""A small intact run folder and the property every damaged copy of it must keep: ``load``
gives whole steps exactly as written (tables, row counts, spectra) or raises RunFormatError.
Shared by the reliability families (properties and files)."""

import functools
import signal
import warnings
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pandas.testing as pdt

from gradscope.errors import GradscopeWarning
from gradscope.records import TABLES
from gradscope.store import RunFormatError, RunWriter, load
from gradscope.store import format as fmt
from gradscope.store.synthetic import synthetic_meta, synthetic_step


@contextmanager
def time_limit(seconds):
    """Fail (instead of hanging CI) when the body runs longer than ``seconds`` (where the
    platform has SIGALRM; elsewhere the body just runs)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum, frame):
        raise TimeoutError(f"took longer than {seconds} s: the reader hangs")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


MODULE_NAMES = ("a,b", 'q"uote\nline')
STEPS = (0, 1, 2)


@functools.lru_cache(maxsize=None)
def synthetic(step):
    return synthetic_step(step, modules=MODULE_NAMES, layers=1, T=3, batch=2, hidden=2)


def write_pristine(path):
    """Write a small intact run folder (three steps, odd module names) at ``path``; return
    the bytes of each of its files."""
    with RunWriter(path, synthetic_meta("pristine", MODULE_NAMES, layers=1, hidden=2)) as writer:
        for step in STEPS:
            writer.write_step(step, *synthetic(step))
    return {name: (path / name).read_bytes() for name in fmt.ALL_FILES}


@functools.lru_cache(maxsize=None)
def expected_table(table, steps):
    return pd.concat([synthetic(s)[0][table] for s in steps], ignore_index=True)


def assert_whole_steps_or_format_error(path):
    """The property: what ``load`` gives is whole steps exactly as written, or a RunFormatError."""
    with time_limit(20), warnings.catch_warnings():
        warnings.simplefilter("ignore", GradscopeWarning)  # a damaged folder warns; that is fine
        try:
            run = load(path)
            steps = run.steps()
            tables = {table: run.table(table) for table in TABLES}
            counts = {table: run.row_count(table) for table in TABLES}
            spectra = {(s, m): run.spectrum(m, layer=0, gate="all", step=s) for s in steps for m in MODULE_NAMES}
        except RunFormatError:
            return
    assert set(steps) <= set(STEPS), steps
    for table, got in tables.items():
        if steps:
            pdt.assert_frame_equal(got, expected_table(table, tuple(steps)), obj=table)
        else:
            assert got.empty, table
        assert counts[table] == len(got), (table, counts[table], len(got))
    for (s, m), got in spectra.items():
        value = next(v for v in synthetic(s)[1] if v["gate"] == "all" and v["module"] == m)
        np.testing.assert_array_equal(got["singular_values"], value["singular_values"])
        np.testing.assert_array_equal(got["eigenvalues"].real, value["eigenvalues_real"])
        np.testing.assert_array_equal(got["eigenvalues"].imag, value["eigenvalues_imag"])


def damaged_folder(tmp_path, pristine, name, damage):
    path = tmp_path / "run"
    path.mkdir(exist_ok=True)
    for other, data in pristine.items():
        (path / other).write_bytes(damage(data) if other == name else data)
    return path
