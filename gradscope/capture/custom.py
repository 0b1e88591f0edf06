"""Modules given in ``cells=``: any module called once per time step with the previous state
among its inputs.

gradscope cannot re-derive a custom cell's math, so it measures at the cell's boundary. The
cell's output is returned untouched; every tensor it made (alone, or inside a tuple, list or
dict, ``(h, h)`` included) gets a hook that sees the gradient of all its uses. Which returned
tensor is the state is learned from the next call: the one that comes back among its inputs
(positional, keyword, or inside a tuple, list or dict) gets a zero probe there, whose gradient
is the carried part (the rest is the direct part). Two returned tensors that both come back
are the states h and c, in the order the cell returned them. The last call of a sequence
takes the layout its predecessor showed (or an earlier sequence of the same cell); where
gradscope cannot tell which returned tensor is the state, it warns and records nothing for
that cell in that step rather than wrong numbers.
"""

import weakref

import torch

from gradscope.capture.accumulate import CallRecord

STATE_NAMES = ("h", "c")


class Ambiguous(Exception):
    """gradscope cannot tell which returned tensor is this cell's state."""


class CellCall:
    """One call of a custom cell: the shapes of the tensors it returned and, once known,
    which of them are its states."""

    def __init__(self, ctx, name, label, record, shapes, previous):
        self.ctx = ctx
        self.name = name
        self.label = label  # how warnings name the cell
        self.record = record
        self.shapes = shapes  # per returned tensor (distinct, in the order returned)
        self.previous = previous  # the call this one continues, or None
        self.fed_back = None  # indices of the returned tensors the next call received
        self.states = None  # {returned index: state name} once resolved ({}: not measured)

    def resolve(self):
        """Which returned tensors are states (decided at the first gradient, when every
        forward of the step has run)."""
        if self.states is not None:
            return self.states
        slots = self.fed_back or self._learned()
        if slots is None:
            self.states = {}
            self.ctx.step.drop_call(self.record)
            self.ctx.warn(("custom-ambiguous", self.name), (
                f"gradscope: cannot tell which of the {len(self.shapes)} tensors the custom cell {self.label} "
                "returns is its state (no later call received one of them); this call is not recorded. Pass the "
                "returned state back to the next call, or return only the state."))
            return self.states
        self.states = {k: STATE_NAMES[i] for i, k in enumerate(sorted(slots))}
        self.record.states = {name: self.shapes[k][-1] for k, name in self.states.items()}
        self.record.set_batch_sizes([_batch(self.shapes[min(slots)])])
        for name in self.states.values():
            self.record.add_series(0, "forward", name, pending=0)
        return self.states

    def _learned(self):
        """The state layout shown by the call before this one, else by any earlier call of
        this cell with the same number of returned tensors; a lone returned tensor is the state."""
        source = self.previous
        if source is not None and source.fed_back and len(source.shapes) == len(self.shapes):
            return source.fed_back
        layout = self.ctx.custom_layouts.get(self.name)
        if layout is not None and layout[0] == len(self.shapes):
            return layout[1]
        return (0,) if len(self.shapes) == 1 else None

    def gradient(self, index, part, grad):
        """A gradient of returned tensor ``index``: its total (part "direct": all its uses) or
        the carried part a next call's probe measured (moved out of the direct part)."""
        state = self.resolve().get(index)
        if state is None:
            return
        grad = grad.reshape(1, -1, grad.shape[-1])
        if part == "carried":
            self.record.add_final("carried", state, grad)
            grad = -grad
        self.record.add_final("direct", state, grad)


