"""Recurrent weight spectra at the last step: singular values per gate, and eigenvalues on the
complex plane with the unit circle (outside it, a linearised recurrence grows)."""

import numpy as np

from gradscope.reporting.plots import style
from gradscope.reporting.plots.base import Plot, by_module, module_label, ordered, part_label, run_part_label

MAX_PARTS = 8
GATE_ORDER = ("hh", "r", "z", "n", "i", "f", "g", "o")
# a fixed colour per gate name, so gate f is the same colour in every panel and run
GATE_COLORS = dict(zip(GATE_ORDER, ("#444444", "#1f77b4", "#d62728", "#2ca02c",
                                    "#9467bd", "#ff7f0e", "#17becf", "#8c564b")))


def gate_color(gate, index):
    return GATE_COLORS.get(gate, style.series_color(index + 2))


def gates_of(spectra, module, layer, direction):
    """Gate blocks recorded for one part; the stacked ``all`` matrix only when it is alone
    (for gated cells it is not square and the per-gate blocks say more)."""
    sel = spectra[(spectra["module"] == module) & (spectra["layer"] == layer)
                  & (spectra["direction"] == direction)]
    gates = ordered(sel["gate"], GATE_ORDER + ("all",))
    return [g for g in gates if g != "all"] or gates


def parts_of(spectra, module):
    sel = spectra[spectra["module"] == module][["layer", "direction"]].drop_duplicates()
    keys = sorted(((int(l), d) for l, d in sel.itertuples(index=False)),
                  key=lambda k: (k[0], 0 if k[1] == "forward" else 1))
    return keys[:MAX_PARTS]


def draw_singular_values(ax, series):
    """``series``: list of (label, color, singular values)."""
    drawn = False
    for label, color, values in series:
        values = np.sort(np.asarray(values, dtype=float))[::-1]
        if not len(style.positive_finite(values)):
            continue
        ax.plot(np.arange(1, len(values) + 1), values, color=color, lw=1.5,
                marker=style.marker_for(values, few=40), ms=3, label=style.text(label))
        drawn = True
    if not drawn:
        style.empty_note(ax, "no singular values stored")
        return
    ax.axhline(1.0, color=style.ZERO_LINE, ls="--", lw=1, label="σ = 1")
    style.log_y(ax)
    ax.set_xlabel("index i (largest first)")
    ax.set_ylabel("singular value σ_i")
    style.plain_log_labels(ax)
    ax.grid(True, alpha=0.3)


BULK_QUANTILE = 0.9   # the eigenvalue axes frame this share of |λ| (and the unit circle)
OUTLIER_FACTOR = 2.0  # ... unless framing them all takes at most this factor more
UNIT_CIRCLE = dict(color="#000000", ls=":", lw=1.2)  # not the dashed grey of σ = 1 beside it


def eigen_limit(radii):
    """Half-width of the eigenvalue axes: around the bulk (the BULK_QUANTILE of |λ|, and the
    unit circle), so a few large outliers do not squash the cluster; when the largest is close
    to the bulk anyway, around all of them."""
    radii = np.asarray(radii, dtype=float)
    radii = radii[np.isfinite(radii)]
    if not len(radii):
        return 1.08
    everything = max(1.0, float(radii.max())) * 1.08
    bulk = max(1.0, float(np.quantile(radii, BULK_QUANTILE))) * 1.15
    return everything if everything <= bulk * OUTLIER_FACTOR else bulk


def draw_eigenvalues(ax, series):
    points = [(label, color, v[np.isfinite(v)]) for label, color, v in
              ((label, color, np.asarray(values, dtype=complex)) for label, color, values in series)]
    points = [p for p in points if len(p[2])]
    if not points:
        style.empty_note(ax, "no eigenvalues (block not square)")
        return
    lim = eigen_limit(np.abs(np.concatenate([v for _, _, v in points])))
    beyond = []
    for label, color, values in points:
        inside = (np.abs(values.real) <= lim) & (np.abs(values.imag) <= lim)
        ax.scatter(values.real[inside], values.imag[inside], s=12, color=color, alpha=0.75,
                   label=style.text(label), edgecolors="none")
        if (~inside).any():  # outliers sit on the edge, hollow, where they lie beyond it
            out = values[~inside]
            ax.scatter(np.clip(out.real, -lim, lim), np.clip(out.imag, -lim, lim), s=22, marker="D",
                       facecolors="white", edgecolors=color, linewidths=1.2, clip_on=False, zorder=4)
            beyond.append(out)
    angle = np.linspace(0, 2 * np.pi, 361)
    ax.plot(np.cos(angle), np.sin(angle), label="unit circle", **UNIT_CIRCLE)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal", adjustable="box")
    ax.axhline(0, color="#cccccc", lw=0.6)
    ax.axvline(0, color="#cccccc", lw=0.6)
    if beyond:
        out = np.concatenate(beyond)
        ax.text(0.02, 0.02, f"◇ on the edge: {len(out)} beyond the axes, |λ| up to {np.abs(out).max():.3g}",
                transform=ax.transAxes, ha="left", va="bottom", fontsize=7, color="#444444",
                bbox=dict(facecolor="white", alpha=0.8, edgecolor="none", pad=1.5))
    ax.set_xlabel("Re λ")
    ax.set_ylabel("Im λ")


