"""Where figures go on disk: safe file names (module names can hold anything) and PNG writing."""

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

FIGURE_DIR = "figures"
_OURS = re.compile(r"^\d{2,3}-[a-z0-9_-]+\.png$")
_UNSAFE = re.compile(r"[^a-z0-9_-]+")


@dataclass
class FigureFile:
    """A written figure: ``href`` is relative to the page, ``title``/``caption`` unescaped."""

    href: str
    title: str
    caption: str


def figure_name(index, kind, subject):
    """``03-heatmap-encoder-rnn.png``: lowercase ASCII letters, digits, ``_`` and ``-`` only,
    bounded length; the running index keeps names unique when two subjects slug alike."""
    slug = re.sub(r"-{2,}", "-", _UNSAFE.sub("-", f"{kind}-{subject}".lower()))
    slug = slug.strip("-_")[:48].strip("-_") or "figure"
    return f"{index:02d}-{slug}.png"


def clear_old_figures(folder):
    """Remove PNGs an earlier report wrote here (only names of our own pattern)."""
    if folder.is_dir():
        for path in folder.iterdir():
            if path.is_file() and _OURS.match(path.name):
                path.unlink()


def write_figures(producers, data, out_dir):
    """Run each producer on ``data``, save every Plot as PNG under ``out_dir/figures`` one at a
    time (a figure is dropped as soon as it is saved, bounding memory), and return FigureFiles.

    A producer that fails does not sink the report: it is skipped with a GradscopeWarning and
    listed as an error entry, so the rest of the page still renders."""
    from gradscope.errors import GradscopeWarning

    folder = Path(out_dir) / FIGURE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    clear_old_figures(folder)
    written, failures = [], []
    for producer in producers:
        try:
            for plot in producer(data):
                name = figure_name(len(written) + 1, plot.kind, plot.subject)
                plot.figure.savefig(folder / name, format="png")
                plot.figure.clear()
                written.append(FigureFile(f"{FIGURE_DIR}/{name}", plot.title, plot.caption))
        except Exception as error:  # noqa: BLE001 - one broken figure must not hide the verdicts
            where = f"{producer.__module__}.{producer.__name__}"
            warnings.warn(f"gradscope report: figure {where} failed and was left out: {error!r}",
                          GradscopeWarning, stacklevel=2)
            failures.append(f"{where}: {error!r}")
    return written, failures
