"""What the exact route's step nodes of one layer and direction share (exact_steps.py): the
time steps' rows, the buffers a backward pass fills, and what the node that runs last returns.

The carried part of the state a step started from is written into one carry buffer laid out as
accumulate.py's carried rows; the gate gradients of every step into one (N, G) buffer, which the
last node returns whole as the input projection's gradient, with W_hh's as one product over all
steps (the steps' starting states joined a piece at a time) and b_hh's as one sum.
"""

import torch

from gradscope.capture.buffers import empty as pooled_empty
from gradscope.capture.cpu_matmul import WEIGHT_GRADIENT_ROWS, weight_gradient
from gradscope.capture.steps import graph_task_id as _graph_task_id
from gradscope.capture.steps import queue_at_end_of_backward as _queue_at_end_of_backward


class StepChain:
    """What the step nodes of one layer and direction share in one forward call.

    Args:
        kind: ``RNN_TANH``, ``RNN_RELU``, ``GRU`` or ``LSTM``.
        xw: the input projection (N, G) of all steps, flat rows in time order.
        bs: active rows per time step (sorted sequences first, as PyTorch packs them).
        reverse: whether the steps run from the last time step to the first.
        acts: GRU/LSTM: (N, G) buffer the activations go into (the gate statistics read it), or
            None.
        report: ``report(parts)`` called once per backward pass with the per-step parts
            (``carried_h``, ``carried_c`` in carry-buffer order, ``direct_c`` in row order), or
            None.
        buffers: the Scope's ``buffers.BufferPool`` for the backward pass's buffers, or None.
    """

    def __init__(self, kind, xw, bs, reverse, acts=None, report=None, buffers=None):
        self.kind = kind
        self.bs = list(bs)
        self.steps = len(self.bs)
        self.reverse = reverse
        self.n_rows = sum(self.bs)
        self.gates = xw.shape[1]
        self.acts = acts
        self.report = report
        self.buffers = buffers
        offsets, acc = [], 0
        for b in self.bs:
            offsets.append(acc)
            acc += b
        self.rows = [slice(o, o + b) for o, b in zip(offsets, self.bs)]
        self.first = self.steps - 1 if reverse else 0  # processed first, runs last in backward
        # the carried part of the state a step starts from goes to one piece of the carry buffer,
        # laid out as the carried rows of accumulate.py: piece k holds the state made at step k
        # (forward) or k + 1 (reverse) as the next processed step uses it, bs[k + 1] rows
        piece_offsets, acc = [], 0
        for b in self.bs[1:]:
            piece_offsets.append(acc)
            acc += b
        self.pieces = [slice(o, o + b) for o, b in zip(piece_offsets, self.bs[1:])]
        self.n_carried = acc
        self.h_prev = [None] * self.steps  # each step's starting state, detached (W_hh's gradient)
        self.current = None  # the backward pass in progress
        # what every step node of the chain shares, set by the first one (exact_steps.py): the
        # state sizes (h, c), which optional inputs are tensors, the forward's autocast dtype
        self.sizes = self.optional = self.autocast = None


    def piece_of_start(self, t):
        """Where the carried part of step ``t``'s starting state goes: a slice of the carry
        buffer, or None for the first step processed (its start is the initial state)."""
        if t == self.first:
            return None
        return self.pieces[t if self.reverse else t - 1]

    def empty(self, shape, like):
        return pooled_empty(self.buffers, shape, like)

    def open_pass(self, t, graph, like, node):
        """The buffers of the backward pass in progress (opened by the first node that runs,
        ``node``), with step ``t`` marked as run. A pass is one engine graph task: one that ended
        without reaching the first step (a backward pass restricted to some inputs; an error
        part-way) is dropped, and its call records nothing (``CallRecord.needs_reports``)."""
        task = _graph_task_id()
        if self.current is None or self.current.task != task:
            self.current = _Pass(self, graph, like, *self.sizes)
            self.current.task = task
            _queue_at_end_of_backward(lambda done=self.current: self._task_ended(done, node))
        self.current.ran[t] = True
        return self.current

    def close_pass(self):
        done, self.current = self.current, None
        done.zero_steps_not_run(self)
        if self.report is not None:
            self.report(done.parts())
        return done

    def _task_ended(self, done, node):
        """After the backward pass: drop a pass that never closed, and once the graph is freed
        (no ``retain_graph``: no pass can come again) the activations and starting states, which
        a graph the caller keeps (the last loss) would otherwise hold."""
        if self.current is done:
            self.current = None
        try:
            node._raw_saved_tensors  # raises once backward has freed the graph's saved tensors
        except RuntimeError:
            self.acts = self.h_prev = None


