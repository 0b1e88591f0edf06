"""Gain and horizon per layer: the two numbers a verdict rests on.

The verdict follows the latest recorded step (see gradscope/analysis/measures.py), so the bars
show that step's gain and horizon; the value pooled over all recorded steps is a secondary
mark. Colour means the same as in every other figure of the page (the run in a comparison,
the part in a single-run report); the verdict is written under each bar and a bar whose
verdict is not healthy is hatched."""

import math

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from gradscope.reporting.plots import style
from gradscope.reporting.plots.base import Plot, part_label, run_part_label
from gradscope.display import fmt, steps_back

MAX_BARS = 48
NOT_HEALTHY_HATCH = "xx"
POOLED_MARK = dict(marker="D", ms=5, mfc="white", mec="#000000", mew=1.2, ls="none", zorder=4)
VERDICT_SIGN = {"healthy": "✓"}  # every other verdict gets ✗


def bars(runs, with_run_name):
    """One entry per summary row (module, layer, direction) of each run: ``gain``/``horizon``
    are what the verdict rests on (``basis`` says which: the step named in the summary's
    ``verdict_step``, or all steps pooled where that step had no measurable gain),
    ``pooled_*`` the values over all steps."""
    out = []
    for i, run in enumerate(runs):
        summary = run.summary
        if summary.empty or "gain" not in summary:
            continue
        for part, row in enumerate(summary.to_dict("records")):
            module, layer = row.get("module", ""), int(row.get("layer", 0))
            direction = row.get("direction", "forward")
            label = bar_label(run, module, layer, direction, with_run_name).replace(" · ", "\n")
            step = _num(row.get("verdict_step"))
            on_step = np.isfinite(step)
            out.append(dict(label=label, run=i, part=part, verdict=str(row.get("verdict", "")),
                            basis="latest" if on_step else "pooled",
                            step=int(step) if on_step else None,
                            gain=_num(row.get("gain")), horizon=_num(row.get("horizon")),
                            pooled_gain=_num(row.get("gain_pooled", row.get("gain"))),
                            pooled_horizon=_num(row.get("horizon_pooled", row.get("horizon"))),
                            steps=int(_num(row.get("steps")) if np.isfinite(_num(row.get("steps"))) else 1),
                            seq=_num(row.get("seq_len")), needed=_num(row.get("required_horizon"))))
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


def shows_pooled(entry):
    """The pooled mark is drawn only where it differs from the bar: several steps, latest basis."""
    return entry["basis"] == "latest" and entry["steps"] > 1


def gain_limits(entries):
    """Log-axis limits fitted to the gains drawn (bars, pooled marks and the line at 1), with
    room at the bottom for the words under the bars."""
    values = [1.0]
    for e in entries:
        values += [v for v in (e["gain"], e["pooled_gain"] if shows_pooled(e) else math.nan)
                   if np.isfinite(v) and v > 0]
    return min(values) / 1.3, max(values) * 1.06  # the words sit in the room at the bottom


def _hatches(entries):
    return [NOT_HEALTHY_HATCH if e["verdict"] != "healthy" else "" for e in entries]


def _gain_panel(ax, x, entries, colors):
    gains = np.array([e["gain"] for e in entries])
    shown = np.where(np.isfinite(gains) & (gains > 0), gains, np.nan)
    # bars start at 1 (no change): down for a shrinking gradient, up for a growing one
    ax.bar(x, np.nan_to_num(shown, nan=1.0) - 1.0, bottom=1.0, color=colors, width=0.6,
           hatch=_hatches(entries), edgecolor="#333333", linewidth=0.6)
    for xi, e in enumerate(entries):
        if shows_pooled(e) and np.isfinite(e["pooled_gain"]) and e["pooled_gain"] > 0:
            ax.plot([xi], [e["pooled_gain"]], **POOLED_MARK)
    ax.axhline(1.0, color=style.ZERO_LINE, ls="--", lw=1)
    style.log_y(ax)
    ax.set_ylim(*gain_limits(entries))
    style.ratio_ticks(ax)
    for xi, e in enumerate(entries):  # along the bottom edge, where no bar or mark can be
        words = ("gain n/a" if not np.isfinite(e["gain"]) else f"{e['gain']:.3g}") + "\n" + verdict_words(e)
        ax.text(xi, 0.015, words, transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=7,
                bbox=dict(facecolor="white", alpha=0.85, edgecolor="none", pad=1))
    ax.set_ylabel("per-step gain (× per step back)")
    ax.set_title("gain: below 1 the gradient shrinks at each step back", fontsize=9)


def verdict_words(entry):
    return f"{VERDICT_SIGN.get(entry['verdict'], '✗')} {entry['verdict'] or 'no verdict'}"


