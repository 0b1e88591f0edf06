"""Gate saturation at the last step: the share of activations stuck near a bound, where the
derivative (and so the gradient through that gate) is almost zero."""

import numpy as np

from gradscope.reporting.plots import style
from gradscope.reporting.plots.base import Plot, part_label

MAX_ROWS = 40
DEFAULT_SATURATION_SHARE = 0.5  # Rules.saturation_share default; drawn as a guide


def saturation_note(low, high, threshold=DEFAULT_SATURATION_SHARE):
    """Words for a chart whose bars are all short: without them an empty chart looks broken."""
    shares = np.concatenate([np.nan_to_num(low, nan=0.0), np.nan_to_num(high, nan=0.0)])
    if not len(shares) or shares.max() >= threshold:
        return None
    largest = float(shares.max())
    if largest == 0:
        return "no saturation: no activation of any gate is within 0.05 of a bound"
    share = f"at most {largest:.1%}" if largest >= 0.001 else "under 0.1%"
    return f"no saturation: {share} of any gate's activations near a bound (threshold {threshold:.0%})"


def figures(run):
    rows = run.gates
    if rows.empty:
        return
    step = int(rows["step"].max())
    grouped = (rows.groupby(["module", "layer", "direction", "gate", "activation"], sort=False)
               [["low", "high"]].mean().reset_index())
    grouped = grouped.head(MAX_ROWS)
    labels = [style.text(f"{part_label(m, int(l), d, run.meta)} · {g} ({a})")
              for m, l, d, g, a in grouped[["module", "layer", "direction", "gate", "activation"]].itertuples(index=False)]
    low = np.nan_to_num(grouped["low"].to_numpy(dtype=float), nan=0.0)
    high = np.nan_to_num(grouped["high"].to_numpy(dtype=float), nan=0.0)
    y = np.arange(len(grouped))
    fig, axes = style.new_figure(1, 1, width=9.0, height=1.6 + 0.34 * len(grouped), flexible=True)
    ax = axes[0, 0]
    # two bars per gate: each end is judged on its own (saturated at 0 or saturated at 1)
    ax.barh(y - 0.18, low, height=0.36, color="#1f77b4", label="near the lower bound (sigmoid 0, tanh −1, relu = 0)")
    ax.barh(y + 0.18, high, height=0.36, color="#ff7f0e", label="near the upper bound (sigmoid 1, tanh +1)")
    ax.axvline(DEFAULT_SATURATION_SHARE, color=style.ZERO_LINE, ls="--", lw=1,
               label="saturated beyond this (default Rules.saturation_share)")
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of activations within 0.05 of a bound (0–1)")
    ax.grid(True, axis="x", alpha=0.3)
    note = saturation_note(low, high)
    if note:
        ax.text(0.5, 0.5, note, transform=ax.transAxes, ha="center", va="center", fontsize=10,
                color="#1e7e34", bbox=dict(facecolor="white", alpha=0.9, edgecolor="#a8dab5", pad=4))
    fig.legend(loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle(style.text(f"{run.name}: gate saturation (training step {step})"), fontsize=11)
    yield Plot("gates", "run", "Gate saturation",
               "For each gate, the share of activations within 0.05 of the lower (blue) and upper "
               "(orange) bound at the last recorded step. A saturated gate passes almost no gradient "
               "to its own weights; a forget gate near 1, though, is what keeps an LSTM's gradient alive.",
               fig)
