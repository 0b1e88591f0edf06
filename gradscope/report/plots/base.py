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


def grid(rows, module, states=False):
    """Row keys (layers) and column keys ((direction, state)) of one module's panels."""
    part = rows[rows["module"] == module]
    layers = sorted(int(v) for v in pd.unique(part["layer"]))
    directions = ordered(part["direction"], DIRECTIONS)
    if states and "state" in part:
        state_list = ordered(part["state"], STATES)
        cols = [(d, s) for d in directions for s in state_list]
    else:
        cols = [(d, None) for d in directions]
    return layers, cols
