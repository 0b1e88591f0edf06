"""The numbers behind the verdicts: per part (module, layer, direction), overall and per step."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from gradscope.analysis import gain as gainmath
from gradscope.analysis.flips import verdict_changes
from gradscope.analysis.verdict import verdict
from gradscope.display import module_label

PART = ["module", "layer", "direction"]


@dataclass
class Part:
    """Everything the findings need about one (module, layer, direction)."""

    module: str
    layer: int
    direction: str
    cell: str
    rows: pd.DataFrame            # its timesteps rows
    gates: pd.DataFrame           # its gates rows (may be empty)
    per_step: pd.DataFrame        # one row per recorded step
    info: dict = field(default_factory=dict)      # meta["modules"][module]: kind, hidden_size
    numbers: dict = field(default_factory=dict)   # the summary row

    @property
    def label(self) -> str:
        return f"{module_label(self.module)} layer {self.layer} {self.direction}"


def part_numbers(rows: pd.DataFrame, direction: str, rules):
    """The numbers of a set of timesteps rows, for all of them and per recorded step.

    Returns (overall, per_step): overall is a dict with gain, horizon, max_grad_norm,
    nonfinite, method, pairs; per_step a DataFrame with the same columns plus ``step``.

    gain: geometric mean over every valid (step, call, t) pair of carried_t / total_next of
    the joint state (see gain.pair_ratios); NaN where carried is unknown (method
    ``unmeasured``: runs recorded before ``track`` measured the carried part).
    max_grad_norm: largest finite joint total norm. nonfinite: sum over (step, call, t) of
    the sequences with a NaN/Inf gradient (for LSTM the max of h and c)."""
    joint = gainmath.joint_state(rows)
    steps = np.sort(joint["step"].unique())
    # where carried is unknown (a run recorded before track measured it) no gain can be read:
    # NaN ratios are dropped, so the gain is NaN and the verdict "unknown", never "healthy"
    method = "ratio" if rows["carried_norm"].notna().any() else "unmeasured"
    ratios = gainmath.pair_ratios(joint, direction, rules.norm_floor)
    gain, pairs = gainmath.geometric_mean(ratios["ratio"]), len(ratios)
    logs = np.log(np.maximum(ratios["ratio"].to_numpy(dtype=float), gainmath.RATIO_FLOOR))
    by_step = pd.Series(logs, index=ratios["step"].to_numpy(), dtype=float).groupby(level=0)
    step_gain = np.exp(by_step.mean()).reindex(steps)
    step_pairs = by_step.size().reindex(steps, fill_value=0)
    total = joint["total"].to_numpy(dtype=float)
    ok = np.isfinite(total) & (joint["nonfinite"].to_numpy() == 0)
    step_max = pd.Series(total[ok], index=joint["step"].to_numpy()[ok]).groupby(
        level=0).max().reindex(steps)
    step_nonfinite = joint.groupby("step")["nonfinite"].sum().reindex(steps, fill_value=0)
    overall = {
        "gain": float(gain),
        "horizon": float(gainmath.horizon(gain, rules.horizon_ratio)),
        "max_grad_norm": float(total[ok].max()) if ok.any() else math.nan,
        "nonfinite": int(joint["nonfinite"].sum()),
        "method": method,
        "pairs": int(pairs),
    }
    per_step = pd.DataFrame({
        "step": steps.astype(int),
        "gain": step_gain.to_numpy(dtype=float),
        "horizon": [float(gainmath.horizon(g, rules.horizon_ratio)) for g in step_gain],
        "max_grad_norm": step_max.to_numpy(dtype=float),
        "nonfinite": step_nonfinite.to_numpy().astype(int),
        "method": method,
        "pairs": step_pairs.to_numpy().astype(int),
    })
    return overall, per_step


def latest_sigma_max(spectra: pd.DataFrame, module, layer, direction) -> float:
    """sigma_max of the recurrent weight at the latest recorded step: gate ``hh`` (RNN), else
    ``all`` (the stacked matrix of a gated cell), else the only gate there is; NaN if none."""
    if spectra is None or spectra.empty:
        return math.nan
    mine = spectra[(spectra["module"] == module) & (spectra["layer"] == layer)
                   & (spectra["direction"] == direction)]
    if mine.empty:
        return math.nan
    mine = mine[mine["step"] == mine["step"].max()]
    for gate in ("hh", "all"):
        chosen = mine[mine["gate"] == gate]
        if not chosen.empty:
            return float(chosen["sigma_max"].iloc[-1])
    if mine["gate"].nunique() == 1:
        return float(mine["sigma_max"].iloc[-1])
    return math.nan


def build_parts(timesteps, spectra, gates, meta, rules) -> list:
    """One Part per (module, layer, direction) in ``timesteps``, in table order."""
    parts = []
    if timesteps is None or timesteps.empty:
        return parts
    gate_groups = {}
    if gates is not None and not gates.empty:
        gate_groups = {key: rows for key, rows in gates.groupby(PART, sort=False)}
    for key, rows in timesteps.groupby(PART, sort=False):
        module, layer, direction = key
        part = Part(module=module, layer=int(layer), direction=direction,
                    cell=str(rows["cell"].iloc[0]), rows=rows,
                    gates=gate_groups.get(key, _empty_like(gates)),
                    per_step=pd.DataFrame(), info=_module_info(meta, module))
        _fill_numbers(part, spectra, rules)
        parts.append(part)
    return parts


def _fill_numbers(part, spectra, rules):
    seq_len = gainmath.sequence_length(part.rows)
    required = rules.required_horizon(seq_len)
    overall, per_step = part_numbers(part.rows, part.direction, rules)
    overall_verdict = verdict(overall["gain"], overall["horizon"], overall["max_grad_norm"],
                              overall["nonfinite"], required, rules)
    per_step["verdict"] = [
        verdict(row.gain, row.horizon, row.max_grad_norm, row.nonfinite, required, rules)
        for row in per_step.itertuples()]
    for column, value in (("module", part.module), ("layer", part.layer),
                          ("direction", part.direction), ("cell", part.cell)):
        per_step[column] = value
    part.per_step = per_step
    first, last = part.per_step["verdict"].iloc[0], part.per_step["verdict"].iloc[-1]
    shown, verdict_step = _verdict_numbers(overall, per_step)
    part.numbers = {
        "module": part.module, "layer": part.layer, "direction": part.direction,
        "cell": part.cell, **shown,
        "horizon_extrapolated": bool(math.isfinite(shown["horizon"])
                                     and shown["horizon"] > seq_len),
        # a NaN/Inf anywhere in the run makes the verdict nonfinite, so the count is the run's
        "nonfinite": overall["nonfinite"], "method": overall["method"],
        "seq_len": int(seq_len), "required_horizon": float(required),
        "sigma_max": latest_sigma_max(spectra, part.module, part.layer, part.direction),
        "steps": int(len(part.per_step)),
        "first_verdict": first, "last_verdict": last,
        # the current state decides (a run that degraded is not healthy, one that recovered is);
        # a NaN/Inf anywhere in the run keeps the verdict nonfinite, and a latest step whose gain
        # cannot be measured falls back to the run as a whole
        "verdict": _current_verdict(overall_verdict, last),
        "verdict_step": verdict_step,
        **{f"{key}_pooled": overall[key] for key in POOLED},
        "flips": len(verdict_changes(per_step)),
    }


# the numbers the verdict rests on: the latest step's, or the pooled ones when that step has no gain
POOLED = ("gain", "horizon", "max_grad_norm", "pairs")


def _verdict_numbers(overall, per_step):
    """(numbers, step): the gain, horizon, max_grad_norm and pairs of the latest recorded step
    and its step number; the pooled numbers over all steps and None when the latest step's
    gain could not be measured (then the pooled numbers decide the verdict)."""
    latest = per_step.iloc[-1]
    if latest["verdict"] == "unknown":
        return {key: overall[key] for key in POOLED}, None
    return ({"gain": float(latest["gain"]), "horizon": float(latest["horizon"]),
             "max_grad_norm": float(latest["max_grad_norm"]), "pairs": int(latest["pairs"])},
            int(latest["step"]))


def _current_verdict(overall_verdict, last_verdict) -> str:
    if overall_verdict == "nonfinite":
        return "nonfinite"
    return overall_verdict if last_verdict == "unknown" else last_verdict


def _module_info(meta, module) -> dict:
    modules = (meta or {}).get("modules") or {}
    info = modules.get(module)
    return dict(info) if isinstance(info, dict) else {}


def _empty_like(frame):
    return frame.iloc[0:0] if frame is not None else pd.DataFrame()
