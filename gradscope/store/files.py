"""Durable file operations: whole writes, fsync, atomic replace (POSIX semantics; best effort
on systems that cannot fsync a directory)."""

import json
import os
import stat


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


def refuse_odd_files(folder, names, doing):
    """Raise RunFormatError if one of ``names`` in ``folder`` is there but is not a regular
    file: a symbolic link, a folder, a FIFO, a device or a socket.

    Args:
        folder: the run folder (a Path).
        names: the file names the run reads or writes.
        doing: what was about to happen, for the message ("load", "append to").

    A run folder can come from anyone. A link in it could point at any file (a secret, a
    device, another run) that reading would show or appending would change; a FIFO would
    block a reader forever. gradscope neither follows nor opens them.
    """
    from gradscope.store.errors import RunFormatError

    links, others = [], []
    for name in names:
        try:
            mode = os.lstat(folder / name).st_mode
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(mode):
            links.append(f"{name} -> {os.readlink(folder / name)}")
        elif not stat.S_ISREG(mode):
            others.append(name)
    if links:
        raise RunFormatError(
            f"cannot {doing} {folder}: it holds symbolic links where run files belong "
            f"({', '.join(links)}); gradscope does not follow links in a run folder, since they "
            "can point anywhere. If you trust the targets, replace each link by a copy of its file.")
    if others:
        raise RunFormatError(
            f"cannot {doing} {folder}: {', '.join(others)} should be plain files but are not "
            "(a folder, FIFO, device or socket); the folder is damaged or not a gradscope run.")
