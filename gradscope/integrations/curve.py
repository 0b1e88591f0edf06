"""The per-timestep gradient curve of one recorded step, as a matplotlib Figure and as RGB pixels
(no pyplot: no global figure registry, no backend switch in the user's process)."""

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gradscope.display import module_label

LINES = (("grad_norm", "total", "-"), ("carried_norm", "carried", "--"), ("direct_norm", "direct", ":"))


def per_t(rows):
    """Mean over the calls of the step, per (module, layer, direction, state, t)."""
    keys = ["module", "layer", "direction", "state", "t"]
    return rows.groupby(keys, sort=True)[[c for c, _, _ in LINES]].mean().reset_index()


def curve_figure(rows, step, name=""):
    """One panel per (module, layer, direction): the norms of dL/d state_t against t, log scale."""
    curves = per_t(rows)
    parts = list(curves.groupby(["module", "layer", "direction"], sort=True))
    figure = Figure(figsize=(6.0, 2.6 * max(1, len(parts))), dpi=80, layout="constrained")
    axes = figure.subplots(max(1, len(parts)), 1, squeeze=False)[:, 0]
    for ax, ((module, layer, direction), part) in zip(axes, parts):
        for state, sel in part.groupby("state", sort=True):
            for column, label, style in LINES:
                values = sel[column].to_numpy(dtype=float)
                shown = np.where(np.isfinite(values) & (values > 0), values, np.nan)
                if np.isfinite(shown).any():
                    ax.plot(sel["t"], shown, ls=style, label=f"{label} ({state})")
        ax.set_yscale("log")
        ax.set_title(f"{module_label(module)} · layer {layer} · {direction}", fontsize=9)
        ax.set_xlabel("time step t")
        ax.set_ylabel("‖dL/d state_t‖")
        ax.grid(True, alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=7)
    figure.suptitle(f"{name} gradient per time step, step {step}".strip(), fontsize=10)
    return figure


def to_rgb(figure):
    """The figure's pixels, uint8 (3, H, W) as TensorBoard's add_image takes them."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[:, :, :3].transpose(2, 0, 1))
