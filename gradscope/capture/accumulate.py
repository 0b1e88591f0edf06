"""Gradient contributions of one call, summed per (layer, direction, state), reduced to norms.

Every number in ``timesteps()`` is made here. A state's gradient reaches gradscope in parts:
the part carried back from the next step (probes on the recurrent use), the direct part (the
layer output, the final state the user kept, and for LSTM the cell state's use in h_t). Parts
are summed as vectors; norms are taken once the part that arrives last in a backward pass
(the internal probe) has arrived, so the (N, S) buffers live only while that layer runs
backward. Nothing here syncs with the host: results stay on the device until the step closes.
"""

import torch

from gradscope.capture.norms import nonfinite_rows, row_norms

_PARTS = ("carried", "direct")


class Accumulator:
    """Sum of (N, S) gradient pieces; pieces may cover all rows, a slice of rows or an index.

    A lone piece is kept as it came (``rows`` says where it goes) until a second one arrives;
    ``owned``: the value is gradscope's own tensor, which the reduction may change in place."""

    __slots__ = ("value", "rows", "owned")

    def __init__(self):
        self.value = None
        self.rows = None
        self.owned = False

    def add(self, grad, rows, n_rows, owned=False):
        if self.value is None:
            self.value, self.rows, self.owned = grad, rows, owned  # borrowed unless owned
            return
        self._spread(n_rows)
        if rows is None and not self.owned:  # a second whole piece: one new sum, no copy first
            self.value, self.owned = self.value + grad.to(self.value.dtype), True
            return
        if not self.owned:
            self.value, self.owned = self.value.clone(), True
        if rows is None:
            self.value.add_(grad)
        elif isinstance(rows, slice):
            self.value[rows].add_(grad)
        else:
            self.value.index_add_(0, rows, grad.to(self.value.dtype))

    def _spread(self, n_rows):
        """A lone piece over some rows -> a (N, S) tensor of its own (zeros elsewhere)."""
        if self.rows is None:
            return
        full = self.value.new_zeros((n_rows,) + tuple(self.value.shape[1:]))
        if isinstance(self.rows, slice):
            full[self.rows] = self.value
        else:
            full.index_copy_(0, self.rows, self.value)
        self.value, self.rows, self.owned = full, None, True

    def whole(self, n_rows):
        """The sum as a (N, S) tensor (None when nothing arrived)."""
        if self.value is not None:
            self._spread(n_rows)
        return self.value


class Series:
    """One (layer, direction, state) of one call: its parts, then its per-t sums of norms."""

    __slots__ = ("key", "pending", "parts", "sums", "spoiled", "total")

    def __init__(self, key, pending):
        self.key = key
        self.pending = pending  # reports (probes, step nodes) still to come before the norms can be taken
        self.parts = {p: Accumulator() for p in _PARTS}
        # (5, T) float64: sum over active rows of |total|, |carried|, |direct|, nonfinite, and
        # |total| over the finite rows only (what is left to plot when one sequence is NaN)
        self.sums = None
        self.spoiled = False
        self.total = None  # carried + direct, where the route summed them already (fast BPTT)

    def add(self, part, grad, rows, record, owned=False):
        if self.sums is not None:
            # A piece after the norms were taken: only possible when one backward pass reaches
            # the call twice in an order we did not foresee. Drop rather than report wrong numbers.
            self.spoiled = True
            return
        self.parts[part].add(grad, rows, record.n_rows, owned)

    def probe_fired(self, record):
        self.pending -= 1
        if self.pending <= 0:
            self.reduce(record)

    def reduce(self, record):
        if self.sums is not None or self.spoiled:
            return
        carried, direct = self.parts["carried"], self.parts["direct"]
        if carried.value is None and direct.value is None:
            return
        norms = _norms_in_place(carried, direct) if _sums_in_place(carried, direct) else None
        if norms is None:
            norms = _norms(carried.whole(record.n_rows), direct.whole(record.n_rows), self.total)
        self.sums = record.segment_sum(norms)
        self.parts = self.total = None  # free the (N, S) buffers now


