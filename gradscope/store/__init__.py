"""Run folders: stream a watched run to disk step by step, load it back as tables.

Format and guarantees: docs/run-folder.md and gradscope/store/format.py.
"""

from gradscope.store.errors import RunFormatError
from gradscope.store.reader import Run, load
from gradscope.store.sources import open_source
from gradscope.store.writer import RunWriter

__all__ = ["load", "Run", "RunWriter", "RunFormatError", "open_source"]