class _Pass:
    """The buffers of one backward pass through a chain."""

    def __init__(self, chain, graph, like, size_h, size_c):
        self.graph = graph
        n, n_carried = chain.n_rows, chain.n_carried
        if graph:
            self.d_xw = [None] * chain.steps
            self.d_hh = None
        else:
            self.d_xw = chain.empty((n, chain.gates), like)
            self.d_hh = chain.empty((n, chain.gates), like) if chain.kind == "GRU" else self.d_xw
        self.d_w_hh = self.d_b_hh = None  # double backward: differentiable per-step sums
        self.ran = [False] * chain.steps
        self.task = None
        self.carried_h = chain.empty((n_carried, size_h), like) if n_carried else None
        self.carried_c = chain.empty((n_carried, size_c), like) if n_carried and size_c else None
        self.direct_c = chain.empty((n, size_c), like) if size_c else None

    def zero_steps_not_run(self, chain):
        """A pass that reaches only some steps (a second-order backward reaches the states the
        first backward's recomputations read, not the last state): the others send nothing."""
        for t, ran in enumerate(self.ran):
            if ran:
                continue
            rows, piece = chain.rows[t], chain.piece_of_start(t)
            if self.graph:
                self.d_xw[t] = None
            else:
                self.d_xw[rows] = 0
                self.d_hh[rows] = 0
            if piece is not None:
                self.carried_h[piece] = 0
                if self.carried_c is not None:
                    self.carried_c[piece] = 0
            if self.direct_c is not None:
                self.direct_c[rows] = 0

    def parts(self):
        return {"carried_h": self.carried_h, "carried_c": self.carried_c, "direct_c": self.direct_c}

    def add_weight_grads(self, d_w, d_b):
        """Double backward: a step's differentiable W_hh and b_hh gradients, summed out of place
        (the sums stay differentiable)."""
        self.d_w_hh = _summed(self.d_w_hh, d_w)
        self.d_b_hh = _summed(self.d_b_hh, d_b)


def _summed(total, value):
    if value is None or total is None:
        return total if value is None else value
    return total + value


def start_grad(chain, t, compute, rows, state):
    """The gradient of step ``t``'s starting ``state`` ("h" or "c", ``rows`` rows); its carried
    part is written into the carry buffer (straight into it where the piece covers every row).
    ``compute(out)`` makes it."""
    piece = chain.piece_of_start(t)
    if piece is None:
        return compute(None)
    target = chain.current.carried_h if state == "h" else chain.current.carried_c
    if piece.stop - piece.start == rows:
        # a view of the buffer: autograd never sums into a tensor whose storage another holds
        return compute(target[piece])
    grad = compute(None)
    target[piece].copy_(grad[:piece.stop - piece.start])
    return grad


def finish(chain, weight_needs, xw):
    """The first step processed runs last: return the gradients of every step's input
    projection, W_hh and b_hh, and report the parts."""
    needs_xw, needs_w, needs_b = weight_needs
    h_prev = chain.h_prev
    p = chain.close_pass()
    d_xw = d_w = d_b = None
    if p.graph:
        if needs_xw:
            d_xw = torch.cat([piece if piece is not None else xw.new_zeros(rows.stop - rows.start, chain.gates)
                              for piece, rows in zip(p.d_xw, chain.rows)])
        return d_xw, p.d_w_hh, p.d_b_hh
    if needs_xw:
        d_xw = p.d_xw
    if needs_w:
        d_w = _weight_gradient_by_steps(p.d_hh, h_prev, chain.rows)
    if needs_b:
        d_b = p.d_hh.sum(0)
    return d_xw, d_w, d_b


def _weight_gradient_by_steps(grads, h_prev, rows):
    """``grads.T @ H``, H the steps' starting states in row order, joined a piece of steps at a
    time (no (N, P) copy of them all)."""
    total, group, first = None, [], 0
    for t, step_rows in enumerate(rows):
        group.append(h_prev[t])
        if step_rows.stop - rows[first].start >= WEIGHT_GRADIENT_ROWS or t == len(rows) - 1:
            states = group[0] if len(group) == 1 else torch.cat(group)
            piece = weight_gradient(grads[rows[first].start:step_rows.stop], states)
            total = piece if total is None else total.add_(piece)
            group, first = [], t + 1
    return total
