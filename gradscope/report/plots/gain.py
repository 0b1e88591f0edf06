"""Gain and horizon per layer, from the Diagnosis summary: the two numbers a verdict rests on."""

import math

import numpy as np

from gradscope.report.plots import style
from gradscope.report.plots.base import Plot, part_label

VERDICT_COLORS = {"healthy": "#2ca02c", "vanishing": "#1f77b4", "exploding": "#d62728",
                  "nonfinite": "#e7298a"}
MAX_BARS = 48


def sequence_length(run, module, layer, direction):
    rows = run.last
    sel = rows[(rows["module"] == module) & (rows["layer"] == layer) & (rows["direction"] == direction)]
    if sel.empty:
        return math.nan
    return float(sel.groupby("call")["t"].nunique().max())


def bars(runs, with_run_name):
    out = []
    for i, run in enumerate(runs):
        summary = run.summary
        if summary.empty or "gain" not in summary:
            continue
        for row in summary.to_dict("records"):
            module, layer, direction = row.get("module", ""), int(row.get("layer", 0)), row.get("direction", "forward")
            label = part_label(module, layer, direction, run.meta)
            if with_run_name:
                label = f"{run.name}\n{label}"
            out.append(dict(label=label, run=i, gain=_num(row.get("gain")), horizon=_num(row.get("horizon")),
                            verdict=str(row.get("verdict", "")),
                            seq=sequence_length(run, module, layer, direction)))
    return out[:MAX_BARS]


def _num(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def draw(entries, color_by_run, title):
    x = np.arange(len(entries))
    width = min(max(5.5, 0.75 * len(entries) + 1.5), 14.0)
    fig, axes = style.new_figure(1, 2, width=width, height=4.2, flexible=True)
    colors = [style.series_color(e["run"]) if color_by_run else VERDICT_COLORS.get(e["verdict"], "#7f7f7f")
              for e in entries]
    labels = [style.text(e["label"]) for e in entries]

    ax = axes[0, 0]
    gains = np.array([e["gain"] for e in entries])
    shown = np.where(np.isfinite(gains) & (gains > 0), gains, np.nan)
    ax.bar(x, shown, color=colors, width=0.6, bottom=None)
    ax.axhline(1.0, color=style.ZERO_LINE, ls="--", lw=1)
    style.log_y(ax)
    finite = shown[np.isfinite(shown)]
    low = min(0.5, float(finite.min()) / 2) if finite.size else 0.1
    high = max(2.0, float(finite.max()) * 2) if finite.size else 10
    ax.set_ylim(low, high)
    for xi, e in zip(x, entries):
        ax.annotate(_gain_text(e["gain"]) + f"\n{e['verdict']}", (xi, shown[xi] if np.isfinite(shown[xi]) else low),
                    textcoords="offset points", xytext=(0, 3), ha="center", va="bottom", fontsize=7)
    ax.set_ylabel("per-step gain (× per step back)")
    ax.set_title("gain: < 1 shrinks, > 1 grows at each step back (dashed: 1)", fontsize=9)

    ax = axes[0, 1]
    horizons = np.array([e["horizon"] for e in entries])
    seqs = np.array([e["seq"] for e in entries])
    finite = np.concatenate([horizons[np.isfinite(horizons)], seqs[np.isfinite(seqs)]])
    top = float(finite.max()) * 1.3 if finite.size and finite.max() > 0 else 10.0
    drawn = np.where(np.isinf(horizons), top, horizons)
    ax.bar(x, np.nan_to_num(drawn, nan=0.0), color=colors, width=0.6,
           hatch=["//" if np.isinf(h) else "" for h in horizons])
    for xi, (h, s) in enumerate(zip(horizons, seqs)):
        if np.isfinite(s):
            ax.hlines(s, xi - 0.4, xi + 0.4, color="#000000", lw=2,
                      label="sequence length T" if xi == int(np.argmax(np.isfinite(seqs))) else None)
        ax.annotate("∞" if np.isinf(h) else style.fmt(h), (xi, min(drawn[xi], top) if np.isfinite(drawn[xi]) else 0),
                    textcoords="offset points", xytext=(0, 3), ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, top * 1.1)
    ax.set_ylabel("horizon (time steps)")
    ax.set_title("horizon: steps back until the gradient falls below Rules.horizon_ratio", fontsize=9)
    if np.isfinite(seqs).any():
        ax.legend(fontsize=7, loc="upper right")
    for ax in axes[0]:
        ax.set_xticks(x, labels, fontsize=8, rotation=0 if len(entries) <= 4 else 30,
                      ha="center" if len(entries) <= 4 else "right")
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=11)
    return fig


def _gain_text(gain):
    return "gain n/a" if not np.isfinite(gain) else f"{gain:.3g}"


def figures(run):
    entries = bars([run], with_run_name=False)
    if not entries:
        return
    fig = draw(entries, color_by_run=False, title=style.text(f"{run.name}: gain and horizon per layer"))
    yield Plot("gain", "run", "Gain and horizon per layer",
               "Gain: the geometric mean of carried_t / total_{t+1}, how much of the gradient survives "
               "one step back. Horizon: how many steps back until it falls below the analyzer's ratio "
               "(hatched bars: never, gain ≥ 1). The black tick is the sequence length; a horizon "
               "below it means the early inputs get almost no gradient. Colour: verdict (green healthy, "
               "blue vanishing, red exploding, magenta non-finite).",
               fig)


def compare_figures(runs):
    entries = bars(runs, with_run_name=True)
    if not entries:
        return
    fig = draw(entries, color_by_run=True, title="Gain and horizon per layer, all runs")
    yield Plot("gain", "compare", "Gain and horizon per layer, all runs",
               "Per run and layer: the per-step gain (log axis, dashed line at 1) and the horizon in "
               "time steps (hatched: never falls off; black tick: sequence length).", fig)
