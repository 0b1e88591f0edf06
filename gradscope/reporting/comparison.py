"""compare({name: source}, out_dir): several runs on one page, side by side and overlaid."""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Optional, Union

import pandas as pd

from gradscope.records import TableSource
from gradscope.reporting import html, sections
from gradscope.reporting.files import write_figures
from gradscope.reporting.html import esc
from gradscope.reporting.plots import COMPARE
from gradscope.reporting.render import write_page
from gradscope.reporting.sources import collect


def compare(runs: Mapping[str, Union[TableSource, str, os.PathLike]], out_dir: Union[str, os.PathLike],
            title: Optional[str] = None) -> Path:
    """Write one report with the runs side by side.

    Figures overlay the runs on the same axes (one colour per run, in the order given); the
    summary table lists every run's layers.

    Args:
        runs: display name -> source (``Scope``, ``Run`` or run folder path), e.g.
            ``{"RNN": ..., "GRU": ..., "LSTM": ...}``.
        out_dir: the folder to write (created).
        title: the page heading.
    Returns:
        The path of ``out_dir/index.html``.
    """
    if not isinstance(runs, Mapping) or not runs:
        raise TypeError("compare needs a non-empty mapping of name -> source, e.g. "
                        "{'RNN': scope_or_run_or_folder, 'GRU': ...}")
    data = [collect(source, name=str(name)) for name, source in runs.items()]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figure_files, failures = write_figures(COMPARE, data, out)
    names = ", ".join(run.name for run in data)
    title = str(title) if title is not None else f"gradscope comparison: {names}"
    body = "\n".join([
        f"<header><h1>{esc(title)}</h1><p class=\"sub\">{len(data)} runs: {esc(names)}</p>",
        '<nav><a href="#verdicts">Verdicts</a><a href="#figures">Figures</a>'
        '<a href="#tables">Tables</a><a href="#reading">How to read this page</a></nav></header>',
        '<section id="verdicts"><h2>Verdicts</h2><div class="runs">',
        *(f"<div><h3>{esc(run.name)}</h3><p class=\"muted\">{esc(sections.run_facts(run))}</p>"
          f"{sections.verdicts(run)}</div>" for run in data),
        "</div></section>",
        '<section id="figures"><h2>Figures</h2>', sections.figures(figure_files, failures), "</section>",
        '<section id="tables"><h2>Tables</h2><h3>Summary per run, layer and direction</h3>',
        summary_across(data), "</section>",
        '<section id="reading"><h2>How to read this page</h2>', sections.EXPLANATION, "</section>",
    ])
    return write_page(out / "index.html", html.page(title, body))


def summary_across(data):
    frames = []
    for run in data:
        summary = sections.summary_frame(run)
        if not summary.empty:
            summary.insert(0, "run", run.name)  # first: SUMMARY_FIRST puts it there too
            frames.append(summary)
    if not frames:
        return '<p class="muted">No summary: nothing was measured.</p>'
    return html.table(pd.concat(frames, ignore_index=True), labels=sections.SUMMARY_LABELS)
