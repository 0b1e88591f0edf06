"""Per-timestep gradient norms: total, carried and direct, per layer, direction and state."""

import numpy as np

from gradscope.reporting.plots import style
from gradscope.reporting.plots.base import MAX_MODULES, Plot, by_module, module_label, panel_title, panels, select

STATE_NAME = {"h": "h_t", "c": "c_t"}


def per_t(rows):
    """Mean over the calls of a step, per t (a decoder called several times per step)."""
    grouped = rows.groupby("t", sort=True)
    out = grouped[["grad_norm", "carried_norm", "direct_norm"]].mean()
    out["nonfinite"] = grouped["nonfinite"].sum()
    # a run folder written before the column existed reads it back as NaN
    out["finite_grad_norm"] = grouped["finite_grad_norm"].mean() if "finite_grad_norm" in rows else np.nan
    return out.reset_index()


def finite_only(curve):
    """The total over the finite sequences, only at the t where the total itself is NaN/Inf
    (one NaN sequence makes the batch mean NaN; the other sequences still have a gradient);
    NaN elsewhere, so it draws just the stretch the total line leaves out."""
    total = curve["grad_norm"].to_numpy(dtype=float)
    finite = curve["finite_grad_norm"].to_numpy(dtype=float)
    return np.where(np.isfinite(total), np.nan, finite)


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
    forward = direction != "reverse"
    ax.text(0.99 if forward else 0.01, 0.02,
            "← backprop runs toward earlier t" if forward else "backprop runs toward later t →",
            transform=ax.transAxes, ha="right" if forward else "left", va="bottom", fontsize=7,
            color=style.ZERO_LINE, bbox=dict(facecolor="white", alpha=0.75, edgecolor="none", pad=1.5))


LINES = (  # column, colour, legend, width, style, z-order: total under the parts it sums
    ("grad_norm", style.TOTAL, "total", 2.6, "-", 2),
    ("carried_norm", style.CARRIED, "carried (from the next step)", 1.4, "--", 3),
    ("direct_norm", style.DIRECT, "direct (loss or layer above)", 1.4, "-", 3),
)


def _draw_panel(ax, last, history):
    curve = per_t(last)
    t = curve["t"].to_numpy()
    band = history_band(history) if history is not None and len(history) else None
    if band is not None:
        ax.fill_between(band["t"], band[0.1], band[0.9], color=style.TOTAL, alpha=0.10, lw=0,
                        label="total, 10–90% over training")
    zero_notes = []
    for column, color, label, width, line, z in LINES:
        values = curve[column].to_numpy(dtype=float)
        if not len(style.positive_finite(values)):
            continue
        zeros = int(np.sum(values == 0))
        if zeros and column != "grad_norm":
            zero_notes.append(f"{label.split(' ')[0]} = 0 at {zeros}/{len(values)} t")
        ax.plot(t, values, color=color, lw=width, ls=line, zorder=z, marker=style.marker_for(values),
                ms=3, label=label)
        if column == "grad_norm":
            zeros = style.mark_zeros(ax, t, values, color)
            style.zero_note(ax, [f"total at {style.span_words(zeros)}"] if len(zeros) else [])
    rest = finite_only(curve)
    if len(style.positive_finite(rest)):
        ax.plot(t, rest, color=style.TOTAL, lw=1.6, ls=":", marker=style.marker_for(rest), ms=3, zorder=2,
                label="total over the finite sequences (where some are NaN/Inf)")
    bad = curve.loc[curve["nonfinite"] > 0, "t"].to_numpy()
    for i, tb in enumerate(bad[:200]):
        ax.axvline(tb, color="#e7298a", alpha=0.5, lw=1.2, label="NaN/Inf at this t" if i == 0 else None)
    style.log_y(ax)
    style.plain_log_labels(ax)
    ax.set_xlabel("time step t (input position)")
    ax.grid(True, alpha=0.3)
    if zero_notes:  # gaps on a log axis: say why, in the corner the typical curve leaves empty
        forward = last["direction"].iloc[0] != "reverse"
        ax.text(0.01 if forward else 0.99, 0.98, "; ".join(zero_notes), transform=ax.transAxes,
                ha="left" if forward else "right", va="top", fontsize=7, color=style.ZERO_LINE,
                bbox=dict(facecolor="white", alpha=0.75, edgecolor="none", pad=1.5))
    return band is not None


