"""Lyapunov spectrum of the recurrent dynamics (``jacobians=True``): average log growth per step
along each direction of the state space, largest first."""

from gradscope.reporting.plots import style
from gradscope.reporting.plots.base import Plot, part_label, run_part_label

MAX_LINES = 12


def lines(run, with_run_name):
    rows = run.lyapunov
    if rows.empty:
        return []
    out = []
    keys = rows[["module", "layer", "direction"]].drop_duplicates().itertuples(index=False)
    for module, layer, direction in keys:
        sel = rows[(rows["module"] == module) & (rows["layer"] == layer) & (rows["direction"] == direction)]
        curve = sel.groupby("index", sort=True)["exponent"].mean()
        label = (run_part_label(run, module, int(layer), direction) if with_run_name
                 else part_label(module, int(layer), direction, run.meta))
        out.append((label, curve))
    return out


def draw(entries, title):
    fig, axes = style.new_figure(1, 1, width=7.5, height=4.0)
    ax = axes[0, 0]
    for k, (label, color, curve) in enumerate(entries[:MAX_LINES]):
        values = curve.to_numpy(dtype=float)
        ax.plot(curve.index.to_numpy() + 1, values, color=color, lw=1.6,
                marker="o" if len(values) <= 40 else None, ms=3, label=style.text(label))
    ax.axhline(0.0, color=style.ZERO_LINE, ls="--", lw=1, label="λ = 0")
    ax.set_xlabel("exponent index i (largest first)")
    ax.set_ylabel("Lyapunov exponent λ_i (log growth per step)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    style.title(fig, title)
    return fig


def figures(run):
    entries = [(label, style.series_color(k), curve) for k, (label, curve) in enumerate(lines(run, False))]
    if not entries:
        return
    step = int(run.lyapunov["step"].max())
    fig = draw(entries, style.text(f"{run.name}: Lyapunov spectrum (training step {step})"))
    yield Plot("lyapunov", "run", "Lyapunov spectrum",
               "Mean log growth per step of small perturbations along each direction (QR method, "
               "Engelken et al. 2020). λ_1 < 0: perturbations and gradients decay; λ_1 > 0: chaotic, "
               "gradients can explode.", fig)


def compare_figures(runs):
    entries = []
    for i, run in enumerate(runs):
        for label, curve in lines(run, True)[:1]:  # the first part of each run, one colour per run
            entries.append((label, style.series_color(i), curve))
    if not entries:
        return
    fig = draw(entries, "Lyapunov spectra, runs overlaid")
    yield Plot("lyapunov", "compare", "Lyapunov spectra, runs overlaid",
               "Lyapunov exponents of the first recurrent layer of each run; above 0 grows.", fig)
