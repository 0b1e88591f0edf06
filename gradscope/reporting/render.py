"""report(source, out_dir): one run as a self-contained HTML page with PNG figures."""

import os
from pathlib import Path
from typing import Optional, Union

from gradscope.records import TableSource
from gradscope.reporting import html, sections
from gradscope.reporting.files import write_figures
from gradscope.reporting.html import esc
from gradscope.reporting.plots import SINGLE
from gradscope.reporting.sources import collect


def report(source: Union[TableSource, str, os.PathLike], out_dir: Union[str, os.PathLike],
           title: Optional[str] = None) -> Path:
    """Write ``out_dir/index.html`` and its figures (``out_dir/figures/*.png``) for one run.

    The page opens offline (no script, nothing fetched from the network); verdicts come first,
    then figures, tables and how to read them.

    Args:
        source: a live ``Scope``, a ``Run`` from ``gradscope.load``, or a run folder path.
        out_dir: the folder to write (created).
        title: the page heading (default: "gradscope report: <run name>").
    Returns:
        The path of ``index.html``.
    """
    run = collect(source)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figure_files, failures = write_figures(SINGLE, run, out)
    title = str(title) if title is not None else f"gradscope report: {run.name}"
    body = "\n".join([
        f"<header><h1>{esc(title)}</h1><p class=\"sub\">Run <b>{esc(run.name)}</b> · {esc(sections.run_facts(run))}</p>",
        '<nav><a href="#verdicts">Verdicts</a><a href="#figures">Figures</a>'
        '<a href="#tables">Tables</a><a href="#reading">How to read this page</a></nav></header>',
        '<section id="verdicts"><h2>Verdicts</h2>', sections.verdicts(run), "</section>",
        '<section id="figures"><h2>Figures</h2>',
        sections.figures(figure_files, failures, sections.missing_notes(run)), "</section>",
        '<section id="tables"><h2>Tables</h2><h3>Summary per layer and direction</h3>',
        sections.summary_table(run),
        "<h3>Per-timestep gradient norms (excerpt)</h3>", sections.timestep_excerpt(run), "</section>",
        '<section id="reading"><h2>How to read this page</h2>', sections.EXPLANATION, "</section>",
    ])
    return write_page(out / "index.html", html.page(title, body))


def write_page(path, text):
    """Write via a temporary file and rename: a reader never sees half a page."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