def _norms(carried, direct, total=None):
    """(5, N): |total|, |carried|, |direct|, nonfinite, |total| of finite rows (see Series).
    ``total``: carried + direct where the caller has it (one pass over (N, S) fewer)."""
    like = carried if carried is not None else direct
    if carried is None:
        carried = torch.zeros_like(like)
    if direct is None:
        direct = torch.zeros_like(like)
    if total is None:
        total = carried + direct
    total_norm = row_norms(total)
    return _stacked(total_norm, row_norms(carried), row_norms(direct), nonfinite_rows(total, total_norm))


def _sums_in_place(carried, direct):
    """The common case the exact route's step nodes make: the carried part is one piece of
    gradscope's own over a slice of rows, the direct part one whole tensor of the same dtype."""
    return (carried.owned and isinstance(carried.rows, slice) and direct.value is not None
            and direct.rows is None and direct.value.dtype == carried.value.dtype)


def _norms_in_place(carried, direct):
    """``_norms`` without the (N, S) sums: the carried piece's norms are taken, then the direct
    part is added into the piece itself (the total over its rows; elsewhere the total is the
    direct part)."""
    piece, rows = carried.value, carried.rows
    direct_norm = row_norms(direct.value)
    carried_norm = torch.zeros_like(direct_norm)
    carried_norm[rows] = row_norms(piece)
    piece.add_(direct.value[rows])
    total_norm = direct_norm.clone()
    total_norm[rows] = piece_norm = row_norms(piece)
    nonfinite = nonfinite_rows(direct.value, direct_norm)
    nonfinite[rows] = nonfinite_rows(piece, piece_norm)
    return _stacked(total_norm, carried_norm, direct_norm, nonfinite)


def _stacked(total_norm, carried_norm, direct_norm, nonfinite):
    return torch.stack([
        total_norm,
        carried_norm,
        direct_norm,
        nonfinite.to(torch.float64),
        total_norm.masked_fill(nonfinite, 0.0),
    ])


def _accumulate_node(leaf):
    with torch.enable_grad():
        edge = getattr(torch.autograd.graph, "get_gradient_edge", None)
        return edge(leaf).node if edge is not None else leaf.view_as(leaf).grad_fn.next_functions[0][0]


def _probes_skipped(leaf_refs):
    """True inside a backward pass that will run none of the probes' accumulation nodes."""
    will_run = getattr(torch._C, "_will_engine_execute_node", None)
    leaves = [ref() for ref in leaf_refs]
    leaves = [leaf for leaf in leaves if leaf is not None]
    if will_run is None or not leaves:
        return False
    try:
        return not any(will_run(_accumulate_node(leaf)) for leaf in leaves)
    except RuntimeError:
        return False


