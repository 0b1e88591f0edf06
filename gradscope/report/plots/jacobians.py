"""Per-step Jacobian norms ‖∂state_{t+1}/∂state_t‖ along the trajectory (``jacobians=True``)."""

from gradscope.report.plots import style
from gradscope.report.plots.base import MAX_MODULES, Plot, grid, module_label, part_label


def per_t(rows):
    return rows.groupby("t", sort=True)["jac_norm"].mean().reset_index()


def _finish(ax):
    ax.axhline(1.0, color=style.ZERO_LINE, ls="--", lw=1, label="norm 1")
    style.log_y(ax)
    ax.set_xlabel("time step t")
    ax.set_ylabel("‖∂state_{t+1}/∂state_t‖ (spectral, batch mean)")
    ax.grid(True, alpha=0.3)


def figures(run):
    rows = run.jacobians
    if rows.empty:
        return
    step = int(rows["step"].max())
    for module in run.modules()[:MAX_MODULES]:
        part = rows[rows["module"] == module]
        if part.empty:
            continue
        layers, cols = grid(part, module)
        fig, axes = style.new_figure(len(layers), len(cols))
        used = set()
        for r, layer in enumerate(layers):
            for c, (direction, _) in enumerate(cols):
                sel = part[(part["layer"] == layer) & (part["direction"] == direction)]
                if sel.empty:
                    continue
                curve = per_t(sel)
                values = curve["jac_norm"].to_numpy(dtype=float)
                ax = axes[r, c]
                ax.plot(curve["t"], values, color=style.CARRIED, lw=1.5, marker=style.marker_for(values),
                        ms=3, label="Jacobian norm")
                _finish(ax)
                ax.set_title(style.text(part_label(module, layer, direction, run.meta, with_module=False)),
                             fontsize=10)
                ax.legend(fontsize=7)
                used.add((r, c))
        style.hide_unused(axes, used)
        fig.suptitle(style.text(f"{module_label(module)}: one-step Jacobian norms (training step {step})"),
                     fontsize=11)
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
                label=style.text(f"{run.name} · {part_label(module, layer, direction, run.meta)}"))
        drawn = True
    if not drawn:
        return
    _finish(ax)
    ax.legend(fontsize=8)
    fig.suptitle("One-step Jacobian norms, runs overlaid (first layer of each)", fontsize=11)
    yield Plot("jacobians", "compare", "Jacobian norms, runs overlaid",
               "Spectral norm of ∂state_{t+1}/∂state_t per time step, first recurrent layer of each run.",
               fig)
