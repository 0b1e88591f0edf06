"""Reports: PNG figures and a self-contained HTML page for one run (``report``) or several
side by side (``compare``). See docs/report.md."""

from gradscope.reporting.comparison import compare
from gradscope.reporting.render import report

__all__ = ["report", "compare"]