def part_series(run, module, layer, direction):
    gates = gates_of(run.spectra, module, layer, direction)
    sv, eig = [], []
    for g, gate in enumerate(gates):
        values = run.spectrum(module, layer, direction, gate)
        if values is None:
            continue
        sv.append((f"gate {gate}", gate_color(gate, g), values["singular_values"]))
        eig.append((f"gate {gate}", gate_color(gate, g), values["eigenvalues"]))
    return sv, eig


def figures(run):
    for step, module, rows in by_module(run, run.spectra):
        parts = parts_of(rows, module)
        drawn = [(layer, direction, *part_series(run, module, layer, direction)) for layer, direction in parts]
        drawn = [d for d in drawn if d[2] or d[3]]
        if not drawn:
            continue
        fig, axes = style.new_figure(len(drawn), 2, width=4.8, height=3.4)
        for r, (layer, direction, sv, eig) in enumerate(drawn):
            label = style.text(part_label(module, layer, direction, run.meta, with_module=False))
            draw_singular_values(axes[r, 0], sv)
            axes[r, 0].set_title(f"{label}: singular values", fontsize=10)
            draw_eigenvalues(axes[r, 1], eig)
            axes[r, 1].set_title(f"{label}: eigenvalues", fontsize=10)
        style.figure_legend(fig, axes.flat)
        style.title(fig, style.text(f"{module_label(module)}: recurrent weight spectra (training step {step})"))
        yield Plot("spectrum", module, f"Recurrent weight spectra — {module_label(module)}",
                   "Left: singular values of each gate's recurrent weight block, largest first. For a "
                   "tanh RNN, σ_max < 1 is enough for the gradient to vanish (Pascanu et al. 2013); "
                   "σ_max > 1 is needed for it to explode. Right: eigenvalues on the complex plane; "
                   "those outside the dotted unit circle grow under repetition; the axes frame the bulk, "
                   "and hollow diamonds on the edge stand for eigenvalues beyond it. For gated cells "
                   "the gates decide more than the weights: read the measured gain too.",
                   fig)


def compare_figures(runs):
    """Per run, its first module's first part: singular values (top) and eigenvalues (bottom)."""
    columns = []
    for run in runs:
        if run.spectra.empty:
            continue
        for module in run.modules():
            parts = parts_of(run.spectra, module)
            if parts:
                layer, direction = parts[0]
                sv, eig = part_series(run, module, layer, direction)
                if sv or eig:
                    columns.append((run, module, layer, direction, sv, eig))
                    break
    if not columns:
        return
    fig, axes = style.new_figure(2, len(columns), width=4.2, height=3.4)
    for c, (run, module, layer, direction, sv, eig) in enumerate(columns):
        label = style.text(run_part_label(run, module, layer, direction))
        draw_singular_values(axes[0, c], sv)
        axes[0, c].set_title(f"{label}: singular values", fontsize=9)
        draw_eigenvalues(axes[1, c], eig)
        axes[1, c].set_title(f"{label}: eigenvalues", fontsize=9)
    style.figure_legend(fig, axes.flat)
    style.title(fig, "Recurrent weight spectra, runs side by side (last recorded step)")
    yield Plot("spectrum", "compare", "Recurrent weight spectra, runs side by side",
               "Top: singular values per gate of each run's first recurrent layer; bottom: its "
               "eigenvalues against the dotted unit circle (hollow diamonds on the edge: eigenvalues "
               "beyond the axes, which frame the bulk).", fig)
