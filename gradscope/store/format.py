"""The run folder format, version 1: file names, how a step's rows become bytes and back.

A run folder holds (docs/run-folder.md is the user-facing description)::

    meta.json       the run's meta dict, with "schema": 1 (written atomically, read first)
    timesteps.csv   one CSV per table of gradscope.records.TABLES: a header line, then rows
    spectra.csv     ...
    jacobians.csv
    lyapunov.csv
    gates.csv
    values.jsonl    one JSON object per line: the full spectrum of one weight block at one step
    steps.jsonl     the commit log: one JSON line per closed step, written after its rows
                    (and a line with "adds": true where rows computed later, such as a
                    step's spectra from the background worker, join a step committed before)

Only rows named by a commit line are part of the run. A commit line gives, for every file the
step wrote to, the byte range of that step's rows and their CRC-32, so a reader can seek straight
to the steps it wants and can tell a torn or damaged range from a whole one; and the CRC-32 of
the line itself ("crc"), so a damaged step number or row count is told from a whole one too.

CSV dialect (RFC 4180 quoting): UTF-8, ``\\n`` line ends, every string field in double
quotes with ``"`` doubled (so commas, quotes, ``\\r`` and ``\\n`` inside module names survive),
numbers bare, floats in Python's shortest round-trip repr, ``nan``, ``inf``, ``-inf``.
``pandas.read_csv`` reads a whole file as it is (see read_csv_options for exact dtypes).

Nothing here unpickles or evaluates: the loaders are ``json`` and ``pandas.read_csv``.
"""

import json
import zlib

import pandas as pd

from gradscope.records import SCHEMA_VERSION, TABLES, dtype_of as _dtype
from gradscope.store.errors import RunFormatError

META_FILE = "meta.json"
COMMIT_FILE = "steps.jsonl"
VALUES_FILE = "values.jsonl"
TABLE_FILES = {table: f"{table}.csv" for table in TABLES}
DATA_FILES = tuple(TABLE_FILES.values()) + (VALUES_FILE,)
ALL_FILES = (META_FILE, COMMIT_FILE) + DATA_FILES

VALUE_KEYS = ("step", "module", "layer", "direction", "gate",
              "singular_values", "eigenvalues_real", "eigenvalues_imag")
NA_TEXT = "nan"


def string_columns(table):
    return [c for c in TABLES[table] if _dtype(c) is object]


def float_columns(table):
    return [c for c in TABLES[table] if _dtype(c) == "float64"]


def header_bytes(table):
    """The first line of a table file: its column names."""
    return (",".join(TABLES[table]) + "\n").encode("utf-8")


def encode_rows(table, df, step):
    """The CSV bytes of one step's rows of ``table`` (no header).

    ``df`` must hold exactly the table's columns (any order), every row for ``step``, and no
    missing strings; numeric columns are cast to the schema's dtypes so that ``1.0`` in an
    integer column is written as ``1`` and reads back as int64.
    """
    columns = TABLES[table]
    missing = [c for c in columns if c not in df.columns]
    extra = [c for c in df.columns if c not in columns]
    if missing or extra:
        raise ValueError(
            f"table {table!r} for step {step}: columns must be exactly {columns} "
            f"(missing {missing}, unexpected {extra}); build it with gradscope.records.frame")
    if list(df.columns) != columns:
        df = df.loc[:, columns]
    # cast only what differs: astype over every column costs more than writing the rows
    numeric = {c: _dtype(c) for c in columns
               if _dtype(c) is not object and df[c].dtype != _dtype(c)}
    if numeric:
        try:
            df = df.astype(numeric)
        except (TypeError, ValueError) as error:
            raise ValueError(f"table {table!r} for step {step}: a numeric column holds "
                             f"something that is not a number ({error})") from error
    wrong_step = df["step"].to_numpy() != step
    if wrong_step.any():
        found = sorted(set(df["step"].to_numpy()[wrong_step].tolist()))
        raise ValueError(f"table {table!r} passed to write_step({step}) has rows of step(s) "
                         f"{found[:5]}; write each step's rows with its own write_step call")
    for column in string_columns(table):
        if df[column].isna().to_numpy().any():
            raise ValueError(f"table {table!r} for step {step}: column {column!r} has missing "
                             "values; every string column needs a string in each row")
    cells = [_column_text(df[c].to_numpy(), _dtype(c)) for c in columns]
    return ("\n".join(map(",".join, zip(*cells))) + "\n").encode("utf-8")


def _column_text(values, dtype):
    """The CSV field texts of one column (DataFrame.to_csv costs ~1 ms a call; this less)."""
    if dtype is object:
        return ['"' + str(v).replace('"', '""') + '"' for v in values.tolist()]
    if dtype == "float64":
        # repr: the shortest text that reads back to the same float; nan, inf, -inf as is
        return list(map(float.__repr__, values.tolist()))
    return list(map(int.__repr__, values.tolist()))


