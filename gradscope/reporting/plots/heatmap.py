"""log10 of the total gradient norm over training step x time step: does the gradient reach
back further, or less far, as training goes on?"""

import numpy as np

from gradscope.reporting.plots import style
from gradscope.reporting.plots.base import MAX_MODULES, Plot, module_label, panel_title, panels, run_part_label, select
from gradscope.reporting.sources import evenly_spaced

MAX_T = 400  # columns a figure can show; longer sequences are sampled evenly
MAX_DECADES = 20  # colour scale width; anything further below the largest value shows as zero


def log_matrix(rows):
    """(steps, ts, matrix) of log10 grad_norm, mean over calls; non-finite cells NaN, zeros -inf."""
    table = rows.groupby(["step", "t"], sort=True)["grad_norm"].mean().unstack("t")
    ts = evenly_spaced(table.columns.to_numpy(), MAX_T)
    table = table[ts]
    values = table.to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log10(values)
    logs[~np.isfinite(values)] = np.nan
    return table.index.to_numpy(), np.asarray(ts), logs


def color_range(matrices, decades=MAX_DECADES):
    """The full range of the finite values (so nothing but zeros falls off the scale), at most
    ``decades`` wide: far smaller values share the below-scale colour with zeros."""
    finite = np.concatenate([m[np.isfinite(m)].ravel() for m in matrices] or [np.zeros(0)])
    if finite.size == 0:
        return -1.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    low = max(low, high - decades)
    if high - low < 1e-6:
        low, high = low - 0.5, high + 0.5
    return low, high


def edges(centres):
    """Cell edges around sorted centres, so irregularly spaced steps keep their place."""
    centres = np.asarray(centres, dtype=float)
    if len(centres) == 1:
        return np.array([centres[0] - 0.5, centres[0] + 0.5])
    mid = (centres[1:] + centres[:-1]) / 2
    return np.concatenate([[centres[0] - (mid[0] - centres[0])], mid,
                           [centres[-1] + (centres[-1] - mid[-1])]])


def _cmap():
    from matplotlib import colormaps

    # NaN / Inf: magenta, outside the colour scale; zero (log10 = -inf): black, below it
    return colormaps["viridis"].with_extremes(bad="#e7298a", under="#000000")


def _draw(ax, steps, ts, logs, low, high):
    clipped = np.where(np.isneginf(logs), low - 1.0, logs)
    return ax.pcolormesh(edges(ts), edges(steps), np.ma.masked_invalid(clipped), cmap=_cmap(),
                         vmin=low, vmax=high, shading="flat", rasterized=True)


def figures(run):
    rows = run.history
    if rows.empty or rows["step"].nunique() < 2:
        return  # one step: nothing to show over training
    for module in run.modules()[:MAX_MODULES]:
        part = rows[rows["module"] == module]
        if part.empty:
            continue
        grid = panels(part, module)
        matrices = {}
        for r, row in enumerate(grid):
            for c, key in enumerate(row):
                sel = select(part, *key)
                if not sel.empty:
                    matrices[(r, c)] = log_matrix(sel)
        if not matrices:
            continue
        low, high = color_range([m[2] for m in matrices.values()])
        fig, axes = style.new_figure(len(grid), len(grid[0]), right=1.4)
        mesh = None
        for (r, c), (steps, ts, logs) in matrices.items():
            ax = axes[r, c]
            mesh = _draw(ax, steps, ts, logs, low, high)
            ax.set_title(style.text(panel_title(module, *grid[r][c], run.meta)), fontsize=10)
            ax.set_xlabel("time step t (input position)")
            ax.set_ylabel("training step")
        style.hide_unused(axes, set(matrices))
        style.colorbar(fig, mesh, "log10 ‖∂L/∂state_t‖ (total)")
        shown = len(np.unique(part["step"]))
        style.title(fig, style.text(f"{module_label(module)}: log10 gradient norm over training "
                                    f"({shown} of {len(run.steps)} recorded steps shown)"))
        yield Plot("heatmap", module, f"Gradient over training — {module_label(module)}",
                   "Each row is one recorded training step, each column a time step t; colour is "
                   "log10 of the total gradient norm. Dark toward early t: the gradient does not "
                   "reach that far back. Magenta cells are NaN/Inf; black cells are zero (or more than "
                   f"{MAX_DECADES} decades below the largest value).",
                   fig)


def compare_figures(runs):
    """One column per run (first module, forward direction, state h), one shared colour scale."""
    panels = []
    for run in runs:
        rows = run.history
        if rows.empty or rows["step"].nunique() < 2:
            continue
        module = next((m for m in run.modules() if (rows["module"] == m).any()), None)
        part = rows[(rows["module"] == module) & (rows["state"] == "h")]
        direction = "forward" if (part["direction"] == "forward").any() else part["direction"].iloc[0]
        for layer in sorted(int(v) for v in part["layer"].unique()):
            sel = part[(part["layer"] == layer) & (part["direction"] == direction)]
            panels.append((run, module, layer, direction, log_matrix(sel)))
    if not panels:
        return
    names = list(dict.fromkeys(p[0].name for p in panels))
    layers = sorted({p[2] for p in panels})
    low, high = color_range([p[4][2] for p in panels])
    fig, axes = style.new_figure(len(layers), len(names), width=4.4, right=1.4)
    used = set()
    mesh = None
    for run, module, layer, direction, (steps, ts, logs) in panels:
        r, c = layers.index(layer), names.index(run.name)
        ax = axes[r, c]
        mesh = _draw(ax, steps, ts, logs, low, high)
        ax.set_title(style.text(run_part_label(run, module, layer, direction)), fontsize=10)
        ax.set_xlabel("time step t")
        ax.set_ylabel("training step")
        used.add((r, c))
    style.hide_unused(axes, used)
    style.colorbar(fig, mesh, "log10 ‖∂L/∂h_t‖ (total)")
    style.title(fig, "log10 gradient norm over training, runs side by side (one colour scale)")
    yield Plot("heatmap", "compare", "Gradient over training, runs side by side",
               "Rows: recorded training steps; columns: time steps t; colour: log10 of the total "
               "gradient norm on one scale shared by all runs. Magenta: NaN/Inf; black: zero (or more "
               f"than {MAX_DECADES} decades below the largest value).",
               fig)
