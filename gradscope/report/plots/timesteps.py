"""Per-timestep gradient norms: total, carried and direct, per layer, direction and state."""

import numpy as np
import pandas as pd

from gradscope.report.plots import style
from gradscope.report.plots.base import MAX_MODULES, Plot, grid, module_label, part_label

STATE_NAME = {"h": "h_t", "c": "c_t"}


def per_t(rows):
    """Mean over the calls of a step, per t (a decoder called several times per step)."""
    grouped = rows.groupby("t", sort=True)
    out = grouped[["grad_norm", "carried_norm", "direct_norm"]].mean()
    out["nonfinite"] = grouped["nonfinite"].sum()
    return out.reset_index()


def history_band(rows, low=0.1, high=0.9):
    """Per t, the 10th and 90th percentile of the total norm over the sampled steps."""
    per_step = rows.groupby(["step", "t"], sort=False)["grad_norm"].mean().reset_index()
    per_step = per_step[np.isfinite(per_step["grad_norm"])]
    if per_step["step"].nunique() < 2:
        return None
    band = per_step.groupby("t", sort=True)["grad_norm"].quantile([low, high]).unstack()
    return band.reset_index()


def y_label(state):
    return f"‖∂L/∂{STATE_NAME.get(state, 'h_t')}‖ (batch-mean L2)"


def draw_flow_hint(ax, direction):
    arrow = "← backprop flows to earlier t" if direction != "reverse" else "backprop flows to later t →"
    ax.text(0.99 if direction != "reverse" else 0.01, 0.02, arrow, transform=ax.transAxes,
            ha="right" if direction != "reverse" else "left", va="bottom", fontsize=7,
            color=style.ZERO_LINE)


def _draw_panel(ax, last, history):
    curve = per_t(last)
    t = curve["t"].to_numpy()
    band = history_band(history) if history is not None else None
    if band is not None:
        ax.fill_between(band["t"], band[0.1], band[0.9], color=style.TOTAL, alpha=0.10, lw=0,
                        label="total, 10–90% over training")
    for column, color, label, width in (("grad_norm", style.TOTAL, "total", 2.0),
                                        ("carried_norm", style.CARRIED, "carried (from next step)", 1.3),
                                        ("direct_norm", style.DIRECT, "direct (loss / layer above)", 1.3)):
        values = curve[column].to_numpy(dtype=float)
        if not len(style.positive_finite(values)):
            continue
        zeros = int(np.sum(values == 0))
        suffix = f" — 0 at {zeros} of {len(values)} t" if zeros else ""
        ax.plot(t, values, color=color, lw=width, marker=style.marker_for(values), ms=3,
                label=label + suffix)
    bad = curve.loc[curve["nonfinite"] > 0, "t"].to_numpy()
    for i, tb in enumerate(bad[:200]):
        ax.axvline(tb, color="#d62728", alpha=0.35, lw=1, label="non-finite (NaN/Inf)" if i == 0 else None)
    style.log_y(ax)
    ax.set_xlabel("time step t (input position)")
    ax.grid(True, which="major", alpha=0.3)


def figures(run):
    rows = run.last
    if rows.empty:
        return
    step = int(rows["step"].max())
    for module in run.modules()[:MAX_MODULES]:
        part = rows[rows["module"] == module]
        if part.empty:
            continue
        hist = run.history[run.history["module"] == module]
        layers, cols = grid(part, module, states=True)
        fig, axes = style.new_figure(len(layers), len(cols))
        for r, layer in enumerate(layers):
            for c, (direction, state) in enumerate(cols):
                ax = axes[r, c]
                sel = (part["layer"] == layer) & (part["direction"] == direction) & (part["state"] == state)
                hsel = (hist["layer"] == layer) & (hist["direction"] == direction) & (hist["state"] == state)
                if not sel.any():
                    style.empty_note(ax, "not recorded")
                    continue
                _draw_panel(ax, part[sel], hist[hsel])
                ax.set_ylabel(y_label(state))
                ax.set_title(style.text(part_label(module, layer, direction, run.meta, with_module=False)
                                        + f" · state {state}"), fontsize=10)
                draw_flow_hint(ax, direction)
        axes[0, 0].legend(fontsize=7, loc="best")
        fig.suptitle(style.text(f"{module_label(module)}: gradient norm per time step (training step {step})"),
                     fontsize=11)
        yield Plot("timesteps", module, f"Gradient per time step — {module_label(module)}",
                   "Norm of ∂L/∂h_t at each time step t of the last recorded training step (mean over "
                   "calls): total = carried + direct. A total that falls steeply toward earlier t "
                   "(for the forward direction) is a vanishing gradient; one that grows is exploding. "
                   "The grey band is the 10–90% range of the total over the sampled training steps.",
                   fig)


def compare_figures(runs):
    """Total norm per time step, every run on the same axes, one panel per layer and direction."""
    keys = []
    for run in runs:
        rows = run.last[run.last["state"] == "h"] if not run.last.empty else run.last
        for key in rows[["layer", "direction"]].drop_duplicates().itertuples(index=False):
            if tuple(key) not in keys:
                keys.append(tuple(key))
    if not keys:
        return
    layers = sorted({k[0] for k in keys})
    directions = [d for d in ("forward", "reverse") if any(k[1] == d for k in keys)]
    fig, axes = style.new_figure(len(layers), len(directions), width=6.0)
    used = set()
    for i, run in enumerate(runs):
        rows = run.last
        if rows.empty:
            continue
        modules = run.modules()
        for m_index, module in enumerate(modules[:MAX_MODULES]):
            for r, layer in enumerate(layers):
                for c, direction in enumerate(directions):
                    sel = rows[(rows["module"] == module) & (rows["layer"] == layer)
                               & (rows["direction"] == direction) & (rows["state"] == "h")]
                    if sel.empty:
                        continue
                    curve = per_t(sel)
                    label = run.name if len(modules) == 1 else f"{run.name} · {module_label(module)}"
                    values = curve["grad_norm"].to_numpy(dtype=float)
                    axes[r, c].plot(curve["t"], values, color=style.series_color(i), lw=1.8,
                                    ls=("-", "--", ":", "-.")[m_index % 4],
                                    marker=style.marker_for(values), ms=3, label=style.text(label))
                    used.add((r, c))
    for r, layer in enumerate(layers):
        for c, direction in enumerate(directions):
            ax = axes[r, c]
            if (r, c) not in used:
                continue
            style.log_y(ax)
            ax.set_title(f"layer {layer} · {direction} · state h", fontsize=10)
            ax.set_xlabel("time step t (input position)")
            ax.set_ylabel(y_label("h"))
            ax.grid(True, alpha=0.3)
            draw_flow_hint(ax, direction)
            ax.legend(fontsize=8)
    style.hide_unused(axes, used)
    fig.suptitle("Total gradient norm per time step, runs overlaid (last recorded step of each)", fontsize=11)
    yield Plot("timesteps", "compare", "Gradient per time step, runs overlaid",
               "Total norm of ∂L/∂h_t per time step for each run, on the same log axis. The slope "
               "toward earlier t is the per-step gain: flat keeps the gradient, falling loses it.",
               fig)
