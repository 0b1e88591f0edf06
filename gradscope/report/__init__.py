"""Reports: PNG figures and a self-contained HTML page for one run (``report``) or several
side by side (``compare``). See docs/report.md."""

import sys
import types

from gradscope.report.comparison import compare
from gradscope.report.render import report

__all__ = ["report", "compare"]


class _CallableModule(types.ModuleType):
    """This package shares its name with the function ``gradscope.report``. Python sets the
    attribute ``gradscope.report`` to this package whenever it is imported first (e.g. by
    ``from gradscope.report import compare``), hiding the function; calling the package
    calls the function, so ``gradscope.report(source, out_dir)`` works either way.
    (Setting a module's ``__class__`` is the documented way to customise a module.)"""

    def __call__(self, source, out_dir, title=None):
        return report(source, out_dir, title=title)


sys.modules[__name__].__class__ = _CallableModule
