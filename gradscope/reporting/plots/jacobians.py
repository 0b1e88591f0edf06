"""Per-step Jacobian norms ‖∂state_{t+1}/∂state_t‖ along the trajectory (``jacobians=True``)."""

from gradscope.reporting.plots import style
from gradscope.reporting.plots.base import Plot, by_module, module_label, panel_title, panels, run_part_label, select


def per_t(rows):
    return rows.groupby("t", sort=True)["jac_norm"].mean().reset_index()


def _finish(ax):
    style.ratio_axes(ax, "norm 1", "time step t", "‖∂state_{t+1}/∂state_t‖ (spectral, batch mean)",
                     style.plain_log_labels)


def figures(run):
    for step, module, part in by_module(run, run.jacobians):
        grid = panels(part, module, states=False)
        fig, axes = style.new_figure(len(grid), len(grid[0]))
        used = set()
        for r, row in enumerate(grid):
            for c, (layer, direction, _) in enumerate(row):
                sel = select(part, layer, direction)
                if sel.empty:
                    continue
                curve = per_t(sel)
                values = curve["jac_norm"].to_numpy(dtype=float)
                ax = axes[r, c]
                ax.plot(curve["t"], values, color=style.CARRIED, lw=1.5, marker=style.marker_for(values),
                        ms=3, label="Jacobian norm")
                _finish(ax)
                ax.set_title(style.text(panel_title(module, layer, direction, None, run.meta)), fontsize=10)
                ax.legend(fontsize=7, loc="upper right")
                used.add((r, c))
        style.hide_unused(axes, used)
        style.title(fig, style.text(f"{module_label(module)}: one-step Jacobian norms (training step {step})"))
        yield Plot("jacobians", module, f"Jacobian norms — {module_label(module)}",
                   "Spectral norm of the one-step Jacobian ∂state_{t+1}/∂state_t along the trajectory. "
                   "Products of these bound how the gradient changes going back: norms mostly below 1 "
                   "(dashed) make it shrink.", fig)


def compare_figures(runs):
    fig, axes = style.new_figure(1, 1, width=7.5, height=4.0)
    ax = axes[0, 0]
    drawn = False
    for i, run in enumerate(runs):
        rows = run.jacobians
        if rows.empty:
            continue
        module = next(m for m in run.modules() if (rows["module"] == m).any())
        sel = rows[(rows["module"] == module) & (rows["layer"] == rows["layer"].min())]
        direction = "forward" if (sel["direction"] == "forward").any() else sel["direction"].iloc[0]
        curve = per_t(sel[sel["direction"] == direction])
        values = curve["jac_norm"].to_numpy(dtype=float)
        layer = int(sel["layer"].iloc[0])
        ax.plot(curve["t"], values, color=style.series_color(i), lw=1.6, marker=style.marker_for(values), ms=3,
                label=style.text(run_part_label(run, module, layer, direction)))
        drawn = True
    if not drawn:
        return
    _finish(ax)
    ax.legend(fontsize=8)
    style.title(fig, "One-step Jacobian norms, runs overlaid (first layer of each)")
    yield Plot("jacobians", "compare", "Jacobian norms, runs overlaid",
               "Spectral norm of ∂state_{t+1}/∂state_t per time step, first recurrent layer of each run.",
               fig)
