"""Largest singular value of each recurrent weight block over training."""

from gradscope.reporting.plots import style
from gradscope.reporting.plots.base import MAX_MODULES, Plot, module_label, part_label
from gradscope.reporting.plots.spectrum import gate_color, gates_of, parts_of


def figures(run):
    spectra = run.spectra
    if spectra.empty or spectra["step"].nunique() < 2:
        return
    for module in run.modules()[:MAX_MODULES]:
        parts = parts_of(spectra, module)
        if not parts:
            continue
        cols = min(len(parts), 2)
        rows = (len(parts) + cols - 1) // cols
        fig, axes = style.new_figure(rows, cols)
        used = set()
        for k, (layer, direction) in enumerate(parts):
            ax = axes[k // cols, k % cols]
            used.add((k // cols, k % cols))
            sel = spectra[(spectra["module"] == module) & (spectra["layer"] == layer)
                          & (spectra["direction"] == direction)]
            for g, gate in enumerate(gates_of(spectra, module, layer, direction)):
                line = sel[sel["gate"] == gate].sort_values("step")
                values = line["sigma_max"].to_numpy(dtype=float)
                ax.plot(line["step"], values, color=gate_color(gate, g), lw=1.5,
                        marker=style.marker_for(values), ms=3, label=style.text(f"gate {gate}"))
            ax.axhline(1.0, color=style.ZERO_LINE, ls="--", lw=1, label="σ = 1")
            style.log_y(ax)
            style.plain_log_labels(ax)
            ax.set_xlabel("training step")
            ax.set_ylabel("σ_max (largest singular value)")
            ax.set_title(style.text(part_label(module, layer, direction, run.meta, with_module=False)), fontsize=10)
            ax.grid(True, alpha=0.3)
        style.hide_unused(axes, used)
        style.figure_legend(fig, axes.flat)
        style.title(fig, style.text(f"{module_label(module)}: largest singular value over training"))
        yield Plot("sigma-history", module, f"Weight spectra over training — {module_label(module)}",
                   "σ_max of each gate's recurrent weight block at each sampled training step "
                   "(dashed: 1). A steady climb past 1 often comes before exploding gradients.", fig)
