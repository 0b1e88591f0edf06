"""One function per finding kind: each takes a measured Part and Rules, returns Findings."""

from __future__ import annotations

import math

import numpy as np

from gradscope.analysis import advice
from gradscope.analysis.diagnosis import Finding
from gradscope.analysis.flips import verdict_flips
from gradscope.analysis.gain import horizon as horizon_of
from gradscope.analysis.trend import trend
from gradscope.analysis.verdict import growth, is_exploding, is_vanishing

PLAIN_RNN = ("RNN_TANH", "RNN_RELU")
# a tracked state linked to a weights= entry of the same label: the bound holds for the
# tanh/relu step h_t = f(W h_{t-1} + ...) it is meant for
TRACK_NOTE = ("the weights= entry of the same label as the tracked state; the bound assumes the "
              "tracked step is h_t = tanh or relu(W h_(t-1) + ...)")


def _finding(part, kind, severity, message, evidence, advice_text=""):
    return Finding(kind=kind, severity=severity, module=part.module, layer=part.layer,
                   direction=part.direction, message=message, evidence=evidence,
                   advice=advice_text)


def _flagged(part, kind, test) -> bool:
    """The latest recorded step has verdict ``kind`` (the run as a whole passes ``test`` when the
    latest step's gain could not be measured). The run's history is told by ``trend``."""
    last = part.per_step["verdict"].iloc[-1]
    return test(part.numbers) if last == "unknown" else last == kind


def _gain_evidence(part, rules) -> dict:
    n = part.numbers
    evidence = {
        "gain": n["gain"], "horizon": n["horizon"],
        "horizon_extrapolated": n["horizon_extrapolated"],
        "required_horizon": n["required_horizon"], "seq_len": n["seq_len"],
        "horizon_ratio": rules.horizon_ratio, "method": n["method"], "pairs": n["pairs"],
        "max_grad_norm": n["max_grad_norm"], "sigma_max": n["sigma_max"],
        "verdict_step": n["verdict_step"], "gain_pooled": n["gain_pooled"],
        "horizon_pooled": n["horizon_pooled"],
    }
    return evidence


def vanishing(part, rules) -> list:
    """Horizon shorter than the required one, or gain below Rules.min_gain."""
    n = part.numbers

    def test(numbers):
        return is_vanishing(numbers["gain"], numbers["horizon"], numbers["required_horizon"],
                            rules)
    if not _flagged(part, "vanishing", test):
        return []
    gain, steps = n["gain"], n["horizon"]
    reach = (f"falls below {rules.horizon_ratio:g} of its size after {steps:.1f} steps"
             + (f" (extrapolated past the {n['seq_len']}-step sequence)"
                if n["horizon_extrapolated"] else ""))
    message = (f"the gradient shrinks by a factor {gain:.3g} per step back and {reach}; "
               f"needed: {n['required_horizon']:.0f} steps"
               + (f", and the gain is below min_gain={rules.min_gain:g}"
                  if gain < rules.min_gain else ""))
    evidence = {**_gain_evidence(part, rules), "min_gain": rules.min_gain,
                **trend(part, "vanishing")}
    window = advice.truncated_bptt(
        steps, "if the task needs no longer context: gradients from further back are below "
               f"{rules.horizon_ratio:g} of their size anyway, so it loses nothing measurable")
    if part.cell in PLAIN_RNN:
        text = advice.join(advice.orthogonal_init(part), advice.gated_cell(part), window)
    elif part.cell == "LSTM":
        forget = _latest_gate_mean(part, "f")
        # sigmoid(1) = 0.73: forget gates already above what bias 1.0 gives need a larger bias
        if math.isfinite(forget) and forget > 0.73:
            evidence["forget_gate_mean"] = forget
            text = advice.join(advice.chrono_forget_bias(part, n["required_horizon"], forget),
                               window)
        else:
            text = advice.join(advice.forget_bias(part), window)
    elif part.cell == "GRU":
        text = advice.join(advice.update_gate_bias(part), window)
    else:
        text = advice.join(advice.gated_cell(part), window)
    return [_finding(part, "vanishing", "error", message, evidence, text)]


