"""Durable file operations: whole writes, fsync, atomic replace (POSIX semantics; best effort
on systems that cannot fsync a directory)."""

import json
import os


def write_all(fd, data):
    """Write every byte of ``data`` to ``fd`` (os.write may write only part)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def sync_dir(path):
    """Make a file's creation or rename in ``path`` durable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened; renames are durable there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json_atomically(path, obj):
    """Replace ``path`` by ``obj`` as JSON: a reader sees the old file or the new, never half."""
    text = json.dumps(obj, indent=2, allow_nan=False) + "\n"
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    sync_dir(path.parent)


def open_append(path):
    """A raw append-only descriptor for ``path`` (created if missing)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_BINARY", 0)
    return os.open(path, flags, 0o644)