def caption(banded):
    """What the figure shows, naming the grey band only where one is drawn (2+ sampled steps)."""
    band = (" The grey band is the 10–90% range of the total over the sampled training steps."
            if banded else "")
    return ("Norm of ∂L/∂h_t at each time step t of the last recorded training step (mean over "
            "calls): total = carried + direct. A total that falls steeply going back in time is "
            "a vanishing gradient; one that grows is exploding." + band + " Magenta lines mark "
            "NaN/Inf; triangles on the bottom edge mark t where the total is exactly 0 (below the "
            "float range), where the line on a log axis would just stop.")


def figures(run):
    for step, module, part in by_module(run, run.last):
        hist = run.history[run.history["module"] == module]
        grid = panels(part, module)
        fig, axes = style.new_figure(len(grid), len(grid[0]))
        banded = False
        for r, row in enumerate(grid):
            for c, (layer, direction, state) in enumerate(row):
                ax = axes[r, c]
                sel = select(part, layer, direction, state)
                if sel.empty:
                    style.empty_note(ax, "not recorded")
                    continue
                banded |= _draw_panel(ax, sel, select(hist, layer, direction, state))
                ax.set_ylabel(y_label(state))
                ax.set_title(style.text(panel_title(module, layer, direction, state, run.meta)), fontsize=10)
                draw_flow_hint(ax, direction)
        style.figure_legend(fig, axes.flat)
        style.title(fig, style.text(f"{module_label(module)}: gradient norm per time step (training step {step})"))
        yield Plot("timesteps", module, f"Gradient per time step — {module_label(module)}", caption(banded), fig)


def compare_figures(runs):
    """Total norm per time step, every run on the same axes, one panel per layer and direction."""
    keys = []
    for run in runs:
        rows = run.last[run.last["state"] == "h"] if not run.last.empty else run.last
        for layer, direction in rows[["layer", "direction"]].drop_duplicates().itertuples(index=False):
            if (int(layer), direction) not in keys:
                keys.append((int(layer), direction))
    if not keys:
        return
    layers = sorted({k[0] for k in keys})
    directions = [d for d in ("forward", "reverse") if any(k[1] == d for k in keys)]
    fig, axes = style.new_figure(len(layers), len(directions), width=6.0)
    used = set()
    zero_words = {}  # (row, col) -> words for the curves that hit exactly 0
    for i, run in enumerate(runs):
        rows = run.last
        if rows.empty:
            continue
        modules = [m for m in run.modules() if (rows["module"] == m).any()][:MAX_MODULES]
        for m_index, module in enumerate(modules):
            for r, layer in enumerate(layers):
                for c, direction in enumerate(directions):
                    sel = select(rows[rows["module"] == module], layer, direction, "h")
                    if sel.empty:
                        continue
                    curve = per_t(sel)
                    label = run.name if len(modules) == 1 else f"{run.name} · {module_label(module)}"
                    values = curve["grad_norm"].to_numpy(dtype=float)
                    axes[r, c].plot(curve["t"], values, color=style.series_color(i), lw=1.8,
                                    ls=("-", "--", ":", "-.")[m_index % 4],
                                    marker=style.marker_for(values), ms=3, label=style.text(label))
                    rest = finite_only(curve)
                    if len(style.positive_finite(rest)):
                        axes[r, c].plot(curve["t"], rest, color=style.series_color(i), lw=1.4, ls=":",
                                        marker=style.marker_for(rest), ms=3,
                                        label=style.text(f"{label}: finite sequences only"))
                    zeros = style.mark_zeros(axes[r, c], curve["t"], values, style.series_color(i))
                    if len(zeros):
                        zero_words.setdefault((r, c), []).append(f"{style.text(label)} at {style.span_words(zeros)}")
                    used.add((r, c))
    for r, layer in enumerate(layers):
        for c, direction in enumerate(directions):
            ax = axes[r, c]
            if (r, c) not in used:
                continue
            style.log_y(ax)
            style.plain_log_labels(ax)
            ax.set_title(f"layer {layer} · {direction}", fontsize=10)
            ax.set_xlabel("time step t (input position)")
            ax.set_ylabel(y_label("h"))
            ax.grid(True, alpha=0.3)
            draw_flow_hint(ax, direction)
            style.zero_note(ax, zero_words.get((r, c), []))
    style.hide_unused(axes, used)
    style.figure_legend(fig, axes.flat)
    style.title(fig, "Total gradient norm per time step, runs overlaid (last recorded step of each)")
    yield Plot("timesteps", "compare", "Gradient per time step, runs overlaid",
               "Total norm of ∂L/∂h_t per time step for each run, on the same log axis. The slope "
               "going back in time is the per-step gain: flat keeps the gradient, falling loses it. "
               "Triangles on the bottom edge, in the run's colour, mark t where its total is exactly 0 "
               "(below the float range).",
               fig)
