"""Advice: concrete actions, with numbers, and the code for them the user can paste.

Every piece of code sits between backticks in the advice text (``Finding.code`` lists them) and
is valid Python that runs as written with these names bound (docs/analyze.md, "Advice code"):
``model`` (the module given to ``gradscope.watch``), ``torch``, ``optimizer``, ``loss`` (the
loss tensor of the step), ``h`` (the recurrent state in the user's loop) and ``diagnosis``
(the Diagnosis the advice came from). A part gradscope cannot reach from ``model`` (a
``track`` label, a custom cell, whose weights have no known names) gets the action in words.
"""

from __future__ import annotations

import keyword
import math
import re

import numpy as np

# the parts whose parameters have PyTorch's stock names (weight_hh_l0, bias_ih, ...)
STOCK_KINDS = ("module", "cell")


def code(snippet: str) -> str:
    """``snippet`` marked as code in advice text (Finding.code finds it again)."""
    return f"`{snippet}`"


def path_expr(qualified_name: str, root: str = "model") -> str:
    """The Python expression that reaches the submodule ``qualified_name`` (as
    ``named_modules()`` spells it) from ``root``.

    Args:
        qualified_name: e.g. ``"encoder.layers.0.rnn"``; ``""`` is the root itself.
        root: the name the root module is bound to.

    Returns:
        ``model.encoder.layers[0].rnn``: identifiers as attributes, positions (the names
        nn.Sequential and nn.ModuleList give their children) as indices;
        ``model.get_submodule("...")`` when a name is neither (``"my rnn"``, ``"class"``).
    """
    if not qualified_name:
        return root
    expr = root
    for name in qualified_name.split("."):
        if name.isidentifier() and not keyword.iskeyword(name):
            expr += f".{name}"
        elif re.fullmatch(r"0|[1-9][0-9]*", name):
            expr += f"[{name}]"
        else:
            return f"{root}.get_submodule({qualified_name!r})"
    return expr


def module_expr(part):
    """How the user reaches the part's module from their model (``model[1].rnn``), or None
    when it has no stock parameter names to act on (a ``track`` label, a custom cell)."""
    if part.info.get("kind", "module") not in STOCK_KINDS:
        return None
    return path_expr(part.module)


def param_name(part, base) -> str:
    """``weight_hh_l1_reverse`` for a stacked module, ``weight_hh`` for a cell."""
    if part.info.get("kind") in ("cell", "custom", "track"):
        return base
    suffix = f"_l{part.layer}" + ("_reverse" if part.direction == "reverse" else "")
    return base + suffix


def param_expr(part, base):
    """``model[1].weight_hh_l0``, or None when the part has no stock parameter names."""
    expr = module_expr(part)
    return None if expr is None else f"{expr}.{param_name(part, base)}"


def where(part) -> str:
    """The part in words, for actions that cannot be written as code."""
    if part.info.get("kind") == "track":
        return f"the state tracked as {part.module!r}"
    return f"{part.module or 'the model'} ({part.cell})"


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
    return (f"clip the gradient: "
            f"{code(f'torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm={threshold:g})')}"
            f" before {code('optimizer.step()')} ({threshold:g} is the median gradient the loss "
            f"injects per step here; clip_grad_norm_ returns the norm before clipping: log it "
            f"and tune max_norm to its typical value)")


def truncated_bptt(steps, why) -> str:
    window = max(1, int(math.floor(steps))) if math.isfinite(steps) else None
    if window is None:
        return ""
    return (f"a truncated-BPTT window of about {window} steps (detach the state every "
            f"{window} steps: {code('h = h.detach()')}) {why}")


def orthogonal_init(part) -> str:
    name = param_expr(part, "weight_hh")
    if name is None:
        return (f"initialise the recurrent weight of {where(part)} orthogonally so that "
                f"sigma_max(W_hh) = 1 (torch.nn.init.orthogonal_ on that matrix)")
    return (f"initialise the recurrent weight orthogonally so that sigma_max(W_hh) = 1: "
            f"{code(f'torch.nn.init.orthogonal_({name})')}")


def gated_cell(part) -> str:
    return ("switch to a gated cell (nn.LSTM or nn.GRU, same arguments), whose additive "
            "state path carries gradients over hundreds of steps")


def _gate_rows(part, gate_index, n_gates):
    """The index of one gate's rows in a stacked bias: ``[16:32]``, or ``.chunk(4)[1]`` (a
    view of the same rows) when the hidden size is not known."""
    size = part.info.get("hidden_size")
    if not size:
        return f".chunk({n_gates})[{gate_index}]"
    return f"[{gate_index * size}:{(gate_index + 1) * size}]"


def _set_gate_bias(part, gate_index, n_gates, value, gate_words):
    """Code that sets one gate's bias to ``value`` (bias_ih) and 0 (bias_hh), or the same in
    words for a part without stock parameter names."""
    expr = module_expr(part)
    if expr is None:
        return f"set the {gate_words} bias of {where(part)} to {value:g}"
    rows = _gate_rows(part, gate_index, n_gates)
    bias_ih, bias_hh = param_name(part, "bias_ih"), param_name(part, "bias_hh")
    return code(f"with torch.no_grad(): {expr}.{bias_ih}{rows}.fill_({float(value)!r}); "
                f"{expr}.{bias_hh}{rows}.zero_()")


def forget_bias(part) -> str:
    return ("set the forget-gate bias to 1.0 (Gers et al. 2000; Jozefowicz et al. 2015): "
            + _set_gate_bias(part, 1, 4, 1.0, "forget-gate"))


def chrono_forget_bias(part, steps, forget_mean) -> str:
    """Forget gates already open but not open enough: f must be about 1 - 1/steps to keep the
    cell state over ``steps`` steps, i.e. a bias of log(steps) (chrono initialisation)."""
    bias = round_sig(math.log(max(steps, 2.0)) if math.isfinite(steps) else 3.0)
    return (f"the forget gates already average {forget_mean:.2f}; to keep the cell state "
            f"over {steps:.0f} steps set the forget-gate bias to log({steps:.0f}) = {bias:g} "
            f"(chrono initialisation, Tallec & Ollivier 2018): "
            + _set_gate_bias(part, 1, 4, bias, "forget-gate"))


def update_gate_bias(part) -> str:
    return ("set the update-gate bias to 1.0 so that z starts near 0.73 and the state is "
            "kept (h' = (1-z)*n + z*h): " + _set_gate_bias(part, 1, 3, 1.0, "update-gate"))


def join(*actions) -> str:
    actions = [a for a in actions if a]
    if not actions:
        return ""
    text = "; or ".join(actions)
    return text[0].upper() + text[1:] + "."