def _horizon_panel(ax, x, entries, colors):
    horizons = np.array([e["horizon"] for e in entries])
    pooled = np.array([e["pooled_horizon"] if shows_pooled(e) else np.nan for e in entries])
    needed = np.array([e["needed"] if np.isfinite(e["needed"]) else e["seq"] for e in entries])
    finite = np.concatenate([horizons[np.isfinite(horizons)], needed[np.isfinite(needed)],
                             pooled[np.isfinite(pooled)]])
    top = float(finite.max()) * 1.3 if finite.size and finite.max() > 0 else 10.0
    drawn = np.where(np.isinf(horizons), top, np.nan_to_num(horizons, nan=0.0))
    bars_ = ax.bar(x, np.minimum(drawn, top), color=colors, width=0.6, hatch=_hatches(entries),
                   edgecolor="#333333", linewidth=0.6)
    for bar, h in zip(bars_, horizons):
        if np.isinf(h):
            bar.set_alpha(0.45)  # never falls off: the bar runs off the top, faded
    for xi, p in enumerate(pooled):
        if not np.isnan(p):
            ax.plot([xi], [min(p, top)], **POOLED_MARK)
    first = True
    for xi, (h, need) in enumerate(zip(horizons, needed)):
        if np.isfinite(need):
            ax.hlines(need, xi - 0.4, xi + 0.4, color="#000000", lw=2.2,
                      label="needed (sequence length or Rules.min_horizon)" if first else None)
            first = False
        words = "∞ ↑" if np.isinf(h) else ("n/a" if np.isnan(h) else horizon_words(h))
        above = min(drawn[xi], top)
        if np.isfinite(need) and 0 <= need - above < 0.08 * top:
            above = need  # the label would sit on the tick: put it above instead
        ax.annotate(words, (xi, above), textcoords="offset points", xytext=(0, 3),
                    ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, top * 1.12)
    ax.set_ylabel("horizon (time steps back)")
    ax.set_title("horizon: steps back before the gradient falls below Rules.horizon_ratio", fontsize=9)


def horizon_words(h):
    """1259, not 1.26e+03: a horizon is a count of steps."""
    return steps_back(h) if h >= 100 else fmt(h)


def legend_handles(entries, with_needed):
    handles = []
    if with_needed:
        handles.append(Line2D([], [], color="#000000", lw=2.2, label="horizon needed"))
    if any(shows_pooled(e) for e in entries):
        handles.append(Line2D([], [], **POOLED_MARK, label="pooled over all recorded steps"))
    if any(e["verdict"] != "healthy" for e in entries):
        handles.append(Patch(facecolor="white", edgecolor="#333333", hatch=NOT_HEALTHY_HATCH,
                             label="verdict not healthy"))
    return handles


def bar_colors(entries, by_run):
    """The run's colour in a comparison (as in every overlaid figure), else the part's (as in
    the gain-over-training lines of the same page)."""
    return [style.series_color(e["run"] if by_run else e["part"]) for e in entries]


def draw(entries, title, by_run):
    x = np.arange(len(entries))
    width = min(max(5.5, 0.8 * len(entries) + 1.5), 14.0)
    fig, axes = style.new_figure(1, 2, width=width, height=4.4, flexible=True)
    colors = bar_colors(entries, by_run)
    _gain_panel(axes[0, 0], x, entries, colors)
    _horizon_panel(axes[0, 1], x, entries, colors)
    for ax in axes[0]:
        ax.set_xticks(x, [style.text(e["label"]) for e in entries], fontsize=8)
        pad = max(0.0, (3 - len(entries)) / 2)  # a lone bar stays bar-shaped
        ax.set_xlim(-0.6 - pad, len(entries) - 0.4 + pad)
        ax.grid(True, axis="y", alpha=0.3)
    handles = legend_handles(entries, any(np.isfinite(e["needed"]) or np.isfinite(e["seq"]) for e in entries))
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=11)
    return fig


def basis_words(entries):
    """What the bars are, for the caption: the latest step's values, or where a verdict does
    not follow the latest step (NaN/Inf anywhere, or a latest step that could not be measured),
    the pooled ones."""
    steps = sorted({e["step"] for e in entries if e["basis"] == "latest"})
    pooled = [e for e in entries if e["basis"] == "pooled"]
    if not pooled:
        at = f" (training step {steps[0]})" if len(steps) == 1 else ""
        words = f"Bars: the gain and horizon of the latest recorded step{at}, the values the verdict rests on"
    elif len(pooled) == len(entries):
        words = "Bars: the gain and horizon pooled over all recorded steps, the values the verdict rests on"
    else:
        words = ("Bars: the values each verdict rests on: the latest recorded step's, or pooled over all "
                 "recorded steps where the verdict is judged on the whole run (NaN/Inf, or a latest step "
                 "that could not be measured)")
    if any(shows_pooled(e) for e in entries):
        words += "; white diamonds: the same pooled over all recorded steps"
    return words + "."


LEGEND_WORDS = ("Gain: the geometric mean of carried_t / total_(t+1), the share of the gradient that "
                "survives one step back (log axis; bars start at 1). Horizon: how many steps back before "
                "it falls below the analyzer's ratio (a faded bar with ∞: never, the gain is at least 1). "
                "The black tick is the horizon needed (the sequence length unless Rules.min_horizon says "
                "otherwise). The verdict is written under each gain; hatched bars are not healthy.")


def figures(run):
    entries = bars([run], with_run_name=False)
    if not entries:
        return
    fig = draw(entries, title=style.text(f"{run.name}: gain and horizon per layer"), by_run=False)
    yield Plot("gain", "run", "Gain and horizon per layer",
               f"{basis_words(entries)} {LEGEND_WORDS} Colour: the layer, as in the gain over training.",
               fig)


def compare_figures(runs):
    entries = bars(runs, with_run_name=True)
    if not entries:
        return
    fig = draw(entries, title="Gain and horizon per layer, all runs", by_run=True)
    yield Plot("gain", "compare", "Gain and horizon per layer, all runs",
               f"{basis_words(entries)} {LEGEND_WORDS} Colour: the run, as in every figure of this page.",
               fig)
