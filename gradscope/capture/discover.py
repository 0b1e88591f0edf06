"""Finding the recurrent parts of a model: stock modules and cells, and the user's own cells."""

import warnings

import torch.nn as nn

from gradscope.errors import GradscopeWarning

STOCK_MODULES = (nn.RNN, nn.GRU, nn.LSTM)
STOCK_CELLS = (nn.RNNCell, nn.GRUCell, nn.LSTMCell)


class Part:
    """One watched part: ``kind`` is "module" (nn.RNN/GRU/LSTM), "cell" (nn.*Cell) or "custom"."""

    def __init__(self, name, module, kind):
        self.name = name
        self.module = module
        self.kind = kind


def _stock_base(module, bases):
    for base in bases:
        if isinstance(module, base):
            return base
    return None


def find_parts(model, cells=()):
    """Every stock recurrent module and cell inside ``model`` (itself included), then ``cells``.

    A subclass that overrides ``forward`` cannot be stepped exactly: it is left untouched and
    named in a warning, so no number that could be wrong is recorded for it.
    """
    parts, seen = [], set()
    for name, module in model.named_modules():
        base = _stock_base(module, STOCK_MODULES) or _stock_base(module, STOCK_CELLS)
        if base is None:
            continue
        kind = "module" if base in STOCK_MODULES else "cell"
        if type(module).forward is not base.forward:
            warnings.warn(
                f"gradscope: {name or '<root>'} ({type(module).__name__}) overrides {base.__name__}.forward, "
                "so gradscope cannot step it exactly; it runs untouched and nothing is recorded for it. "
                "Watch the stock module it calls, or mark its states with scope.track(h, label).",
                GradscopeWarning, stacklevel=3)
            continue
        parts.append(Part(name, module, kind))
        seen.add(id(module))

    names = {id(m): n for n, m in model.named_modules()}
    by_name = dict(model.named_modules())
    for index, cell in enumerate(cells):
        if isinstance(cell, str):
            if cell not in by_name:
                raise ValueError(f"cells: no submodule named {cell!r} in {type(model).__name__}; "
                                 f"names look like {sorted(n for n in by_name if n)[:5]}")
            name, module = cell, by_name[cell]
        elif isinstance(cell, nn.Module):
            module = cell
            name = names.get(id(cell), f"cells[{index}]")
        else:
            raise TypeError(f"cells[{index}]: expected an nn.Module or a qualified name, got {type(cell).__name__}")
        if id(module) in seen:
            continue
        parts.append(Part(name, module, "custom"))
        seen.add(id(module))
    return parts
