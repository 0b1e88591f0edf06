"""The CI gate: watch a model while a user's step runs, apply the Rules, and say healthy or not.

- ``health_check``: the gate itself (``gradscope.check``, ``watch_steps``).
- ``targets``: loading ``package.module:function`` or ``path.py:function`` targets.
- ``config``: Rules from flags and ``[tool.gradscope.check]`` in pyproject.toml.
- ``output``: the terminal report, Markdown summary and JUnit XML.
- ``assertions``: ``assert_gradients_healthy`` for tests (public as ``gradscope.testing``).
- ``pytest_plugin``: the ``gradient_health`` fixture (entry point ``pytest11: gradscope``).
"""

from gradscope.gate.health_check import NothingRecordedError, check, watch_steps

__all__ = ["NothingRecordedError", "check", "watch_steps"]
