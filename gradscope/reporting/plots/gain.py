"""Gain and horizon per layer, from the Diagnosis summary: the two numbers a verdict rests on."""

import math

import numpy as np

from gradscope.reporting.plots import style
from gradscope.reporting.plots.base import Plot, part_label, run_part_label

VERDICT_COLORS = {"healthy": "#2ca02c", "vanishing": "#1f77b4", "exploding": "#d62728",
                  "nonfinite": "#e7298a"}
MAX_BARS = 48


def bars(runs, with_run_name):
    """One entry per summary row (module, layer, direction) of each run."""
    out = []
    for i, run in enumerate(runs):
        summary = run.summary
        if summary.empty or "gain" not in summary:
            continue
        for row in summary.to_dict("records"):
            label = bar_label(run, row.get("module", ""), int(row.get("layer", 0)),
                              row.get("direction", "forward"), with_run_name)
            label = label.replace(" · ", "\n")
            out.append(dict(label=label, run=i, gain=_num(row.get("gain")), horizon=_num(row.get("horizon")),
                            verdict=str(row.get("verdict", "")), seq=_num(row.get("seq_len")),
                            needed=_num(row.get("required_horizon"))))
    return out[:MAX_BARS]


def bar_label(run, module, layer, direction, with_run_name):
    if with_run_name:
        return run_part_label(run, module, layer, direction)
    return part_label(module, layer, direction, run.meta)


def _num(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _gain_panel(ax, x, entries, colors):
    gains = np.array([e["gain"] for e in entries])
    shown = np.where(np.isfinite(gains) & (gains > 0), gains, np.nan)
    # bars start at 1 (no change): down for a shrinking gradient, up for a growing one
    ax.bar(x, np.nan_to_num(shown, nan=1.0) - 1.0, bottom=1.0, color=colors, width=0.6)
    ax.axhline(1.0, color=style.ZERO_LINE, ls="--", lw=1)
    style.log_y(ax)
    finite = shown[np.isfinite(shown)]
    low = min(0.5, float(finite.min()) / 1.6) if finite.size else 0.5
    high = max(2.0, float(finite.max()) * 1.6) if finite.size else 2.0
    ax.set_ylim(low, high)
    style.ratio_ticks(ax)
    for xi, e in enumerate(entries):
        value = shown[xi]
        words = ("gain n/a" if not np.isfinite(e["gain"]) else f"{e['gain']:.3g}") + f"\n{e['verdict']}"
        below = np.isfinite(value) and value < 1
        ax.annotate(words, (xi, value if np.isfinite(value) else 1.0), textcoords="offset points",
                    xytext=(0, -3 if below else 3), ha="center", va="top" if below else "bottom", fontsize=7)
    ax.set_ylabel("per-step gain (× per step back)")
    ax.set_title("gain: below 1 the gradient shrinks at each step back", fontsize=9)


def _horizon_panel(ax, x, entries, colors):
    horizons = np.array([e["horizon"] for e in entries])
    needed = np.array([e["needed"] if np.isfinite(e["needed"]) else e["seq"] for e in entries])
    finite = np.concatenate([horizons[np.isfinite(horizons)], needed[np.isfinite(needed)]])
    top = float(finite.max()) * 1.3 if finite.size and finite.max() > 0 else 10.0
    drawn = np.where(np.isinf(horizons), top, np.nan_to_num(horizons, nan=0.0))
    ax.bar(x, np.minimum(drawn, top), color=colors, width=0.6,
           hatch=["//" if np.isinf(h) else "" for h in horizons], edgecolor="white")
    first = True
    for xi, (h, need) in enumerate(zip(horizons, needed)):
        if np.isfinite(need):
            ax.hlines(need, xi - 0.4, xi + 0.4, color="#000000", lw=2.2,
                      label="needed (sequence length or Rules.min_horizon)" if first else None)
            first = False
        words = "∞" if np.isinf(h) else ("n/a" if np.isnan(h) else style.fmt(h))
        above = min(drawn[xi], top)
        if np.isfinite(need) and 0 <= need - above < 0.08 * top:
            above = need  # the label would sit on the tick: put it above instead
        ax.annotate(words, (xi, above), textcoords="offset points", xytext=(0, 3),
                    ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, top * 1.12)
    ax.set_ylabel("horizon (time steps back)")
    ax.set_title("horizon: steps back before the gradient falls below Rules.horizon_ratio", fontsize=9)
    if not first:
        ax.legend(fontsize=7, loc="upper right")


def draw(entries, title):
    x = np.arange(len(entries))
    width = min(max(5.5, 0.8 * len(entries) + 1.5), 14.0)
    fig, axes = style.new_figure(1, 2, width=width, height=4.4, flexible=True)
    # colour by verdict, in comparisons too: the run's name is in the tick label
    colors = [VERDICT_COLORS.get(e["verdict"], "#7f7f7f") for e in entries]
    _gain_panel(axes[0, 0], x, entries, colors)
    _horizon_panel(axes[0, 1], x, entries, colors)
    for ax in axes[0]:
        ax.set_xticks(x, [style.text(e["label"]) for e in entries], fontsize=8)
        pad = max(0.0, (3 - len(entries)) / 2)  # a lone bar stays bar-shaped
        ax.set_xlim(-0.6 - pad, len(entries) - 0.4 + pad)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=11)
    return fig


def figures(run):
    entries = bars([run], with_run_name=False)
    if not entries:
        return
    fig = draw(entries, title=style.text(f"{run.name}: gain and horizon per layer"))
    yield Plot("gain", "run", "Gain and horizon per layer",
               "Gain: the geometric mean of carried_t / total_(t+1), the share of the gradient that "
               "survives one step back. Horizon: how many steps back before it falls below the "
               "analyzer's ratio (hatched: never, the gain is at least 1). The black tick is the "
               "horizon needed (the sequence length unless Rules.min_horizon says otherwise). Colour: "
               "verdict (green healthy, blue vanishing, red exploding, magenta NaN/Inf).",
               fig)


def compare_figures(runs):
    entries = bars(runs, with_run_name=True)
    if not entries:
        return
    fig = draw(entries, title="Gain and horizon per layer, all runs")
    yield Plot("gain", "compare", "Gain and horizon per layer, all runs",
               "Per run and layer: the per-step gain (log axis, bars start at 1) and the horizon in time "
               "steps (hatched: never falls off; black tick: horizon needed). Colour: verdict (green "
               "healthy, blue vanishing, red exploding, magenta NaN/Inf).", fig)