def exploding(part, rules) -> list:
    """Gain above 1 + Rules.exploding_eps, growth over the horizon past Rules.max_growth, or a
    gradient norm past Rules.max_grad_norm."""
    n = part.numbers

    def test(numbers):
        return is_exploding(numbers["gain"], numbers["max_grad_norm"],
                            numbers["required_horizon"], rules)
    if not _flagged(part, "exploding", test):
        return []
    gain, over = n["gain"], growth(n["gain"], n["required_horizon"])
    reasons = []
    if math.isfinite(gain) and gain > 1.0 + rules.exploding_eps:
        reasons.append(f"the gradient grows by a factor {gain:.3g} per step back "
                       f"(bound 1 + exploding_eps = {1 + rules.exploding_eps:g})")
    elif over > rules.max_growth:  # NaN compares False
        reasons.append(f"a gain of {gain:.4g} compounds to {over:.3g}x over "
                       f"{n['required_horizon']:.0f} steps (bound max_growth="
                       f"{rules.max_growth:g})")
    if math.isfinite(n["max_grad_norm"]) and n["max_grad_norm"] > rules.max_grad_norm:
        reasons.append(f"a gradient norm of {n['max_grad_norm']:.3g} exceeds max_grad_norm="
                       f"{rules.max_grad_norm:g}")
    if not reasons:
        reasons.append(f"the latest recorded step is exploding (gain "
                       f"{part.per_step['gain'].iloc[-1]:.3g})")
    evidence = {**_gain_evidence(part, rules), "growth_over_required_horizon": over,
                "exploding_eps": rules.exploding_eps, "max_growth": rules.max_growth,
                "max_grad_norm_bound": rules.max_grad_norm, **trend(part, "exploding")}
    actions = [advice.clip(part, rules)]
    sigma = n["sigma_max"]
    if part.cell in PLAIN_RNN and math.isfinite(sigma) and sigma > 1.0:
        evidence["pascanu_note"] = ("sigma_max(W_hh) > 1 is necessary for exploding "
                                    "gradients in a tanh/relu RNN (Pascanu et al. 2013)")
        actions.append(f"bring sigma_max(W_hh) from {sigma:.3g} to 1: "
                       + advice.orthogonal_init(part))
    if math.isfinite(gain) and gain > 1.0:
        window = math.log(rules.max_growth) / math.log(gain)
        actions.append(advice.truncated_bptt(
            window, f"keeps the growth within {rules.max_growth:g}x"))
    message = "; ".join(reasons)
    return [_finding(part, "exploding", "error", message, evidence, advice.join(*actions))]


def nonfinite(part, rules) -> list:
    """NaN or Inf in the state gradients: where it first appeared and how much of it."""
    total = int(part.numbers["nonfinite"])
    if total <= 0:
        return []
    bad = part.rows[part.rows["nonfinite"] > 0]
    first_step = int(bad["step"].min())
    in_step = bad[bad["step"] == first_step]
    # the backward pass runs against the direction: a NaN enters at the latest t (forward)
    # or the earliest t (reverse) and is carried from there to the rest
    origin = int(in_step["t"].max() if part.direction != "reverse" else in_step["t"].min())
    steps_hit = int(bad["step"].nunique())
    evidence = {
        "nonfinite": total, "first_step": first_step, "first_t": origin,
        "t_range": [int(in_step["t"].min()), int(in_step["t"].max())],
        "first_call": int(in_step["call"].min()),
        "steps_with_nonfinite": steps_hit, "steps_recorded": int(part.numbers["steps"]),
    }
    message = (f"{total} sequence-time step(s) had a NaN/Inf gradient; first at step "
               f"{first_step}, entering the backward pass at t={origin} (affected t "
               f"{evidence['t_range'][0]}..{evidence['t_range'][1]}), in {steps_hit} of "
               f"{evidence['steps_recorded']} recorded steps")
    text = advice.join(
        f"find where it enters: run step {first_step} again under "
        f"`torch.autograd.set_detect_anomaly(True)`, and check the loss and targets at "
        f"t={origin} (mask padded positions; `torch.isfinite(loss).all()` before backward)",
        advice.clip(part, rules),
        "with torch.cuda.amp use GradScaler, which skips steps with Inf/NaN gradients")
    return [_finding(part, "nonfinite", "error", message, evidence, text)]


