"""Where a NaN/Inf gradient came from, told from the forward side (the ``forward_nonfinite``
table): the input, a layer's state, or after the module (the loss). The backward pass alone
cannot tell: a NaN in the input at t=3 makes the loss NaN, and the gradient then meets it first
at the last t. Each origin has its own remedy; clipping the gradient fixes none of them."""

from __future__ import annotations

import dataclasses

import pandas as pd

from gradscope.analysis.diagnosis import Finding

SANITY_CHECK = "`torch.isfinite(loss).all()` before backward"


def trace_nonfinite(finding: Finding, forward: "pd.DataFrame | None", meta: dict) -> Finding:
    """``finding`` (kind ``nonfinite``) with message, evidence and advice from the forward side,
    or unchanged when the forward side was not recorded for its module.

    Args:
        finding: a ``nonfinite`` Finding (evidence holds ``first_step`` and ``first_t``).
        forward: the source's ``forward_nonfinite`` table, or None when it has none.
        meta: the source's meta; only modules stepped by the exact route of nn.RNN/GRU/LSTM
            (``kind == "module"``) record the forward side.
    Returns:
        A new Finding, or ``finding`` itself.
    """
    info = (meta.get("modules") or {}).get(finding.module) or {}
    if finding.kind != "nonfinite" or forward is None or info.get("kind") != "module":
        return finding
    step, origin = finding.evidence.get("first_step"), finding.evidence.get("first_t")
    rows = forward[(forward["module"] == finding.module) & (forward["step"] == step)]
    where = finding.module or "the model"
    inputs = rows[rows["place"] == "input"].sort_values(["call", "t"])
    outputs = rows[rows["place"] == "output"].sort_values(["call", "t", "layer"])
    if len(inputs):
        first = inputs.iloc[0]
        evidence = _evidence(finding, "input", first)
        message = (f"the input to {where} holds NaN/Inf at t={first['t']} ({_sequences(first)}) "
                   f"in step {step}: the forward pass is non-finite from there on, and so are "
                   f"the loss and the gradient (which the backward pass meets first at "
                   f"t={origin}, the end of the sequence)")
        advice = (f"Clean the data: the batch of step {step} holds NaN/Inf at t={first['t']} "
                  f"({_sequences(first)}); test each batch with `torch.isfinite(x).all()` before "
                  "the forward pass and drop those sequences, fill the values "
                  "(`x = torch.nan_to_num(x)`, or an imputed value) or mask them out of the loss. "
                  "Clipping the gradient cannot fix a non-finite loss.")
    elif len(outputs):
        first = outputs.iloc[0]
        evidence = _evidence(finding, "state", first)
        message = (f"the input to {where} is finite, but layer {first['layer']}'s state "
                   f"becomes NaN/Inf at t={first['t']} ({_sequences(first)}) in step {step}: "
                   "the forward pass overflows inside the recurrence")
        advice = ("The forward pass itself goes non-finite: check that every weight is finite "
                  "(`all(torch.isfinite(p).all() for p in model.parameters())`); a NaN weight "
                  "comes from an earlier update: reload the last finite checkpoint and lower "
                  "the learning rate, or clip the gradient so no update is that large "
                  "(`torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)`). A relu RNN can overflow without bound: use "
                  "nonlinearity='tanh' or an orthogonal W_hh. Under autocast (float16), run the "
                  "recurrent layer in float32.")
    else:
        evidence = {**finding.evidence, "origin": "after the module"}
        message = (f"the forward pass of {where} is finite at every t (input and states) in "
                   f"step {step}, so the NaN/Inf enters after it: in the loss, the targets or "
                   f"the layers between the output and the loss; the backward pass meets it "
                   f"first at t={origin}")
        advice = (f"Check the loss and the targets at t={origin}: {SANITY_CHECK}; mask padded "
                  "positions (padding targets of NaN or -inf); look for log(0), division by "
                  "zero or sqrt of a negative number in the loss. Clipping the gradient cannot "
                  "fix a non-finite loss. With torch.cuda.amp, use GradScaler, which skips "
                  "steps whose gradients overflow.")
    e = finding.evidence
    seen = (f"{e.get('nonfinite')} sequence-time step(s) had a NaN/Inf gradient (t "
            f"{e['t_range'][0]}..{e['t_range'][1]}) in {e.get('steps_with_nonfinite')} of "
            f"{e.get('steps_recorded')} recorded step(s); ") if "t_range" in e else ""
    return dataclasses.replace(finding, message=seen + message, evidence=evidence, advice=advice)


def _sequences(row) -> str:
    listed = str(row["sequences"])
    more = int(row["nonfinite"]) - len(listed.split(","))
    return (f"sequence(s) {listed}" + (f" and {more} more" if more > 0 else "")
            + (f" of call {row['call']}" if int(row["call"]) else ""))


def _evidence(finding, origin, row) -> dict:
    return {**finding.evidence, "origin": origin, "forward_first_t": int(row["t"]),
            "forward_layer": int(row["layer"]), "forward_call": int(row["call"]),
            "forward_sequences": str(row["sequences"]),
            "forward_nonfinite": int(row["nonfinite"])}
