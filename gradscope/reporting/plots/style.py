"""Shared look of every figure: sizes, layout, colours, safe labels, log axes.

Figures are built with ``matplotlib.figure.Figure`` directly (never pyplot), so nothing is
registered globally and nothing needs closing; global rcParams are never touched.
"""

import math

import numpy as np
from matplotlib.figure import Figure

from gradscope.printable import printable

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


# one line style and marker per layer, where colour already means the run
LAYER_LINES = ("-", "--", "-.", (0, (3, 1, 1, 1, 1, 1)))
LAYER_MARKERS = ("o", "s", "^", "D")


def series_color(index):
    return SERIES[index % len(SERIES)]


def text(value):
    """A label matplotlib draws verbatim: ``$`` would start mathtext (and an unbalanced one
    fails at save time), so names from the model or the user get it escaped; control
    characters (no glyph, or a line break in a one-line title) are shown as escapes."""
    return printable(value).replace("$", r"\$")


# fixed margins in inches: grid figures have short, known labels, so a fixed layout looks the
# same as matplotlib's constrained layout at half the drawing time
LEFT, RIGHT, BOTTOM, TOP = 0.95, 0.3, 0.6, 0.75
WGAP, HGAP = 1.0, 0.85


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


LEGEND_TOP = 0.47     # inches from the top edge to a figure legend: just under the title
LEGEND_GAP = 0.12     # inches between the legend and the panels
AXES_TITLE = 0.3      # inches a panel's own title needs above the panel


