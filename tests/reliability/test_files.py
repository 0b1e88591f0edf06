"""Files and security (issue 17.6): damaged run folders, files that must never be loaded,
followed or run, and hostile names in every output.

- truncated, corrupted, emptied, missing files and changed numbers in the commit log: ``load``
  gives whole steps or raises ``RunFormatError``;
- wrong-version and not-a-run folders: ``RunFormatError`` that says what to do;
- a pickle (as a run file or beside them), code files, a symlink pointing out of the folder:
  never unpickled, never run, never followed (by ``load``, ``analyze``, ``report`` or an
  appending writer);
- names holding HTML, path separators, control characters and mathtext, used as the model
  name, a module name, a ``track`` label and a ``weights`` label: they round-trip through the
  run folder and JSON, and are shown escaped in the HTML, the PNG titles and JUnit.
"""

import json
import pickle
import re
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import gradscope
from gradscope.store import RunFormatError, RunWriter, load
from gradscope.store import format as fmt
from tests.reliability.run_folders import (
    STEPS, assert_whole_steps_or_format_error, damaged_folder, write_pristine)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return write_pristine(tmp_path_factory.mktemp("pristine") / "run")


# -- truncated, corrupted, empty and missing files ---------------------------------------------

def _garbage(data):
    """Same length, every byte changed (a sector overwritten)."""
    return bytes((b + 97) % 256 for b in data)


FILE_DAMAGES = {
    "empty": lambda data: b"",
    "truncated_to_half": lambda data: data[:len(data) // 2],
    "truncated_by_one_byte": lambda data: data[:-1],
    "overwritten_with_garbage": _garbage,
    "middle_third_zeroed": lambda data: data[:len(data) // 3] + bytes(len(data) // 3) + data[2 * (len(data) // 3):],
    "doubled": lambda data: data + data,
}


@pytest.mark.parametrize("damage", sorted(FILE_DAMAGES))
@pytest.mark.parametrize("name", fmt.ALL_FILES)
def test_damaged_file_loads_whole_steps_or_raises_format_error(tmp_path, pristine, name, damage):
    assert_whole_steps_or_format_error(damaged_folder(tmp_path, pristine, name, FILE_DAMAGES[damage]))


@pytest.mark.parametrize("name", fmt.ALL_FILES)
def test_missing_file_loads_whole_steps_or_raises_format_error(tmp_path, pristine, name):
    path = damaged_folder(tmp_path, pristine, None, None)
    (path / name).unlink()
    assert_whole_steps_or_format_error(path)


def _commit_fields():
    """Every number of a commit line, as a path into its JSON record."""
    fields = [("step",)]
    fields += [("rows", table) for table in ("timesteps", "spectra", "jacobians", "lyapunov", "gates", "values")]
    fields += [("files", name, i) for name in fmt.DATA_FILES for i in range(3)]
    return fields


def _changed(line, field, delta):
    record = json.loads(line)
    holder = record
    for key in field[:-1]:
        holder = holder[key]
    holder[field[-1]] += delta
    return (json.dumps(record, ensure_ascii=True)).encode("ascii")


@pytest.mark.parametrize("delta", [1, -1])
@pytest.mark.parametrize("line", [0, len(STEPS) - 1], ids=["first_commit", "last_commit"])
@pytest.mark.parametrize("field", _commit_fields(), ids=lambda field: ".".join(map(str, field)))
def test_changed_number_in_commit_log_loads_whole_steps_or_raises_format_error(tmp_path, pristine, field, line,
                                                                                delta):
    """A damaged digit in steps.jsonl (the one file without a checksum of its rows) must not
    make a step load under another number, or make row_count disagree with the rows."""
    def damage(data):
        lines = data.split(b"\n")
        lines[line] = _changed(lines[line], field, delta)
        return b"\n".join(lines)

    assert_whole_steps_or_format_error(damaged_folder(tmp_path, pristine, fmt.COMMIT_FILE, damage))


@pytest.mark.parametrize("lines_without", ["every_line", "last_line"])
def test_commit_lines_without_their_own_checksum_still_load(tmp_path, pristine, lines_without):
    """Runs written before commit lines carried "crc" load as before, silently."""
    def strip(data):
        lines = data.decode("ascii").splitlines()
        chosen = range(len(lines)) if lines_without == "every_line" else [len(lines) - 1]
        for i in chosen:
            record = json.loads(lines[i])
            del record["crc"]
            lines[i] = json.dumps(record)
        return ("\n".join(lines) + "\n").encode("ascii")

    path = damaged_folder(tmp_path, pristine, fmt.COMMIT_FILE, strip)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load(path).steps() == list(STEPS)
    assert_whole_steps_or_format_error(path)
