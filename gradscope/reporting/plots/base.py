"""What every plot function returns, and how parts of a model are laid out in a grid."""

from dataclasses import dataclass

import pandas as pd
from matplotlib.figure import Figure

from gradscope.display import module_label  # noqa: F401  (the plots import it from here)

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


def by_module(run, rows):
    """``(step, module, its rows)`` for each of the run's first ``MAX_MODULES`` modules that has
    rows in ``rows`` (a table of one step, or of several: ``step`` is the latest)."""
    if rows.empty:
        return
    step = int(rows["step"].max())
    for module in run.modules()[:MAX_MODULES]:
        part = rows[rows["module"] == module]
        if not part.empty:
            yield step, module, part


def layer_bits(module, layer, direction, meta=None):
    """``["layer 1", "reverse"]``, leaving out what the module has only one of."""
    info = (meta or {}).get("modules", {}).get(module, {})
    bits = []
    if info.get("layers", 2) != 1 or layer != 0:
        bits.append(f"layer {layer}")
    if len(info.get("directions", ["forward", "reverse"])) > 1 or direction != "forward":
        bits.append(direction)
    return bits


def part_label(module, layer, direction, meta=None, with_module=True):
    """``rnn · layer 1 · reverse``; without the module, the module's name stands in when
    there is nothing else to say."""
    bits = layer_bits(module, layer, direction, meta)
    if with_module or not bits:
        bits = [module_label(module)] + bits
    return " · ".join(bits)


def run_part_label(run, module, layer, direction):
    """For comparisons: ``GRU · layer 1``; the module's name only when the run has several."""
    bits = [run.name]
    if len(run.modules()) > 1:
        bits.append(module_label(module))
    return " · ".join(bits + layer_bits(module, layer, direction, run.meta))


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
    bits = layer_bits(module, layer, direction, meta)
    cell = (meta or {}).get("modules", {}).get(module, {}).get("cell")
    if state == "c" or (state == "h" and cell == "LSTM"):
        bits.append(f"state {state}")
    return " · ".join(bits) if bits else module_label(module)
