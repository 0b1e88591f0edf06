"""The demo's own figure: training loss against the baseline, and the horizon over training.

Side by side they show cause and effect: a model's loss leaves the baseline when its gradient
horizon grows past the distance the task needs.
"""

import math

import numpy as np

# the run colours of the comparison report's figures, in the same order (first run blue, ...)
SERIES = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def draw_task_figure(path, curves, histories, task, smooth=25):
    """Write ``path`` (PNG). ``curves``: {model: training losses per step};
    ``histories``: {model: [{"step", "horizon", ...}, ...]}; ``task``: Task.describe()."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 3.6), dpi=90)
    FigureCanvasAgg(figure)
    loss_axes, horizon_axes = figure.subplots(1, 2)
    for index, (name, losses) in enumerate(curves.items()):
        colour = SERIES[index % len(SERIES)]
        smoothed = _moving_mean(np.asarray(losses, dtype=float), smooth)
        loss_axes.plot(np.arange(len(smoothed)) + smooth // 2, smoothed, color=colour, label=name, lw=1.4)
        history = histories.get(name, [])
        steps = [h["step"] for h in history]
        horizons = [_capped(h["horizon"]) for h in history]
        horizon_axes.plot(steps, horizons, "o-", color=colour, ms=3, lw=1.4)
    loss_axes.axhline(task["baseline"], color="black", ls="--", lw=1, label="trivial baseline")
    loss_axes.set_yscale("log")
    loss_axes.set_xlabel("training step")
    loss_axes.set_ylabel(f"training {task['loss_name']} (mean of {smooth})")
    loss_axes.set_title("task loss against the trivial baseline", fontsize=10)
    loss_axes.legend(fontsize=8, loc="center right")
    horizon_axes.axhline(task["seq_len"], color="black", ls="--", lw=1)
    horizon_axes.annotate(f"sequence length T = {task['seq_len']}", (1, task["seq_len"]),
                          xycoords=("axes fraction", "data"), ha="right", va="bottom", fontsize=8)
    horizon_axes.set_yscale("log")
    horizon_axes.set_xlabel("training step (recorded steps)")
    horizon_axes.set_ylabel("horizon (time steps back)")
    horizon_axes.set_title("gradient horizon over training", fontsize=10)
    for axes in (loss_axes, horizon_axes):
        axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    return path


def _moving_mean(values, window):
    window = max(1, min(window, len(values)))
    kernel = np.ones(window) / window
    return np.convolve(values, kernel, mode="valid")


def _capped(horizon, cap=1e5):
    # an infinite horizon (gain >= 1) is drawn at the top of the axis rather than dropped
    if horizon is None or (isinstance(horizon, float) and math.isnan(horizon)):
        return math.nan
    return min(float(horizon), cap)
