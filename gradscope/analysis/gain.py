"""Gain and horizon math on the timesteps rows of one part (module, layer, direction).

Everything here is pure numpy/pandas on tables; docs/analyze.md states the definitions.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

KEYS = ["step", "call", "t"]


def joint_state(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (step, call, t): the states combined as sqrt(sum of squared norms).

    For an LSTM this joins h and c: sqrt(|dL/dh|^2 + |dL/dc|^2) of the batch-mean norms, an
    approximation of the batch-mean norm of the joint gradient (exact for batch size 1). A
    NaN or Inf in any state makes the joint value NaN/Inf; nonfinite and batch take the max.
    """
    values = rows[KEYS].copy()
    for column in ("grad_norm", "carried_norm", "direct_norm"):
        values[column] = rows[column].to_numpy(dtype=float)
    values["batch"] = rows["batch"].to_numpy()
    values["nonfinite"] = rows["nonfinite"].to_numpy()
    norms = ["grad_norm", "carried_norm", "direct_norm"]
    if not values.duplicated(KEYS).any():  # one state (RNN, GRU): nothing to combine
        joint = values.sort_values(KEYS)
    else:
        # divided by the largest state's norm first, so that float64 norms near 1e-300 or
        # 1e+300 do not underflow or overflow when squared
        scale = values.groupby(KEYS, sort=True)[norms].max()
        scale = scale.where((scale > 0) & np.isfinite(scale), 1.0)
        row_scale = values.groupby(KEYS, sort=True)[norms].transform("max")
        row_scale = row_scale.where((row_scale > 0) & np.isfinite(row_scale), 1.0)
        squared = values.copy()
        squared[norms] = (values[norms] / row_scale) ** 2
        grouped = squared.groupby(KEYS, sort=True)
        joint = np.sqrt(grouped[norms].sum()) * scale
        # groupby sum skips NaN: a NaN in any state must poison the joint value instead
        poisoned = values[norms].isna().groupby([values[k] for k in KEYS], sort=True).any()
        joint = joint.mask(poisoned.to_numpy())
        joint["batch"] = grouped["batch"].max()
        joint["nonfinite"] = grouped["nonfinite"].max()
        joint = joint.reset_index()
    return joint.rename(columns={"grad_norm": "total", "carried_norm": "carried",
                                 "direct_norm": "direct"}).reset_index(drop=True)


def pair_ratios(joint: pd.DataFrame, direction: str, norm_floor: float) -> pd.DataFrame:
    """Per-step ratios carried_t / total_next with next = t+1 (forward) or t-1 (reverse),
    within the same (step, call). Rows with nonfinite > 0 at t or next, non-finite norms, or a
    next total below ``norm_floor`` are dropped.

    With packed batches the number of active sequences differs between t and next; the ratio
    is taken of sums over sequences: carried_t * batch_t / (total_next * min(batch_t,
    batch_next)). For the forward direction this is exact (the sequences without a next step
    carry nothing back); for the reverse direction it assumes the extra sequences at next
    have the same mean norm.

    Returns columns step, call, t, ratio (ratio may be 0 when nothing is carried back).
    """
    shift = 1 if direction != "reverse" else -1
    nxt = joint[["step", "call", "t", "total", "batch", "nonfinite"]].copy()
    nxt["t"] = nxt["t"] - shift
    pairs = joint.merge(nxt, on=KEYS, suffixes=("", "_next"))
    batch_now = pairs["batch"].to_numpy(dtype=float)
    batch_next = pairs["batch_next"].to_numpy(dtype=float)
    carried = pairs["carried"].to_numpy(dtype=float)
    total_next = pairs["total_next"].to_numpy(dtype=float)
    keep = ((pairs["nonfinite"].to_numpy() == 0) & (pairs["nonfinite_next"].to_numpy() == 0)
            & np.isfinite(carried) & np.isfinite(total_next) & (total_next > norm_floor)
            & (batch_now > 0) & (batch_next > 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = carried * batch_now / (total_next * np.minimum(batch_now, batch_next))
    out = pairs.loc[keep, KEYS].copy()
    out["ratio"] = ratio[keep]
    return out.reset_index(drop=True)


# A ratio of 0 (nothing carried back: dead relu units, a zero W_hh) counts as this, so one
# dead step among thousands lowers the mean of logs by a bounded amount instead of making it -inf.
RATIO_FLOOR = 1e-30


def geometric_mean(ratios) -> float:
    """exp(mean(log ratio)), ratios floored at RATIO_FLOOR; NaN if there are none."""
    values = np.asarray(ratios, dtype=float)
    if values.size == 0:
        return math.nan
    return float(np.exp(np.mean(np.log(np.maximum(values, RATIO_FLOOR)))))


def horizon(gain: float, horizon_ratio: float) -> float:
    """Steps back before gain**k falls below horizon_ratio: log(ratio)/log(gain) for
    0 < gain < 1 (a continuous number, extrapolated past the observed sequence), inf for
    gain >= 1, 0 for gain 0, NaN for an unknown gain."""
    if gain is None or not np.isfinite(gain):
        return math.inf if gain == math.inf else math.nan
    if gain >= 1.0:
        return math.inf
    if gain <= 0.0:
        return 0.0
    return math.log(horizon_ratio) / math.log(gain)


def sequence_length(rows: pd.DataFrame) -> int:
    """The longest sequence observed: the most distinct t in one (step, call)."""
    if rows.empty:
        return 0
    return int(rows.groupby(["step", "call"])["t"].nunique().max())
