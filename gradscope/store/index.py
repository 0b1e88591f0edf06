"""The commit index of a run folder: which steps are whole, and where their bytes are.

Built once when a run is loaded. Everything that is not whole (a torn last line, a range past
the end of a truncated file, bytes failing their checksum, rows no commit line names) is
dropped and described, so load() can say in one warning what it left out.
"""

import json
import os
from dataclasses import dataclass, field

from gradscope.records import ADDED_COLUMNS, TABLES
from gradscope.store import format as fmt
from gradscope.store.errors import RunFormatError

_VERIFY_BLOCK = 1 << 20


@dataclass
class CommitIndex:
    steps: list = field(default_factory=list)        # committed steps, increasing
    ranges: dict = field(default_factory=dict)       # step -> {file: (start, end, crc)}
    rows: dict = field(default_factory=dict)         # step -> {table or "values": count}
    headers: dict = field(default_factory=dict)      # csv file -> (header bytes, columns)
    line_ends: dict = field(default_factory=dict)    # step -> byte after its last commit line
    problems: list = field(default_factory=list)     # what was dropped, in words


def build_index(path, verify=True):
    """Read steps.jsonl and check every commit against the data files in ``path``."""
    index = CommitIndex()
    sizes = {name: _size(path / name) for name in fmt.DATA_FILES}
    for table, name in fmt.TABLE_FILES.items():
        index.headers[name] = _read_header(path / name, table)
    floor = {name: len(index.headers.get(name, (b"", []))[0]) for name in fmt.DATA_FILES}

    for number, line, whole, line_end in _commit_lines(path / fmt.COMMIT_FILE):
        if not whole:
            index.problems.append(f"{fmt.COMMIT_FILE} ends in a torn line ({len(line)} bytes, "
                                  "a commit cut short): its step is not loaded")
            continue
        try:
            step, ranges, rows = fmt.parse_commit(line)
            adds = fmt.commit_adds(line)
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            index.problems.append(f"{fmt.COMMIT_FILE} line {number} is not a commit record "
                                  f"({_short(error)}): dropped")
            continue
        reason = _range_problem(step, ranges, sizes, floor, index, adds)
        if reason:
            label = f"rows added later to step {step}" if adds else f"step {step}"
            index.problems.append(f"{label}: {reason}: dropped")
            continue
        rows = rows if isinstance(rows, dict) else {}
        if adds:  # files joining a step committed earlier (e.g. its spectra, computed later)
            index.ranges[step].update(ranges)
            index.rows[step].update(rows)
        else:
            index.steps.append(step)
            index.ranges[step] = ranges
            index.rows[step] = rows
        index.line_ends[step] = line_end
        for name, (_, end, _) in ranges.items():
            floor[name] = end

    if verify:
        _drop_damaged(path, index)
    _report_uncovered(sizes, index)
    return index


def _commit_lines(commit_path):
    """(line number, bytes, ends with newline, byte after it) for each line of the log."""
    try:
        data = commit_path.read_bytes()
    except FileNotFoundError:
        return
    start = 0
    for number, line in enumerate(data.split(b"\n"), start=1):
        end = start + len(line) + 1
        whole = end <= len(data)
        if line.strip() or (line and not whole):
            yield number, line, whole, min(end, len(data))
        start = end


def _range_problem(step, ranges, sizes, floor, index, adds=False):
    if adds:
        if step not in index.ranges:
            return f"adds to a step that {fmt.COMMIT_FILE} has not committed before"
        again = sorted(set(ranges) & set(index.ranges[step]))
        if again:
            return f"adds {again} to it a second time"
    elif index.steps and step <= index.steps[-1]:
        return f"comes after step {index.steps[-1]} in {fmt.COMMIT_FILE} (not increasing)"
    for name, (start, end, _) in ranges.items():
        if end > sizes[name]:
            return (f"its rows in {name} end at byte {end} but the file holds only "
                    f"{sizes[name]} bytes (truncated)")
        if start < floor[name]:
            return f"its rows in {name} overlap the header or an earlier step"
    return None


def _drop_damaged(path, index):
    """Drop every step whose bytes fail their CRC-32 (one pass per file, in file order)."""
    damaged = {}
    for name in fmt.DATA_FILES:
        spans = [(s, index.ranges[s][name]) for s in index.steps if name in index.ranges[s]]
        if not spans:
            continue
        with open(path / name, "rb") as handle:
            for step, (start, end, crc) in spans:
                handle.seek(start)
                value, left = 0, end - start
                while left:
                    block = handle.read(min(left, _VERIFY_BLOCK))
                    if not block:
                        break
                    value = fmt.crc32(block, value)
                    left -= len(block)
                if left or value != crc:
                    damaged.setdefault(step, []).append(name)
    for step, names in damaged.items():
        index.problems.append(f"step {step}: its bytes in {', '.join(names)} fail their "
                              "checksum (damaged): dropped from every table")
        index.steps.remove(step)
        del index.ranges[step]
        del index.rows[step]
        del index.line_ends[step]


def committed_ends(index):
    """{file: the byte after the last committed step's rows} (the header's end if none), and
    the byte after the last whole commit line: where an appending writer cuts off the rest."""
    ends = {name: len(index.headers.get(name, (b"", []))[0]) for name in fmt.DATA_FILES}
    for ranges in index.ranges.values():
        for name, (_, end, _) in ranges.items():
            ends[name] = max(ends[name], end)
    commit_end = max(index.line_ends.values(), default=0)
    return ends, commit_end


def _report_uncovered(sizes, index):
    for name in fmt.DATA_FILES:
        header = len(index.headers.get(name, (b"", []))[0])
        covered = sum(r[name][1] - r[name][0] for r in index.ranges.values() if name in r)
        loose = sizes[name] - header - covered
        if loose > 0:
            index.problems.append(f"{name}: {loose} bytes that no whole commit names were "
                                  "skipped (rows of a step cut short by a crash, or damage)")


def _read_header(file_path, table):
    """(header bytes, column names) of a table file; the schema's header when it is absent."""
    try:
        with open(file_path, "rb") as handle:
            header = handle.readline()
    except FileNotFoundError:
        return fmt.header_bytes(table), list(TABLES[table])
    if not header.endswith(b"\n"):
        if not header:
            return b"", list(TABLES[table])
        raise RunFormatError(f"{file_path} has a torn header line; the run folder is damaged "
                             "beyond what gradscope can recover from")
    try:
        columns = header.decode("utf-8").rstrip("\n").split(",")
    except UnicodeDecodeError as error:
        raise RunFormatError(f"{file_path}: header is not UTF-8 text ({error})") from error
    missing = [c for c in TABLES[table] if c not in columns and c not in ADDED_COLUMNS.get(table, ())]
    if missing:
        raise RunFormatError(f"{file_path} lacks the column(s) {missing} that schema "
                             f"{fmt.SCHEMA_VERSION} needs; was it written by another tool?")
    return header, columns


def _size(file_path):
    try:
        return os.stat(file_path).st_size
    except FileNotFoundError:
        return 0


def _short(error):
    text = str(error) if not isinstance(error, json.JSONDecodeError) else error.msg
    return text if len(text) < 80 else text[:77] + "..."
