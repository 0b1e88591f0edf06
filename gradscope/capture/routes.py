"""The route table: how each kind of watched part is measured and described.

Every route has one signature, ``route(ctx, part, original, args, kwargs)``: the capture
context (context.Capture), the part (discover.Part; for ``scope.track``, a Part of kind
"track" named by its label), the module's own forward, and the call's arguments. It returns what
the module's own forward (or ``scope.track``) would return. Adding a route is adding an entry
to ``KINDS``: a part kind's ``describe`` (its entry in ``meta["modules"]``) and its routes by
mode ("exact" always; a kind that has no route for a mode takes its exact one).
"""

import logging
from dataclasses import dataclass
from typing import Callable

from gradscope.capture.custom import exact_custom_forward
from gradscope.capture.fast import fast_module_forward
from gradscope.capture.stock_cells import exact_cell_forward
from gradscope.capture.track import track
from gradscope.capture.unroll import exact_module_forward
from gradscope.cells import cell_kind

log = logging.getLogger("gradscope")


def _exact_module(ctx, part, original, args, kwargs):
    return exact_module_forward(ctx, part.name, part.module, *args, **kwargs)


def _fast_module(ctx, part, original, args, kwargs):
    return fast_module_forward(ctx, part.name, part.module, *args, **kwargs)


def _stock_cell(ctx, part, original, args, kwargs):
    return exact_cell_forward(ctx, part.name, part.module, *args, **kwargs)


def _custom_cell(ctx, part, original, args, kwargs):
    return exact_custom_forward(ctx, part.name, part.module, original, args, kwargs)


def _track(ctx, part, original, args, kwargs):
    return track(ctx, args[0], part.name)


def _describe_module(part):
    m = part.module
    return {"cell": cell_kind(m), "kind": "module", "layers": m.num_layers,
            "directions": ["forward", "reverse"] if m.bidirectional else ["forward"],
            "hidden_size": m.hidden_size, "proj_size": m.proj_size}


def _describe_cell(part):
    return {"cell": cell_kind(part.module), "kind": "cell", "layers": 1, "directions": ["forward"],
            "hidden_size": part.module.hidden_size, "proj_size": 0}


def _describe_custom(part):
    return {"cell": type(part.module).__name__, "kind": "custom", "layers": 1, "directions": ["forward"],
            "hidden_size": None, "proj_size": 0}


def _describe_track(part):
    return {"cell": "track", "kind": "track", "layers": 1, "directions": ["forward"], "hidden_size": None,
            "proj_size": 0}


@dataclass(frozen=True)
class PartKind:
    """How one kind of part is described (``describe(part) -> dict``) and measured (``routes``:
    mode -> route)."""

    describe: Callable
    routes: dict


KINDS = {
    "module": PartKind(_describe_module, {"exact": _exact_module, "fast": _fast_module}),  # nn.RNN/GRU/LSTM
    "cell": PartKind(_describe_cell, {"exact": _stock_cell}),  # nn.RNNCell/GRUCell/LSTMCell
    "custom": PartKind(_describe_custom, {"exact": _custom_cell}),  # watch(cells=...)
    "track": PartKind(_describe_track, {"exact": _track}),  # scope.track(h, label)
}


def route_name(kind, mode):
    """The route a part of ``kind`` takes under ``mode``: ``mode`` where the kind has it, else
    "exact" (a cell call is one time step: there is no fused sequence to keep)."""
    return mode if mode in KINDS[kind].routes else "exact"


def route_for(kind, mode):
    """The route function of a part of ``kind`` under ``mode``."""
    return KINDS[kind].routes[route_name(kind, mode)]


def describe(part):
    """The part's entry in ``meta["modules"]``."""
    return KINDS[part.kind].describe(part)


def part_routes(parts, mode):
    """``{part name: route name}``: under ``mode="fast"`` nn.RNN/GRU/LSTM take the fast route,
    stock cells (``nn.*Cell``) and custom cells the exact one. Parts that fall back are named
    once, as an INFO record of the ``gradscope`` logger (not a warning: nothing is lost, the
    numbers are the same)."""
    routes = {part.name: route_name(part.kind, mode) for part in parts}
    fallback = sorted(name or "<root>" for name, route in routes.items() if route != mode)
    if fallback:
        log.info("gradscope: mode='fast' takes nn.RNN/GRU/LSTM only; %s use the exact route (same numbers, "
                 "stepped one call per time step)", ", ".join(fallback))
    return routes