SATURATION_HINTS = {
    # (cell, gate, end) -> (severity, what it means, advice function or None)
    ("LSTM", "f", "low"): ("warning", "forget gates sit near 0: the cell state is wiped "
                                      "every step and carries no gradient back",
                           advice.forget_bias),
    ("LSTM", "f", "high"): ("info", "forget gates sit near 1: the cell state is kept (good "
                                    "for memory) but the forget gate's own weights learn slowly",
                            None),
    ("GRU", "z", "low"): ("warning", "update gates sit near 0: the state is replaced every "
                                     "step", advice.update_gate_bias),
    ("GRU", "z", "high"): ("info", "update gates sit near 1: the state is kept (good for "
                                   "memory) but barely updated", None),
}


def saturation(part, rules) -> list:
    """Gates whose activations mostly sit within 0.05 of a bound, at the latest step."""
    gates = part.gates
    if gates is None or gates.empty:
        return []
    latest_step = int(gates["step"].max())
    first_step = int(gates["step"].min())
    findings = []
    for gate, rows in gates.groupby("gate", sort=False):
        activation = str(rows["activation"].iloc[0])
        now = _shares(rows[rows["step"] == latest_step])
        then = _shares(rows[rows["step"] == first_step])
        for end in _saturated_ends(activation, now, rules):
            findings.append(_saturation_finding(part, gate, activation, end, now, then,
                                                latest_step, first_step, rules))
    return findings


def _latest_gate_mean(part, gate) -> float:
    gates = part.gates
    if gates is None or gates.empty:
        return math.nan
    rows = gates[(gates["gate"] == gate) & (gates["step"] == gates["step"].max())]
    return _shares(rows)["mean"] if not rows.empty else math.nan


def _shares(rows) -> dict:
    """Count-weighted low/high shares and mean over the calls of one step."""
    count = rows["count"].to_numpy(dtype=float)
    weight = count.sum()
    mean = lambda col: (float(np.nansum(rows[col].to_numpy(dtype=float) * count) / weight)
                        if weight > 0 and rows[col].notna().any() else math.nan)
    return {"low": mean("low"), "high": mean("high"), "mean": mean("mean"),
            "count": int(weight)}


def _saturated_ends(activation, shares, rules) -> list:
    if activation == "tanh":
        both = np.nansum([shares["low"], shares["high"]])
        return ["both"] if both > rules.saturation_share else []
    return [end for end in ("low", "high")
            if math.isfinite(shares[end]) and shares[end] > rules.saturation_share]


def _saturation_finding(part, gate, activation, end, now, then, step, first_step, rules):
    share = (np.nansum([now["low"], now["high"]]) if end == "both" else now[end])
    share_then = (np.nansum([then["low"], then["high"]]) if end == "both" else then[end])
    severity, meaning, fix = SATURATION_HINTS.get(
        (part.cell, gate, end), ("warning", None, None))
    if meaning is None:
        meaning, fix = _generic_saturation(part, gate, activation, end)
    evidence = {
        "gate": gate, "activation": activation, "end": end, "share": float(share),
        "share_low": now["low"], "share_high": now["high"], "mean": now["mean"],
        "count": now["count"], "step": step, "first_step": first_step,
        "share_at_first_step": float(share_then), "margin": 0.05,
        "saturation_share": rules.saturation_share,
    }
    message = (f"gate {gate} ({activation}): {share:.0%} of activations within 0.05 of "
               f"{_bound_words(activation, end)} at step {step}"
               + (f" (step {first_step}: {share_then:.0%})" if first_step != step else "")
               + f"; {meaning}")
    text = advice.join(fix(part)) if callable(fix) else advice.join(fix)
    return _finding(part, "saturation", severity, message, evidence, text)


