"""The one door every reader of tables goes through: a Scope or Run as it is, a run folder
loaded (``analyze``, ``report``, ``compare`` and ``metrics`` take any of them)."""

from __future__ import annotations

import os
from pathlib import Path

from gradscope.records import TableSource
from gradscope.store.reader import load


def open_source(source, caller: str = "gradscope") -> TableSource:
    """What ``analyze``, ``report``, ``compare`` and ``metrics`` read: a Scope or Run as it is,
    a run folder (str or Path) loaded with ``gradscope.load``.

    Args:
        source: a ``Scope``, a ``Run``, any other ``TableSource``, or the path of a run folder.
        caller: the function named in the error message.
    Returns:
        The TableSource.
    Raises:
        FileNotFoundError: a path that does not exist.
        TypeError: anything else.
    """
    if isinstance(source, TableSource):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():  # a file goes on to load(), which says it is not a folder
            raise FileNotFoundError(
                f"{caller}: run folder {str(path)!r} does not exist; pass the folder given to "
                "gradscope.watch(..., run_dir=...), a loaded gradscope.load(...) run, or a Scope")
        return load(source)
    raise TypeError(f"{caller} needs a gradscope Scope, a Run from gradscope.load(run_dir), or the path of "
                    f"a run folder; got {type(source).__name__} (a source of your own: subclass "
                    "gradscope.records.TableSource, which gives timesteps(), spectra() and the other tables "
                    "from one table() method)")
