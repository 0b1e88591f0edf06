"""Modules given in ``cells=``: any module called once per time step with the previous state
among its inputs, returning the new state (a tensor, or a tuple whose first item is h).

gradscope cannot re-derive a custom cell's math, so it measures at the cell's boundary: the
state the cell returns is handed to the user as a copy (its hook: the gradient of all uses), and
when that copy comes back as an input of the next call a zero probe is added to it (its
gradient: the carried part; the rest is the direct part). Only h is measured; the rest of a
tuple passes through untouched.
"""

import torch

from gradscope.capture.accumulate import CallRecord


def exact_custom_forward(ctx, name, module, original, args, kwargs):
    args, kwargs, link = _continue_sequence(ctx, name, args, kwargs)
    out = original(*args, **kwargs)
    h = out if isinstance(out, torch.Tensor) else (out[0] if isinstance(out, (tuple, list)) and out else None)
    if not isinstance(h, torch.Tensor) or h.dim() == 0:
        raise TypeError(f"cells: {name or type(module).__name__} returned {type(out).__name__}; a watched cell "
                        "must return its new state as a tensor or a tuple whose first item is h")
    size = h.shape[-1]
    batch = h.numel() // size if size else 0
    if link is not None:
        call_index, t_offset = link.record.call, link.record.t_offset + link.record.T
    else:
        call_index, t_offset = ctx.step.new_call_index(name), 0
    record = CallRecord(name, type(module).__name__, call_index, t_offset, [batch], 1, ("forward",),
                        {"h": size}, h.device)
    record.add_series(0, "forward", "h", pending=0)
    ctx.add_call(record)
    user_h = ctx.returned_state(record, "h", h, cell=True, squeeze=False)
    if isinstance(out, torch.Tensor):
        return user_h
    return type(out)([user_h, *out[1:]]) if isinstance(out, list) else (user_h, *out[1:])


def _continue_sequence(ctx, name, args, kwargs):
    """Add a probe to the first input that is the state this cell returned in its last call."""
    found = {}

    def swap(value):
        if found:
            return value
        if isinstance(value, torch.Tensor):
            link = ctx.links.get(value)
            if link is not None and link.record.module == name and link.state == "h":
                found["link"] = link
                return ctx.continue_sequence([link], [value], lambda g: g.reshape(1, -1, g.shape[-1]))[0]
            return value
        if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
            first = swap(value[0])
            if first is not value[0]:
                rest = list(value[1:])
                return type(value)([first, *rest]) if isinstance(value, list) else (first, *rest)
        return value

    args = tuple(swap(a) for a in args)
    kwargs = {k: swap(v) for k, v in kwargs.items()}
    return args, kwargs, found.get("link")
