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


def refuse_links(folder, names, doing):
    """Raise RunFormatError if one of ``names`` in ``folder`` is a symbolic link.

    Args:
        folder: the run folder (a Path).
        names: the file names the run reads or writes.
        doing: what was about to happen, for the message ("load", "append to").

    A run folder can come from anyone; a link in it could point at any file (a secret, a
    device, another run) that reading would show or appending would change. gradscope does
    not follow it: it asks for a copy instead.
    """
    from gradscope.store.errors import RunFormatError

    links = [name for name in names if os.path.islink(folder / name)]
    if links:
        shown = ", ".join(f"{name} -> {os.readlink(folder / name)}" for name in links)
        raise RunFormatError(
            f"cannot {doing} {folder}: it holds symbolic links where run files belong ({shown}); "
            "gradscope does not follow links in a run folder, since they can point anywhere. "
            "If you trust the targets, replace each link by a copy of its file.")
