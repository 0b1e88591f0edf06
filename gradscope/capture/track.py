"""``scope.track(h, label)`` for hand-written loops with no module per step.

Each call marks the next time step of ``label``. The hook of a marked state sees its total
gradient (every use). When that total is complete, the main backward pass has not yet gone
below the state, so the graph between it and the previous marked states is intact: a
vector-Jacobian product through that step (``vjp.step_vjp``) gives the part of the previous
states' gradient that comes back through this one, i.e. their carried part. Direct = total -
carried. With ``(h, c)`` each state's product stops at the other state of its step (what
reaches it is counted from that state's own, complete, gradient), so no path counts twice.
"""

import math

import torch
from torch.autograd.graph import get_gradient_edge

from gradscope.capture.norms import row_norms
from gradscope.capture.vjp import step_vjp

STATE_NAMES = ("h", "c")


class TrackRecord:
    def __init__(self, label):
        self.label = label
        self.next_t = 0
        # gradient edges of the latest call's states: the targets of the next call's product.
        # Held until the next call (or the step's end); graph nodes cannot be weakly referenced.
        self.previous = []  # [(state, edge)]
        self.carried = {}  # (state, t) -> carried gradient received so far
        self.failed = set()  # t whose carried part could not be computed
        self.sums = {}  # (state, t) -> tensor [sum of |total|, |carried|, |direct|, nonfinite count]
        self.batch = {}  # (state, t) -> active sequences

    def arrived(self, state, t, grad, edge, previous, stops):
        """The hook of state ``state`` at ``t``: record its numbers, then send its gradient
        back to the previous call's states."""
        self.add(state, t, grad)
        if not previous:
            return
        try:
            parts = step_vjp(edge, grad, [e for _, e in previous], stops)
        except Exception:
            self.failed.add(t - 1)
            raise
        for (prev_state, _), part in zip(previous, parts):
            if part is not None:
                key = (prev_state, t - 1)
                self.carried[key] = part if key not in self.carried else self.carried[key] + part

    def add(self, state, t, grad):
        flat = _rows(grad)
        carried = self.carried.pop((state, t), None)
        carried = torch.zeros_like(flat) if carried is None else _rows(carried).to(flat.dtype)
        direct = flat - carried
        norms = torch.stack([row_norms(v) for v in (flat, carried, direct)])
        if t in self.failed:
            norms[1:] = math.nan
        nonfinite = (~torch.isfinite(flat)).any(dim=1)
        finite_total = norms[0].masked_fill(nonfinite, 0.0)
        self.sums[(state, t)] = torch.cat([norms.sum(dim=1), nonfinite.to(torch.float64).sum().reshape(1),
                                           finite_total.sum().reshape(1)])
        self.batch[(state, t)] = flat.shape[0]


def _rows(grad):
    return grad.reshape(-1, grad.shape[-1]) if grad.dim() > 1 else grad.reshape(1, -1)


def track(ctx, value, label):
    """Mark ``value`` (h, or a tuple (h, c)) as the next time step of ``label``."""
    if not isinstance(label, str):
        raise TypeError(f"scope.track(value, label): label must be a str, got {type(label).__name__}")
    tensors = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    for item in tensors:
        if not isinstance(item, torch.Tensor):
            raise TypeError(f"scope.track(value, {label!r}): value must be a tensor or a tuple of tensors, "
                            f"got {type(item).__name__}")
    if len(tensors) > len(STATE_NAMES):
        raise ValueError(f"scope.track(value, {label!r}): at most {len(STATE_NAMES)} states (h, c), got {len(tensors)}")
    if not any(t.requires_grad for t in tensors):
        return value
    step = ctx.step
    record = step.tracks.get(label)
    if record is None:
        record = step.tracks[label] = TrackRecord(label)
    t = record.next_t
    record.next_t += 1
    if not step.recorded:
        if t == 0:
            for tensor in tensors:
                if tensor.requires_grad:
                    ctx.hook(tensor, lambda g: None)  # only to learn that backward went through this step
        return value
    marked = [(state, tensor, get_gradient_edge(tensor))
              for state, tensor in zip(STATE_NAMES, tensors) if tensor.requires_grad]
    previous, record.previous = record.previous, [(state, edge) for state, _, edge in marked]
    for state, tensor, edge in marked:
        stops = [other for name, _, other in marked if name != state]
        ctx.hook(tensor, lambda g, st=state, e=edge, s=stops: record.arrived(st, t, g, e, previous, s))
    return value