def renderer(fig):
    """The figure's Agg renderer, to measure text before saving (the figure gets its own Agg
    canvas if it has none: nothing global is touched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    return fig.canvas.get_renderer()


def figure_legend(fig, axes_list):
    """One legend for the whole figure, under the title, so a legend never covers data: the
    entries of every axes, each label once, in as many rows as the figure's width needs. The
    legend is measured and the figure grows by exactly its height (the panels keep their size),
    so there is no empty band between legend and panels."""
    axes_list = list(axes_list)
    entries = {}
    for ax in axes_list:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if not entries:
        return None
    w, h = fig.get_size_inches()
    widest = max(len(label) for label in entries) * 0.062 + 0.75  # inches at fontsize 8
    ncol = max(1, min(len(entries), int((w - 0.4) // widest)))
    legend = fig.legend(list(entries.values()), list(entries.keys()), loc="upper center",
                        bbox_to_anchor=(0.5, 1 - LEGEND_TOP / h), ncol=ncol, frameon=False, fontsize=8)
    height = legend.get_window_extent(renderer(fig)).height / fig.dpi
    titled = any(ax.get_visible() and ax.axison and ax.get_title() for ax in axes_list)
    top_now, bottom = (1 - fig.subplotpars.top) * h, fig.subplotpars.bottom * h
    top = max(top_now, LEGEND_TOP + height + LEGEND_GAP + (AXES_TITLE if titled else 0.0))
    new_h = h - top_now + top
    fig.set_size_inches(w, new_h)
    fig.subplots_adjust(top=1 - top / new_h, bottom=bottom / new_h)
    legend.set_bbox_to_anchor((0.5, 1 - LEGEND_TOP / new_h), transform=fig.transFigure)
    return legend


MIN_LOG_SPAN = 2.0  # a log axis spans at least this factor: a flat curve must look flat
# tick mantissas per decade, coarse to fine: the coarsest giving 3+ ticks in view is used
TICK_MANTISSAS = ((1.0,), (1.0, 2.0, 5.0), (1.0, 2.0, 3.0, 5.0), (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0),
                  (1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0))


def nice_log_ticks(low, high, cover=None):
    """Plain-number ticks for a log axis from ``low`` to ``high`` (both > 0): the coarsest
    mantissas that put at least three in view, plus one more at each end where needed so that
    the ticks reach ``cover`` (the data's (min, max); default: ``low``, ``high``) on both sides."""
    cover_low, cover_high = cover or (low, high)
    lo_exp = math.floor(math.log10(min(low, cover_low))) - 1
    hi_exp = math.ceil(math.log10(max(high, cover_high))) + 1
    for mantissas in TICK_MANTISSAS:
        candidates = sorted(m * 10.0 ** k for k in range(lo_exp, hi_exp + 1) for m in mantissas)
        inside = [c for c in candidates if low <= c <= high]
        if len(inside) < 3 and mantissas is not TICK_MANTISSAS[-1]:
            continue
        # an end tick added to reach the data may come from 1-2-5 as well: decades alone would
        # stretch an axis that stops at 1.04 up to 10
        ends = sorted(set(candidates) | {m * 10.0 ** k for k in range(lo_exp, hi_exp + 1) for m in (1, 2, 5)})
        if not inside or inside[0] > cover_low * (1 + 1e-9):
            inside.insert(0, max(c for c in ends if c <= cover_low * (1 + 1e-9)))
        if inside[-1] < cover_high * (1 - 1e-9):
            inside.append(min(c for c in ends if c >= cover_high * (1 - 1e-9)))
        return inside
    raise AssertionError("unreachable: the finest mantissas always return")


def log_span(low, high, min_factor=MIN_LOG_SPAN):
    """(low, high) widened about its geometric centre to span at least ``min_factor``."""
    if high / low >= min_factor:
        return low, high
    centre, half = math.sqrt(low * high), math.sqrt(min_factor)
    return centre / half, centre * half


def plain_log_labels(ax, min_factor=MIN_LOG_SPAN):
    """Make a log y axis readable at any span: at least ``min_factor`` tall (an orthogonal
    matrix's singular values, all 1 ± 1e-7, must not fill the axis and look like a decay),
    and, below three decades, plain-number ticks (0.2, 0.3, 0.5, 1) with one at or beyond
    each end of what is drawn. Wider axes keep matplotlib's decade ticks."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    low, high = ax.get_ylim()
    if not (low > 0 and high > low and math.isfinite(high)):
        return
    low, high = log_span(low, high, min_factor)
    if high / low > 1e3:
        ax.set_ylim(low, high)
        return
    data_low, data_high = ax.dataLim.intervaly  # what is drawn, before the axis margins
    cover = (data_low, data_high) if 0 < data_low <= data_high < math.inf else None
    ticks = nice_log_ticks(low, high, cover)
    ax.set_ylim(min(low, ticks[0]), max(high, ticks[-1]))
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    ax.yaxis.set_minor_locator(NullLocator())


def ratio_ticks(ax):
    """Ticks for a log axis of factors near 1 (gains): plain numbers covering the data."""
    plain_log_labels(ax)


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


UNDERFLOW_LABEL = "exactly 0 (below the float range)"


def zero_positions(x, values):
    """The x where a curve that is positive elsewhere is exactly 0: on a log axis the line just
    stops there (float32 underflows below ~1e-45), so they are marked instead."""
    x, values = np.asarray(x), np.asarray(values, dtype=float)
    if not len(positive_finite(values)):
        return x[:0]
    return x[values == 0]


def span_words(x):
    """``t ≤ 26``, ``t ≥ 80``, ``t 3–9`` or ``5 t`` for the marked positions."""
    x = np.sort(np.asarray(x))
    if len(x) == 1:
        return f"t = {x[0]}"
    if len(x) == x[-1] - x[0] + 1:
        return f"t {x[0]}–{x[-1]}"
    return f"{len(x)} t"


def mark_zeros(ax, x, values, color):
    """Triangles along the bottom edge at each x where the curve is exactly 0 (drawn outside the
    data limits, so they do not stretch the log axis). Returns the marked x."""
    from matplotlib.transforms import blended_transform_factory

    zeros = zero_positions(x, values)
    if len(zeros):
        ax.plot(zeros, np.full(len(zeros), 0.015), ls="none", marker="v", ms=5, color=color,
                transform=blended_transform_factory(ax.transData, ax.transAxes), clip_on=False,
                zorder=5)
    return zeros


def zero_note(ax, words):
    """The words for ``mark_zeros``' triangles, bottom left above them (``words``: one per curve)."""
    if words:
        ax.text(0.01, 0.06, "▼ " + UNDERFLOW_LABEL + ": " + "; ".join(words), transform=ax.transAxes,
                ha="left", va="bottom", fontsize=7, color="#444444",
                bbox=dict(facecolor="white", alpha=0.8, edgecolor="none", pad=1.5))


def ratio_axes(ax, line_label, xlabel, ylabel, ticks):
    """A log y axis of a ratio-like quantity with a dashed reference line at 1 (no change),
    labels and a light grid; ``ticks(ax)`` labels the y axis (``ratio_ticks``,
    ``plain_log_labels``)."""
    ax.axhline(1.0, color=ZERO_LINE, ls="--", lw=1, label=line_label)
    log_y(ax)
    ticks(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
