"""Verdicts that change from one recorded step to the next: the finding ``verdict_flips``.

The summary's verdict is the latest step's. When the per-step verdicts of a part change across
the run (a GRU whose horizon hovers around the required one: vanishing, healthy, vanishing, ...),
that single verdict hides the history, so this finding tells it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from gradscope.analysis.diagnosis import Finding

# at most this many changes are spelled out in the message; the evidence keeps them all
SPELLED_OUT = 6


def verdict_changes(per_step: pd.DataFrame) -> list:
    """The changes of verdict between consecutive recorded steps, ``unknown`` steps skipped
    (no gain measured there: no verdict to compare).

    Args:
        per_step: one row per recorded step with ``step`` and ``verdict``, in step order.

    Returns:
        A list of ``(step, before, after)``: at ``step`` the verdict became ``after``; it was
        ``before`` at the previous recorded step that had one.
    """
    if per_step is None or per_step.empty:
        return []
    known = per_step[per_step["verdict"] != "unknown"]
    steps = known["step"].to_numpy()
    verdicts = known["verdict"].to_numpy()
    return [(int(steps[i]), str(verdicts[i - 1]), str(verdicts[i]))
            for i in range(1, len(verdicts)) if verdicts[i] != verdicts[i - 1]]


def verdict_flips(part, rules) -> list:
    """A finding when the per-step verdicts of ``part`` change across recorded steps: info for
    one change (the run degraded or recovered once), warning for two or more (it goes back and
    forth, so the latest step's verdict is one draw among several)."""
    changes = verdict_changes(part.per_step)
    if not changes:
        return []
    steps = part.per_step
    known = steps[steps["verdict"] != "unknown"]
    counts = known["verdict"].value_counts(sort=False)
    counts = {str(verdict): int(counts[verdict]) for verdict in dict.fromkeys(known["verdict"])}
    latest = known.iloc[-1]
    required = part.numbers["required_horizon"]
    gains, horizons = _range(known["gain"]), _range(known["horizon"])
    severity = "warning" if len(changes) >= 2 else "info"
    evidence = {
        "flips": len(changes), "steps_recorded": int(len(steps)),
        "flip_steps": [step for step, _, _ in changes],
        "verdict_counts": counts,
        "latest_step": int(latest["step"]), "latest_verdict": str(latest["verdict"]),
        "gain_range": gains, "horizon_range": horizons, "required_horizon": required,
        "changes": _spell(changes),
    }
    message = (f"the per-step verdict changed {len(changes)} time(s) over {len(steps)} recorded "
               f"steps ({', '.join(f'{n} {v}' for v, n in counts.items())}); per step the gain "
               f"ranged {gains[0]:.4g}..{gains[1]:.4g} and the horizon "
               f"{horizons[0]:.4g}..{horizons[1]:.4g} steps"
               + (f" against {required:.0f} needed" if math.isfinite(required) else "")
               + f"; the summary's verdict is the latest step's (step {int(latest['step'])}: "
                 f"{latest['verdict']})")
    advice = ("Judge this part on more than its latest step: `diagnosis.per_step()` lists every "
              "recorded step's numbers and verdict, and the summary's gain_pooled and "
              "horizon_pooled pool them all. "
              + ("A part that goes back and forth sits at a threshold: apply the fix for the "
                 "worse verdict if the task needs the full required horizon, or set "
                 "Rules.min_horizon to the dependency length it needs; record more steps (a "
                 "smaller every=) to see which way it is heading."
                 if severity == "warning" else
                 "One change is a trend (the run degraded or recovered): the latest step is "
                 "the model as it is now."))
    return [Finding(kind="verdict_flips", severity=severity, module=part.module,
                    layer=part.layer, direction=part.direction, message=message,
                    evidence=evidence, advice=advice)]


def _range(values) -> list:
    values = values.to_numpy(dtype=float)
    values = values[~np.isnan(values)]
    return [float(values.min()), float(values.max())] if values.size else [math.nan, math.nan]


def _spell(changes) -> str:
    words = [f"step {step}: {before} -> {after}" for step, before, after in changes[:SPELLED_OUT]]
    more = len(changes) - SPELLED_OUT
    return "; ".join(words) + (f"; and {more} more" if more > 0 else "")