def _batch(shape):
    return int(torch.Size(shape).numel() // shape[-1]) if shape[-1] else 0


def exact_custom_forward(ctx, name, module, original, args, kwargs):
    if name in ctx.step.spoiled:
        return original(*args, **kwargs)
    label = f"{name!r} ({type(module).__name__})" if name else type(module).__name__
    input_ids = {id(t) for t in _tensors(args) + _tensors(kwargs)}
    try:
        args, kwargs, previous = _continue_sequence(ctx, name, args, kwargs)
    except Ambiguous as why:
        ctx.step.spoiled.add(name)
        ctx.warn(("custom-ambiguous", name), (
            f"gradscope: cannot tell which state the custom cell {label} continues: {why}; its numbers "
            "of this step are not recorded. Call the cell once per time step with the state it returned."))
        return original(*args, **kwargs)
    out = original(*args, **kwargs)
    if not _tensors(out):
        ctx.warn(("custom-no-tensor", name), (
            f"gradscope: the custom cell {label} returned {type(out).__name__} with no tensor in it; a watched "
            "cell returns its new state as a tensor (alone or inside a tuple, list or dict). Not recorded."))
        return out
    returned = []
    for tensor in _tensors(out):
        # only what this call made: not the user's own tensors passed through, nor parameters
        if (tensor.requires_grad and tensor.grad_fn is not None and tensor.dim() > 0 and tensor.shape[-1] > 0
                and tensor.is_floating_point() and id(tensor) not in input_ids
                and all(tensor is not r for r in returned)):
            returned.append(tensor)
    if not returned:
        return out
    call_index, t_offset = ctx.call_position(name, previous.record if previous is not None else None)
    first = returned[0]
    record = CallRecord(name, type(module).__name__, call_index, t_offset, [_batch(first.shape)], 1,
                        ("forward",), {}, first.device)
    call = CellCall(ctx, name, label, record, [tuple(t.shape) for t in returned], previous)
    record.cell_call = call
    ctx.add_call(record)
    for index, tensor in enumerate(returned):
        ctx.hook(tensor, lambda g, i=index: call.gradient(i, "direct", g))
        ctx.links.add(tensor, record, index)
    return out


def _continue_sequence(ctx, name, args, kwargs):
    """Add a zero probe to every input that a previous call of this cell returned; return the
    new inputs and that previous call (None: a new sequence)."""
    links = {}  # id(tensor) -> link, for the inputs an earlier call of this cell returned
    for tensor in _tensors(args) + _tensors(kwargs):
        link = ctx.links.get(tensor)
        if link is not None and link.record.module == name and getattr(link.record, "cell_call", None) is not None:
            links[id(tensor)] = link
    if not links:
        return args, kwargs, None
    # check before any probe exists: a probe that no backward reaches reads as a partial backward
    calls = {id(link.record.cell_call): link.record.cell_call for link in links.values()}
    if len(calls) > 1:
        raise Ambiguous(f"its inputs hold states returned by {len(calls)} different earlier calls")
    previous = next(iter(calls.values()))
    slots = tuple(sorted({link.state for link in links.values()}))
    if previous.fed_back is not None:
        raise Ambiguous("the state one call returned went into two later calls")
    if len(slots) > len(STATE_NAMES):
        raise Ambiguous(f"{len(slots)} of the tensors one call returned came back (at most 2: h and c)")
    if len({_batch(previous.shapes[k]) for k in slots}) > 1:
        raise Ambiguous("the returned tensors that came back have different batch sizes")
    previous.fed_back = slots
    ctx.custom_layouts[name] = (len(previous.shapes), slots)

    probed = {}  # id(tensor) -> tensor + probe (the same object wherever the input repeats)

    def swap(value):
        if isinstance(value, torch.Tensor):
            link = links.get(id(value))
            if link is None:
                return value
            if id(value) not in probed:
                probe = torch.zeros_like(value, requires_grad=True)
                ctx.hook(probe, lambda g, i=link.state: previous.gradient(i, "carried", g))
                link.record.probe_leaves.append(weakref.ref(probe))
                probed[id(value)] = value + probe
            return probed[id(value)]
        if isinstance(value, tuple) and hasattr(value, "_fields"):  # namedtuple
            return type(value)(*[swap(v) for v in value])
        if isinstance(value, (tuple, list)):
            return type(value)(swap(v) for v in value)
        if isinstance(value, dict):
            return type(value)((k, swap(v)) for k, v in value.items())
        return value

    return tuple(swap(a) for a in args), {k: swap(v) for k, v in kwargs.items()}, previous


def _tensors(value):
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []
