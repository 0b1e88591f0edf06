"""Advice: concrete actions, with numbers, written as code the user can paste."""

from __future__ import annotations

import math

import numpy as np


def module_expr(part) -> str:
    """How the user reaches the module from their model: ``model.encoder.rnn``."""
    return "model" if not part.module else f"model.{part.module}"


def param_name(part, base) -> str:
    """``weight_hh_l1_reverse`` for a stacked module, ``weight_hh`` for a cell."""
    if part.info.get("kind") in ("cell", "custom", "track"):
        return base
    suffix = f"_l{part.layer}" + ("_reverse" if part.direction == "reverse" else "")
    return base + suffix


def round_sig(x, digits=2) -> float:
    if not (x and math.isfinite(x)) or x <= 0:
        return x
    return float(f"{x:.{digits}g}")


def clip_threshold(part, rules) -> float:
    """A max_norm for clip_grad_norm_: the ``rules.clip_quantile`` quantile of the nonzero
    finite direct norms (what the loss injects per step, not amplified through time); the
    same quantile of the total norms when the direct part is unknown (``track``)."""
    rows = part.rows[part.rows["nonfinite"] == 0]
    for column in ("direct_norm", "grad_norm"):
        values = rows[column].to_numpy(dtype=float)
        values = values[np.isfinite(values) & (values > 0)]
        if values.size:
            return round_sig(float(np.quantile(values, rules.clip_quantile)))
    return 1.0


def clip(part, rules) -> str:
    threshold = clip_threshold(part, rules)
    return (f"clip the gradient: torch.nn.utils.clip_grad_norm_(model.parameters(), "
            f"max_norm={threshold:g}) before optimizer.step() ({threshold:g} is the median "
            f"gradient the loss injects per step here; clip_grad_norm_ returns the norm before "
            f"clipping: log it and tune max_norm to its typical value)")


def truncated_bptt(steps, why) -> str:
    window = max(1, int(math.floor(steps))) if math.isfinite(steps) else None
    if window is None:
        return ""
    return (f"a truncated-BPTT window of about {window} steps (detach the state every "
            f"{window} steps: h = h.detach()) {why}")


def orthogonal_init(part) -> str:
    name = f"{module_expr(part)}.{param_name(part, 'weight_hh')}"
    return (f"initialise the recurrent weight orthogonally so that sigma_max(W_hh) = 1: "
            f"torch.nn.init.orthogonal_({name})")


def gated_cell(part) -> str:
    return ("switch to a gated cell (nn.LSTM or nn.GRU, same arguments), whose additive "
            "state path carries gradients over hundreds of steps")


def _gate_rows(part, gate_index, n_gates=4):
    size = part.info.get("hidden_size")
    if not size:
        return f"the rows of gate {gate_index} (of {n_gates} stacked)"
    return f"[{gate_index * size}:{(gate_index + 1) * size}]"


def forget_bias(part) -> str:
    rows = _gate_rows(part, 1)
    expr = module_expr(part)
    bias_ih, bias_hh = param_name(part, "bias_ih"), param_name(part, "bias_hh")
    return (f"set the forget-gate bias to 1.0 (Gers et al. 2000; Jozefowicz et al. 2015): "
            f"with torch.no_grad(): {expr}.{bias_ih}{rows}.fill_(1.0); "
            f"{expr}.{bias_hh}{rows}.zero_()")


def chrono_forget_bias(part, steps, forget_mean) -> str:
    """Forget gates already open but not open enough: f must be about 1 - 1/steps to keep the
    cell state over ``steps`` steps, i.e. a bias of log(steps) (chrono initialisation)."""
    rows = _gate_rows(part, 1)
    expr = module_expr(part)
    bias_ih, bias_hh = param_name(part, "bias_ih"), param_name(part, "bias_hh")
    bias = round_sig(math.log(max(steps, 2.0)) if math.isfinite(steps) else 3.0)
    return (f"the forget gates already average {forget_mean:.2f}; to keep the cell state "
            f"over {steps:.0f} steps set the forget-gate bias to log({steps:.0f}) = {bias:g} "
            f"(chrono initialisation, Tallec & Ollivier 2018): with torch.no_grad(): "
            f"{expr}.{bias_ih}{rows}.fill_({bias:g}); {expr}.{bias_hh}{rows}.zero_()")


def update_gate_bias(part) -> str:
    rows = _gate_rows(part, 1, n_gates=3)
    expr = module_expr(part)
    bias_ih, bias_hh = param_name(part, "bias_ih"), param_name(part, "bias_hh")
    return (f"set the update-gate bias to 1.0 so that z starts near 0.73 and the state is "
            f"kept (h' = (1-z)*n + z*h): with torch.no_grad(): "
            f"{expr}.{bias_ih}{rows}.fill_(1.0); {expr}.{bias_hh}{rows}.zero_()")


def join(*actions) -> str:
    actions = [a for a in actions if a]
    if not actions:
        return ""
    text = "; or ".join(actions)
    return text[0].upper() + text[1:] + "."
