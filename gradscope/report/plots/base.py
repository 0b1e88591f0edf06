"""What every plot function returns, and how parts of a model are laid out in a grid."""

from dataclasses import dataclass

import pandas as pd
from matplotlib.figure import Figure

DIRECTIONS = ("forward", "reverse")
STATES = ("h", "c")
MAX_MODULES = 8  # figures drawn per kind; the rest are listed in the page as not drawn


@dataclass
class Plot:
    """One finished figure: ``kind`` and ``subject`` name its file, ``title`` and ``caption``
    go into the page (the page escapes them)."""

    kind: str
    subject: str
    title: str
    caption: str
    figure: Figure


def module_label(module):
    return module if module != "" else "(model root)"


def part_label(module, layer, direction, meta=None, with_module=True):
    """``rnn · layer 1 · reverse``; the layer and direction are left out when the module
    has only one of them."""
    info = (meta or {}).get("modules", {}).get(module, {})
    bits = [module_label(module)] if with_module else []
    if info.get("layers", 2) != 1 or layer != 0:
        bits.append(f"layer {layer}")
    if len(info.get("directions", ["forward", "reverse"])) > 1 or direction != "forward":
        bits.append(direction)
    return " · ".join(bits) if bits else module_label(module)


def ordered(values, order):
    """Distinct ``values`` in ``order`` first, then any others sorted."""
    seen = list(pd.unique(pd.Series(list(values))))
    head = [v for v in order if v in seen]
    return head + sorted((v for v in seen if v not in head), key=str)


def panels(rows, module, states=True):
    """One module's panels as a 2-D list of (layer, direction, state) keys.

    With two states (LSTM: h and c) the columns are the states and the rows each
    (layer, direction); otherwise the columns are the directions and the rows the layers.
    At most two columns either way, so figures stay readable in a page."""
    part = rows[rows["module"] == module]
    layers = sorted(int(v) for v in pd.unique(part["layer"]))
    directions = ordered(part["direction"], DIRECTIONS)
    state_list = ordered(part["state"], STATES) if states and "state" in part else [None]
    if len(state_list) > 1:
        return [[(layer, direction, state) for state in state_list]
                for layer in layers for direction in directions]
    return [[(layer, direction, state_list[0]) for direction in directions] for layer in layers]


def select(rows, layer, direction, state=None):
    keep = (rows["layer"] == layer) & (rows["direction"] == direction)
    if state is not None:
        keep &= rows["state"] == state
    return rows[keep]


def panel_title(module, layer, direction, state, meta):
    """``layer 1 · reverse · state c``: the state only where there is a cell state to tell apart."""
    words = part_label(module, layer, direction, meta, with_module=False)
    cell = (meta or {}).get("modules", {}).get(module, {}).get("cell")
    if state == "c" or (state == "h" and cell == "LSTM"):
        words = f"{words} · state {state}" if words != module_label(module) else f"state {state}"
    return words
