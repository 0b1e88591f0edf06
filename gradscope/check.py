"""Stand-in until ``gradscope/__init__.py`` maps the public ``check`` to ``gradscope.gate``.

A submodule named ``check`` shadows the function ``gradscope.check`` once it is imported
directly, so the gate lives in gradscope/gate.py; import from there, never from here.
"""

from gradscope.gate import NothingRecordedError, check, measure  # noqa: F401