def encode_values(values, step):
    """The JSON-lines bytes of one step's full spectra (one object per weight block)."""
    lines = []
    for value in values:
        missing = [k for k in VALUE_KEYS if k not in value]
        if missing:
            raise ValueError(f"spectrum value for step {step} lacks {missing}; "
                             f"each needs the keys {list(VALUE_KEYS)}")
        if value["step"] != step:
            raise ValueError(f"spectrum value of step {value['step']} passed to "
                             f"write_step({step})")
        record = {
            "step": int(value["step"]),
            "module": str(value["module"]),
            "layer": int(value["layer"]),
            "direction": str(value["direction"]),
            "gate": str(value["gate"]),
            # floats as Python's repr: exact round trip; NaN/Infinity as Python's json writes them
            "singular_values": [float(v) for v in value["singular_values"]],
            "eigenvalues_real": [float(v) for v in value["eigenvalues_real"]],
            "eigenvalues_imag": [float(v) for v in value["eigenvalues_imag"]],
        }
        # ensure_ascii keeps every record on one line whatever the module name holds
        lines.append(json.dumps(record, ensure_ascii=True) + "\n")
    return "".join(lines).encode("ascii")


def decode_values(data):
    """The value records in ``data`` (whole lines of values.jsonl)."""
    return [json.loads(line) for line in data.decode("ascii").splitlines() if line]


_LINE_CRC = b', "crc": '


def commit_line(step, ranges, rows, adds=False):
    """One line of steps.jsonl: ``ranges`` maps file name -> (start, end, crc32). ``adds``:
    the line adds files to a step committed earlier (spectra computed after the step closed).
    The line ends with ``"crc"``: the CRC-32 of the line's JSON object before it (``{...}``
    without the ``, "crc": N``), so a damaged digit cannot give a step another number or row
    count."""
    record = {"step": step, "files": {name: list(r) for name, r in ranges.items()},
              "rows": rows}
    if adds:
        record["adds"] = True
    body = json.dumps(record, ensure_ascii=True).encode("ascii")
    return body[:-1] + _LINE_CRC + str(crc32(body)).encode("ascii") + b"}\n"


def parse_commit(line):
    """``(step, {file: (start, end, crc)}, rows)`` from a commit line, or ValueError. A line
    that adds to an earlier step (``commit_adds``) parses the same way. Lines written before
    commit lines carried their own "crc" are taken without that check."""
    record = json.loads(line)
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    if "crc" in record:
        cut = line.rfind(_LINE_CRC)
        if cut < 0 or record.pop("crc") != crc32(line[:cut] + b"}"):
            raise ValueError("the line fails its own checksum (damaged)")
    step = record["step"]
    if not isinstance(step, int) or step < 0:
        raise ValueError(f"bad step {step!r}")
    ranges = {}
    for name, (start, end, crc) in record["files"].items():
        if name not in DATA_FILES or not all(isinstance(v, int) for v in (start, end, crc)) \
                or not 0 <= start <= end:
            raise ValueError(f"bad range {name!r}: {[start, end, crc]}")
        ranges[name] = (start, end, crc)
    rows = record.get("rows", {})
    return step, ranges, rows


def commit_adds(line):
    """Whether a (parsed-whole) commit line adds files to a step committed earlier."""
    return json.loads(line).get("adds") is True


def crc32(data, value=0):
    return zlib.crc32(data, value)


def read_csv_options(table, columns, as_text=()):
    """pandas.read_csv keyword arguments that give back exactly what encode_rows wrote.

    String columns are parsed as categories, except those in ``as_text``: as plain strings
    (pandas parses a category whose every value looks like a number as numbers, so a module
    named "00" would come back as "0"; see categories_lost_text)."""
    # category parsing keeps one object per distinct string (module names repeat millions of
    # times in a big run); the reader turns them into plain strings afterwards
    dtype = {c: (str if c in as_text else "category") if _dtype(c) is object else _dtype(c)
             for c in columns}
    options = dict(
        dtype=dtype, usecols=columns, keep_default_na=False,
        na_values={c: [NA_TEXT] for c in float_columns(table) if c in columns},
        encoding="utf-8", engine="c",
    )
    if int(pd.__version__.split(".")[0]) < 3:
        # pandas 3 parses floats exactly by default (and deprecates this option)
        options["float_precision"] = "round_trip"
    return options


def categories_lost_text(df, columns):
    """The columns whose categories pandas parsed as numbers or booleans, not as the text
    written (it does when every value in the read looks like one): read them again as text."""
    return [c for c in columns if isinstance(df[c].dtype, pd.CategoricalDtype)
            and not pd.api.types.is_string_dtype(df[c].cat.categories)]


def check_schema(meta, where):
    """Raise a clear error unless ``meta`` is a run meta dict of this gradscope's schema."""
    if not isinstance(meta, dict) or "schema" not in meta:
        raise RunFormatError(f"{where} has no \"schema\" entry: not a gradscope run folder")
    if meta["schema"] != SCHEMA_VERSION:
        raise RunFormatError(
            f"{where} is a run of schema {meta['schema']!r}; this gradscope reads schema "
            f"{SCHEMA_VERSION}. Use the gradscope version that wrote it (or a newer one).")
