"""The per-step gain over training (``Diagnosis.per_step()``): did the gradient start healthy
and then fade or blow up? A dotted line marks the gain a part needs to reach back its needed
horizon; below it, that step was vanishing."""

import math

import numpy as np

from gradscope.reporting.plots import style
from gradscope.reporting.plots.base import Plot, part_label, run_part_label
from gradscope.reporting.sources import evenly_spaced

MAX_POINTS = 2000  # steps per line; a line cannot show more
MAX_LINES = 12


def per_step(run):
    frame = getattr(run.diagnosis, "per_step", None)
    rows = frame() if callable(frame) else None
    if rows is None or rows.empty or "gain" not in rows or rows["step"].nunique() < 2:
        return None
    return rows


def needed_gain(run, module, layer, direction):
    """ratio ** (1 / needed horizon): the smallest gain whose horizon reaches far enough."""
    rules = getattr(run.diagnosis, "rules", None)
    ratio = getattr(rules, "horizon_ratio", 1e-3)
    summary = run.summary
    if summary.empty or "required_horizon" not in summary:
        return math.nan
    row = summary[(summary["module"] == module) & (summary["layer"] == layer) & (summary["direction"] == direction)]
    needed = float(row["required_horizon"].iloc[0]) if len(row) else math.nan
    return ratio ** (1.0 / needed) if needed > 0 else math.nan


def lines(run, with_run_name):
    rows = per_step(run)
    if rows is None:
        return []
    out = []
    for (module, layer, direction), part in rows.groupby(["module", "layer", "direction"], sort=False):
        part = part.sort_values("step")
        keep = evenly_spaced(np.arange(len(part)), MAX_POINTS)
        part = part.iloc[keep]
        label = (run_part_label(run, module, int(layer), direction) if with_run_name
                 else part_label(module, int(layer), direction, run.meta))
        out.append((label, part["step"].to_numpy(), part["gain"].to_numpy(dtype=float),
                    needed_gain(run, module, int(layer), direction), (int(layer), direction)))
    return out


def line_look(layer, direction, points):
    """Line style and marker by layer, hollow markers for the reverse direction: colours
    belong to runs (or parts), so the layers of one run must differ in something else."""
    marker = style.LAYER_MARKERS[layer % len(style.LAYER_MARKERS)]
    return dict(ls=style.LAYER_LINES[layer % len(style.LAYER_LINES)], marker=marker,
                markevery=max(1, points // 25), ms=4 if marker != "o" else 3.5,
                mfc="white" if direction == "reverse" else None)


def draw(entries, colors, title):
    fig, axes = style.new_figure(1, 1, width=8.0, height=3.8)
    ax = axes[0, 0]
    needed_drawn = set()
    for (label, steps, gains, needed, (layer, direction)), color in zip(entries[:MAX_LINES], colors):
        ax.plot(steps, np.where(gains > 0, gains, np.nan), color=color, lw=1.6,
                label=style.text(label), **line_look(layer, direction, len(steps)))
        if np.isfinite(needed) and round(needed, 4) not in needed_drawn and len(needed_drawn) < 3:
            needed_drawn.add(round(needed, 4))
            ax.axhline(needed, color="#555555", ls=":", lw=1.4,
                       label=f"needed gain {needed:.3g} (horizon = needed horizon)")
    style.ratio_axes(ax, "gain 1 (no change)", "training step", "per-step gain (× per step back)",
                     style.ratio_ticks)
    style.figure_legend(fig, [ax])
    style.title(fig, title)
    return fig


def figures(run):
    entries = lines(run, with_run_name=False)
    if not entries:
        return
    colors = [style.series_color(i) for i in range(len(entries))]
    fig = draw(entries, colors, style.text(f"{run.name}: per-step gain over training"))
    yield Plot("gain-history", "run", "Gain over training",
               "The per-step gain at each recorded training step, per layer and direction. Above the "
               "dotted line the gradient reaches back as far as needed; below it, that step was "
               "vanishing. Far above the dashed line at 1, it grows at each step back (exploding).",
               fig)


def compare_figures(runs):
    entries, colors = [], []
    for i, run in enumerate(runs):
        for entry in lines(run, with_run_name=True):
            entries.append(entry)
            colors.append(style.series_color(i))
    if not entries:
        return
    fig = draw(entries, colors, "Per-step gain over training, runs overlaid")
    yield Plot("gain-history", "compare", "Gain over training, runs overlaid",
               "The per-step gain of each run's layers at each recorded training step (one colour per "
               "run; the line style and marker tell the layers apart, hollow markers the reverse direction); "
               "dotted: the gain each needs to reach back its needed horizon.", fig)