def _bound_words(activation, end) -> str:
    if activation == "relu":
        return "0 (dead units)" if end == "low" else "its upper end"
    if activation == "tanh":
        return "-1 or +1"
    return {"low": "0", "high": "1"}.get(end, "its bounds")


def _generic_saturation(part, gate, activation, end):
    if activation == "relu" and end == "low":
        return ("these units are dead and carry no gradient",
                "switch to nonlinearity='tanh', or initialise the recurrent bias to a small "
                "positive value: " + _positive_bias(part))
    if activation == "tanh":
        return ("the derivative 1 - tanh^2 is below ~0.1 there, so the gradient through "
                "this gate nearly stops",
                "scale the inputs to unit variance and bring sigma_max(W_hh) to about 1 "
                f"({advice.orthogonal_init(part)})")
    return ("the gate's derivative is below ~0.05 there, so its weights barely learn",
            "scale the inputs to unit variance, or lower the learning rate if this grew "
            "during training")


def _positive_bias(part) -> str:
    bias = advice.param_expr(part, "bias_hh")
    if bias is None:
        return f"0.01 for the recurrent bias of {advice.where(part)}"
    return advice.code(f"torch.nn.init.constant_({bias}, 0.01)")


def spectral_bound(part, rules) -> list:
    """Pascanu et al. 2013: for a tanh or relu RNN, |f'| <= 1 so each step back multiplies
    the gradient by at most sigma_max(W_hh): sigma_max < 1 guarantees vanishing."""
    sigma = part.numbers["sigma_max"]
    if part.cell not in PLAIN_RNN + ("track",) or not math.isfinite(sigma) or sigma >= 1.0:
        return []
    bound = horizon_of(sigma, rules.horizon_ratio)
    required = part.numbers["required_horizon"]
    severity = "warning" if math.isfinite(required) and bound < required else "info"
    message = (f"sigma_max(W_hh) = {sigma:.4g} < 1: the gradient vanishes for any input "
               f"(Pascanu et al. 2013: with |f'| <= 1 each step back multiplies it by at most "
               f"sigma_max), so no input can make the horizon longer than {bound:.1f} steps")
    evidence = {"sigma_max": sigma, "horizon_bound": bound, "gain": part.numbers["gain"],
                "required_horizon": required, "horizon_ratio": rules.horizon_ratio}
    fix = advice.orthogonal_init(part)
    if part.cell == "track":
        evidence["weights_note"] = TRACK_NOTE
        # the weight is the user's own Parameter: name it as they passed it, not as a module path
        fix = (f"initialise the weight passed as weights={{{part.module!r}: ...}} orthogonally (apply "
               f"torch.nn.init.orthogonal_ to that Parameter) so that its sigma_max is 1")
    return [_finding(part, "spectral_bound", severity, message, evidence, advice.join(fix))]


def no_gain(part, rules) -> list:
    """A part whose gain could not be measured (too short, or no finite pairs)."""
    if part.numbers["verdict"] != "unknown":
        return []
    if part.numbers["method"] == "unmeasured":
        message = ("no gain could be measured: the carried part of the gradient was not recorded "
                   "(a run saved before scope.track measured it)")
    else:
        message = (f"no gain could be measured: {part.numbers['pairs']} usable (t, t+1) pairs "
                   f"in sequences of at most {part.numbers['seq_len']} step(s)")
    return [_finding(part, "no_data", "info", message,
                     {"pairs": part.numbers["pairs"], "seq_len": part.numbers["seq_len"]},
                     "Record sequences of at least 2 time steps with a finite gradient.")]


ALL = (nonfinite, exploding, vanishing, spectral_bound, saturation, no_gain, verdict_flips)
