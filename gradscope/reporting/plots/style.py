"""Shared look of every figure: sizes, layout, colours, safe labels, log axes.

Figures are built with ``matplotlib.figure.Figure`` directly (never pyplot), so nothing is
registered globally and nothing needs closing; global rcParams are never touched.
"""

import math

import numpy as np
from matplotlib.figure import Figure

DPI = 100
PANEL_WIDTH = 5.2   # inches per subplot column
PANEL_HEIGHT = 3.0  # inches per subplot row

# one colour per quantity, the same in every figure
TOTAL = "#222222"
CARRIED = "#1f77b4"
DIRECT = "#ff7f0e"
ZERO_LINE = "#888888"
# one colour per run in comparisons, and per gate in spectra
SERIES = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
          "#17becf", "#7f7f7f", "#bcbd22")


def series_color(index):
    return SERIES[index % len(SERIES)]


def text(value):
    """A label matplotlib draws verbatim: ``$`` would start mathtext (and an unbalanced one
    fails at save time), so names from the model or the user get it escaped."""
    return str(value).replace("$", r"\$")


# fixed margins in inches: grid figures have short, known labels, so a fixed layout looks the
# same as matplotlib's constrained layout at half the drawing time
LEFT, RIGHT, BOTTOM, TOP = 0.95, 0.3, 0.6, 0.75
WGAP, HGAP = 1.0, 0.85
LEGEND_ROW_HEIGHT = 0.22  # inches per row of a figure-wide legend (fontsize 8)


def new_figure(rows=1, cols=1, width=None, height=None, right=RIGHT, flexible=False, **subplot_kw):
    """A Figure and its axes as a 2-D array (rows x cols). Panels get ``width`` x ``height``
    inches each (default PANEL_WIDTH x PANEL_HEIGHT) inside fixed margins; ``flexible``
    uses constrained layout instead, for figures with long tick labels."""
    pw, ph = (width or PANEL_WIDTH), (height or PANEL_HEIGHT)
    if flexible:
        fig = Figure(figsize=(pw * cols, ph * rows), dpi=DPI, layout="constrained")
        return fig, fig.subplots(rows, cols, squeeze=False, **subplot_kw)
    fw = LEFT + right + cols * pw + (cols - 1) * WGAP
    fh = BOTTOM + TOP + rows * ph + (rows - 1) * HGAP
    fig = Figure(figsize=(fw, fh), dpi=DPI)
    axes = fig.subplots(rows, cols, squeeze=False, **subplot_kw)
    fig.subplots_adjust(left=LEFT / fw, right=1 - right / fw, bottom=BOTTOM / fh, top=1 - TOP / fh,
                        wspace=WGAP / pw, hspace=HGAP / ph)
    return fig, axes


def title(fig, words):
    """The figure title, a fixed distance from the top edge (``words`` already ``text()``-safe)."""
    h = fig.get_size_inches()[1]
    fig.suptitle(words, fontsize=11, y=1 - 0.12 / h, va="top")


def figure_legend(fig, axes_list):
    """One legend for the whole figure, under the title, so a legend never covers data: the
    entries of every axes, each label once, in as many rows as the figure's width needs (the
    figure grows taller by those rows; the panels keep their size)."""
    entries = {}
    for ax in axes_list:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if not entries:
        return None
    w, h = fig.get_size_inches()
    widest = max(len(label) for label in entries) * 0.062 + 0.75  # inches at fontsize 8
    ncol = max(1, min(len(entries), int((w - 0.4) // widest)))
    rows = -(-len(entries) // ncol)
    top_now, bottom = (1 - fig.subplotpars.top) * h, fig.subplotpars.bottom * h
    top = TOP + LEGEND_ROW_HEIGHT * rows + 0.1
    new_h = h - top_now + top
    fig.set_size_inches(w, new_h)
    fig.subplots_adjust(top=1 - top / new_h, bottom=bottom / new_h)
    return fig.legend(list(entries.values()), list(entries.keys()), loc="upper center",
                      bbox_to_anchor=(0.5, 1 - (TOP - 0.28) / new_h), ncol=ncol, frameon=False, fontsize=8)


def plain_log_labels(ax):
    """On a log axis spanning less than a decade, evenly spaced ticks labelled as plain
    numbers (1.2, 1.4) instead of sparse 1.2×10^0-style labels that are hard to read."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator

    low, high = ax.get_ylim()
    if low > 0 and high / low < 8:
        ax.yaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        ax.yaxis.set_minor_locator(NullLocator())


def ratio_ticks(ax):
    """Ticks 0.1, 0.2, 0.5, 1, 2, 5 ... as plain numbers, for a log axis of factors near 1."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    low, high = ax.get_ylim()
    if low > 0 and high / low < 8:
        plain_log_labels(ax)
        return
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_locator(NullLocator())


def colorbar(fig, mappable, label):
    """A colour bar in the right margin (make the figure with ``right=1.3``)."""
    w = fig.get_size_inches()[0]
    bottom, top = fig.subplotpars.bottom, fig.subplotpars.top
    cax = fig.add_axes([1 - 1.05 / w, bottom, 0.18 / w, top - bottom])
    return fig.colorbar(mappable, cax=cax, label=label, extend="min")


def log_y(ax):
    # mask, not clip: a zero norm must leave a gap, not a spike to the bottom of the axis
    ax.set_yscale("log", nonpositive="mask")


def positive_finite(values):
    values = np.asarray(values, dtype=float)
    return values[np.isfinite(values) & (values > 0)]


def marker_for(values, few=30):
    """Draw points too when a curve has so few plottable values that a line would hide them."""
    return "o" if len(positive_finite(values)) <= few else None


def fmt(value, digits=3):
    """A short human number: 3 significant digits, inf as ∞, NaN as n/a."""
    if value is None:
        return "n/a"
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:.{digits}g}"


def hide_unused(axes, used):
    """Switch off the axes of a grid that got no data (``used``: set of (row, col))."""
    for r in range(axes.shape[0]):
        for c in range(axes.shape[1]):
            if (r, c) not in used:
                axes[r, c].set_axis_off()


def empty_note(ax, message):
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes,
            color=ZERO_LINE, fontsize=9, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