class CallRecord:
    """One call of one watched part within a step: the layout of its rows and its series.

    Rows are laid out as PyTorch packs sequences: time-major, the first ``batch_sizes[t]``
    (sorted) sequences active at t. Padded input is the special case of equal batch sizes.
    """

    def __init__(self, module, cell, call, t_offset, batch_sizes, layers, directions, states,
                 device, sorted_indices=None):
        self.module = module
        self.cell = cell
        self.call = call
        self.t_offset = t_offset
        self.batch_sizes = list(batch_sizes)
        self.T = len(self.batch_sizes)
        self.n_rows = sum(self.batch_sizes)
        self.layers = layers
        self.directions = tuple(directions)
        self.states = dict(states)  # state name -> feature size
        self.device = device
        self.sorted_indices = sorted_indices
        self.uniform = len(set(self.batch_sizes)) <= 1
        self.series = {}
        self.received = False
        self.closed = False
        self.order = 0
        self.on_first_gradient = None
        # weak references to this call's probe leaves: a backward pass that runs none of them
        # (torch.autograd.grad, backward(inputs=...)) cannot measure the carried part
        self.probe_leaves = []
        self.restricted = False
        # the exact route's step nodes report each series' parts once per backward pass: a
        # series still waiting for them when the step closes was reached only in part (a pass
        # restricted to some inputs) and its numbers would be incomplete
        self.needs_reports = False
        self.gate_stats = []  # (layer, direction, gate, activation, tensor[count, sum, low, high])
        self.jacobian_inputs = {}  # (layer, direction) -> dict of detached tensors
        self.weights = {}  # (layer, direction) -> weights used in this forward (detached)
        self._t_index = None
        self._final_rows = {}

    # ---- layout -------------------------------------------------------------------------
    def set_batch_sizes(self, batch_sizes):
        """Lay the rows out anew (a custom cell's state is known only after its call)."""
        self.batch_sizes = list(batch_sizes)
        self.T = len(self.batch_sizes)
        self.n_rows = sum(self.batch_sizes)
        self.uniform = len(set(self.batch_sizes)) <= 1
        self._t_index = None
        self._final_rows = {}

    def offsets(self):
        out, acc = [], 0
        for b in self.batch_sizes:
            out.append(acc)
            acc += b
        return out

    def segment_sum(self, values):
        """(K, N) -> (K, T): sums over the active rows of each time step."""
        if self.uniform:
            return values.view(values.shape[0], self.T, -1).sum(dim=2)
        if self._t_index is None:
            counts = torch.tensor(self.batch_sizes)
            self._t_index = torch.repeat_interleave(torch.arange(self.T), counts).to(self.device)
        out = values.new_zeros((values.shape[0], self.T))
        return out.index_add_(1, self._t_index, values)

    def final_rows(self, direction):
        """Flat row of each (sorted) sequence's final state: its last t forward, t=0 reverse."""
        rows = self._final_rows.get(direction)
        if rows is None:
            batch = self.batch_sizes[0]
            if direction == "reverse":
                rows = slice(0, batch)
            elif self.uniform:
                rows = slice(self.n_rows - batch, self.n_rows)
            else:
                offsets, last = self.offsets(), []
                for i in range(batch):
                    t_last = sum(1 for b in self.batch_sizes if b > i) - 1
                    last.append(offsets[t_last] + i)
                rows = torch.tensor(last, device=self.device)
            self._final_rows[direction] = rows
        return rows

    # ---- contributions --------------------------------------------------------------------
    def add_series(self, layer, direction, state, pending):
        self.series[(layer, direction, state)] = Series((layer, direction, state), pending)

    def gradient_arrived(self):
        """Called by every hook of this call before it adds anything (inside backward)."""
        if self.received:
            return
        self.received = True
        self.restricted = _probes_skipped(self.probe_leaves)
        self.probe_leaves = []
        if self.on_first_gradient is not None:
            self.on_first_gradient()

    def add(self, layer, direction, state, part, grad, rows=None, owned=False):
        """A piece of one part; ``owned``: gradscope's own tensor, free to be changed in place."""
        if self.closed:
            return
        self.gradient_arrived()
        self.series[(layer, direction, state)].add(part, grad, rows, self, owned)

    def add_total(self, layer, direction, state, total):
        """The sum of every part of a series, where the route has already made it (the fast
        route's BPTT sums them on its way): the norms then need not sum the parts again. Give
        it before the last report (``probe_fired``)."""
        if not self.closed:
            self.series[(layer, direction, state)].total = total

    def probe_fired(self, layer, direction, state):
        if not self.closed:
            self.series[(layer, direction, state)].probe_fired(self)

    def add_final(self, part, state, grad):
        """Gradient of the final state as the user sees it: (layers*directions, B, S) in the
        user's (unsorted) batch order."""
        if self.closed:
            return
        if self.sorted_indices is not None:
            grad = grad.index_select(1, self.sorted_indices)
        n_dir = len(self.directions)
        for layer in range(self.layers):
            for d, direction in enumerate(self.directions):
                self.add(layer, direction, state, part, grad[layer * n_dir + d],
                         self.final_rows(direction))

    def settle(self):
        """At the step's close: a call whose step nodes did not all report is restricted."""
        if self.needs_reports and any(series.pending > 0 for series in self.series.values()):
            self.restricted = True

    def finish(self):
        """Take the norms of every series not yet reduced; return [(series, sums)]."""
        self.closed = True
        out = []  # settled already: Step.close_calls settles every call before its tables are made
        if not self.received or self.restricted:
            return out
        for key, series in self.series.items():
            series.reduce(self)
            if series.sums is not None and not series.spoiled:
                out.append((key, series.sums))
        return out
