"""The exact route's time steps: one autograd node per time step owns the whole cell.

Stepped with plain ops plus zero probes, one LSTM time step recorded about a dozen autograd nodes
(the recurrent product, its transpose, the sum with the input projection, a probe on every state)
and its backward ended by joining the per-step pieces of each gradient with a ``cat`` (26 MB for
an LSTM's input projection at B=32, H=256, T=200: ~10 ms of fresh pages per step). Here each
time step is one node, ``(xw, h_prev[, c_prev], W_hh, b_hh) -> h_t[, c_t]``, whose forward runs
the same ops as ATen's cell (outputs are bitwise the same) and whose backward applies the same
derivative kernels autograd would.

Why the numbers stay exact: every state is still an autograd tensor, and the gradient that reaches
a node is autograd's total dL/dh_t. The node computes the gradient of the state it started from,
which is exactly the part of dL/dh_{t-1} carried back through this step, and writes it into the
chain's buffer as it hands it to autograd (which adds the direct part). For an LSTM the part of
dL/dc_t that comes through h_t (direct) and the part handed to c_{t-1} (carried) are written the
same way. Nothing is subtracted: each part is computed on its own, as the probes did.

Gradients every step adds to (the input projection's rows, W_hh, b_hh) are written into one
buffer of gate gradients and returned whole by the node that runs last in backward: the first
step processed, whose state every later step depends on. W_hh's gradient is then one product
over all steps, not a sum of one product per step: within float rounding of that sum, and
measured faster (an RNN at B=32, H=256, T=200: 1.26x of the plain step with per-step products
and sums, 1.12x-1.19x with one product, the hand-written loop 1.05x-1.15x in the same runs).

Double backward (``create_graph=True``), and steps run under autocast, recompute each step with
plain ops (under the same autocast) and differentiate it, gathering the per-step pieces the same
way.
"""

import contextlib

import torch
import torch.nn.functional as F

from gradscope.capture.exact_chain import finish, start_grad

_aten = torch.ops.aten


# ---- forward helpers: the same ops, in the same order, as ATen's cells -----------------------

def _lstm_activations_into(gates, acts):
    """i, f, g, o side by side into ``acts`` (B, 4H), gate by gate (the rounding of ATen's cell)."""
    if acts is None:
        acts = torch.empty_like(gates)
    for index, (pre, out) in enumerate(zip(gates.chunk(4, dim=-1), acts.chunk(4, dim=-1))):
        (torch.tanh if index == 2 else torch.sigmoid)(pre, out=out)
    return acts


def _gru_activations_into(xw, hh, acts):
    """r, z, n side by side into ``acts`` (B, 3H)."""
    xr, xz, xn = xw.chunk(3, dim=-1)
    hr, hz, hn = hh.chunk(3, dim=-1)
    if acts is None:
        acts = torch.empty_like(xw)
    r, z, n = acts.chunk(3, dim=-1)
    torch.sigmoid(torch.add(hr, xr, out=r), out=r)
    torch.sigmoid(torch.add(hz, xz, out=z), out=z)
    torch.tanh(torch.add(xn, hn * r, out=n), out=n)
    return acts


def _keep_inputs(ctx, chain, t, xw, h, w_hh, b_hh, anchor, c=None, extra=()):
    """What backward needs, saved: ``ctx.saved_tensors`` is (xw, h, c, W_hh, b_hh, *extra).
    Not kept as attributes: Python's garbage collector walks attributes, and through each
    input's node the whole graph (a cell loop spent ~50 ms a step in collections), and an
    attribute outlives backward for as long as the graph object does."""
    ctx.chain, ctx.t = chain, t
    ctx.save_for_backward(xw, h, c, w_hh, b_hh, *extra)
    if chain.sizes is None:  # the same for every step of a chain (one module call)
        chain.sizes = (h.shape[1], c.shape[1] if c is not None else 0)
        chain.optional = (b_hh is not None, anchor is not None)  # which optional inputs are tensors
        device = h.device.type
        chain.autocast = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
    chain.h_prev[t] = h.detach()


def _recompute(ctx):
    """Whether backward recomputes the step with plain ops: double backward
    (``create_graph=True``), or a forward under autocast (whose casts the plain ops redo)."""
    return torch.is_grad_enabled() or ctx.chain.autocast is not None


def _own_acts(chain, acts):
    """A step's activations to save: None where they are rows of the chain's buffer (saved, a
    buffer's rows would share one version counter; backward reads them from the chain)."""
    return acts if chain.acts is None else None


def _acts(chain, t, saved):
    return saved if saved is not None else chain.acts[chain.rows[t]]


def _needs(ctx):
    """Whether the input projection, W_hh and b_hh want gradients."""
    n = ctx.needs_input_grad
    return n[2], n[-3], n[-2]


class _StepNode(torch.autograd.Function):
    """What the step nodes share: the backward around each cell's own derivative
    (``step_backward``), and a backward without side effects for graph walks (vjp.py)."""

    @staticmethod
    def backward(ctx, *grads):
        chain, t = ctx.chain, ctx.t
        saved = ctx.saved_tensors  # once: a checkpointed graph unpacks each saved tensor once
        if _recompute(ctx):
            return _graph_backward(ctx, saved, *grads)
        p = chain.open_pass(t, False, grads[0], ctx)
        d_h, d_c = ctx._forward_cls.step_backward(ctx, chain, t, p, saved, *grads)
        d_xw = d_w = d_b = None
        if t == chain.first:
            d_xw, d_w, d_b = finish(chain, _needs(ctx), saved[0])
        return _as_returned(chain.kind == "LSTM", d_xw, d_h, d_c, d_w, d_b)

    @staticmethod
    def pure_backward(ctx, *grads):
        return pure_backward(ctx, *grads)


def _wants_start(ctx, chain, t, state_index):
    """Whether a step computes its starting state's gradient: always, but for the first step
    processed (whose start is the initial state) only where that wants one."""
    return t != chain.first or ctx.needs_input_grad[state_index]


class LSTMStep(_StepNode):
    """``(chain, t, xw, h, c, W_hh, b_hh, anchor) -> (h_t before any projection, c_t)``."""

    @staticmethod
    def forward(ctx, chain, t, xw, h, c, w_hh, b_hh, anchor):
        rows = chain.rows[t]
        gates = F.linear(h, w_hh, b_hh) + xw[rows]
        acts = _lstm_activations_into(gates, chain.acts[rows] if chain.acts is not None else None)
        i, f, g, o = acts.chunk(4, dim=-1)
        new_c = f * c + i * g
        tanh_c = torch.tanh(new_c)
        _keep_inputs(ctx, chain, t, xw, h, w_hh, b_hh, anchor, c, extra=(tanh_c, _own_acts(chain, acts)))
        return o * tanh_c, new_c

    @staticmethod
    def step_backward(ctx, chain, t, p, saved, grad_h, grad_c):
        _, _, c, w_hh, _, tanh_c, acts = saved
        rows = chain.rows[t]
        i, f, g, o = _acts(chain, t, acts).chunk(4, dim=-1)
        d_c_out = _aten.tanh_backward.grad_input(grad_h * o, tanh_c, grad_input=p.direct_c[rows])
        d_c = grad_c + d_c_out
        d_gates = p.d_xw[rows]
        d_i, d_f, d_g, d_o = d_gates.chunk(4, dim=-1)
        _aten.sigmoid_backward.grad_input(torch.mul(d_c, g, out=d_i), i, grad_input=d_i)
        _aten.sigmoid_backward.grad_input(torch.mul(d_c, c, out=d_f), f, grad_input=d_f)
        _aten.tanh_backward.grad_input(torch.mul(d_c, i, out=d_g), g, grad_input=d_g)
        _aten.sigmoid_backward.grad_input(torch.mul(grad_h, tanh_c, out=d_o), o, grad_input=d_o)
        d_h = d_c_prev = None
        if _wants_start(ctx, chain, t, 3):
            d_h = start_grad(chain, t, lambda out: torch.mm(d_gates, w_hh, out=out), d_gates.shape[0], "h")
        if _wants_start(ctx, chain, t, 4):
            d_c_prev = start_grad(chain, t, lambda out: torch.mul(d_c, f, out=out), d_c.shape[0], "c")
        return d_h, d_c_prev


class GRUStep(_StepNode):
    """``(chain, t, xw, h, W_hh, b_hh, anchor) -> h_t``."""

    @staticmethod
    def forward(ctx, chain, t, xw, h, w_hh, b_hh, anchor):
        rows = chain.rows[t]
        hh = F.linear(h, w_hh, b_hh)
        acts = _gru_activations_into(xw[rows], hh, chain.acts[rows] if chain.acts is not None else None)
        r, z, n = acts.chunk(3, dim=-1)
        h_minus_n = h - n
        _keep_inputs(ctx, chain, t, xw, h, w_hh, b_hh, anchor, extra=(hh, h_minus_n, _own_acts(chain, acts)))
        return h_minus_n * z + n

    @staticmethod
    def step_backward(ctx, chain, t, p, saved, grad):
        _, _, _, w_hh, _, hh, h_minus_n, acts = saved
        rows = chain.rows[t]
        r, z, n = _acts(chain, t, acts).chunk(3, dim=-1)
        hn = hh.chunk(3, dim=-1)[2]
        d_xw = p.d_xw[rows]
        d_r, d_z, d_n = d_xw.chunk(3, dim=-1)
        _aten.tanh_backward.grad_input(grad - grad * z, n, grad_input=d_n)
        _aten.sigmoid_backward.grad_input(torch.mul(d_n, hn, out=d_r), r, grad_input=d_r)
        _aten.sigmoid_backward.grad_input(torch.mul(grad, h_minus_n, out=d_z), z, grad_input=d_z)
        d_hh = p.d_hh[rows]
        size = r.shape[-1]
        d_hh[:, :2 * size] = d_xw[:, :2 * size]
        torch.mul(d_n, r, out=d_hh[:, 2 * size:])
        if not _wants_start(ctx, chain, t, 3):
            return None, None
        # through W_hh and through (h - n) * z, summed as autograd sums a tensor's two uses
        return start_grad(chain, t, lambda out: torch.add(torch.mm(d_hh, w_hh), grad * z, out=out),
                          d_hh.shape[0], "h"), None


class RNNStep(_StepNode):
    """``(chain, t, xw, h, W_hh, b_hh, anchor) -> h_t``: tanh or relu of xw_t + W_hh h + b_hh."""

    @staticmethod
    def forward(ctx, chain, t, xw, h, w_hh, b_hh, anchor):
        pre = xw[chain.rows[t]] + F.linear(h, w_hh, b_hh)
        new_h = torch.relu(pre) if chain.kind == "RNN_RELU" else torch.tanh(pre)
        _keep_inputs(ctx, chain, t, xw, h, w_hh, b_hh, anchor, extra=(new_h,))
        return new_h

    @staticmethod
    def step_backward(ctx, chain, t, p, saved, grad):
        _, _, _, w_hh, _, new_h = saved
        d_pre = p.d_xw[chain.rows[t]]
        if chain.kind == "RNN_RELU":
            _aten.threshold_backward.grad_input(grad, new_h, 0, grad_input=d_pre)
        else:
            _aten.tanh_backward.grad_input(grad, new_h, grad_input=d_pre)
        if not _wants_start(ctx, chain, t, 3):
            return None, None
        return start_grad(chain, t, lambda out: torch.mm(d_pre, w_hh, out=out), d_pre.shape[0], "h"), None


# ---- double backward --------------------------------------------------------------------

def _graph_backward(ctx, saved, *grads):
    """``create_graph=True`` (or a step under autocast): the step recomputed with plain ops and
    differentiated, so higher derivatives stay right; the parts are recorded as numbers."""
    chain, t = ctx.chain, ctx.t
    is_lstm = chain.kind == "LSTM"
    p = chain.open_pass(t, True, grads[0], ctx)
    create_graph = torch.is_grad_enabled()
    # without create_graph no graph is needed: recompute from detached inputs, so that no hook on
    # them (a user's, on the state passed to a cell) runs inside this node's backward
    d_xw_t, d_h, d_c, d_w, d_b, d_probe = _recomputed(ctx, saved, grads, create_graph=create_graph,
                                                      detached=not create_graph)
    piece = chain.piece_of_start(t)
    if piece is not None:
        size = piece.stop - piece.start
        p.carried_h[piece] = d_h.detach()[:size]
        if is_lstm:
            p.carried_c[piece] = d_c.detach()[:size]
    if is_lstm:
        p.direct_c[chain.rows[t]] = d_probe.detach()
    p.d_xw[t] = d_xw_t
    p.add_weight_grads(d_w, d_b)
    d_all = d_w = d_b = None
    if t == chain.first:
        d_all, d_w, d_b = finish(chain, _needs(ctx), saved[0])
    return _as_returned(is_lstm, d_all, d_h, d_c, d_w, d_b)


def _as_returned(is_lstm, d_xw, d_h, d_c, d_w, d_b):
    if is_lstm:
        return None, None, d_xw, d_h, d_c, d_w, d_b, None
    return None, None, d_xw, d_h, d_w, d_b, None


def pure_backward(ctx, *grads):
    """The node's input gradients with no side effect: nothing written into the chain, nothing
    reported. For walks through the graph outside the engine (vjp.py, for ``scope.track``)."""
    saved = ctx.saved_tensors
    d_xw_t, d_h, d_c, d_w, d_b, _ = _recomputed(ctx, saved, grads, create_graph=False, detached=True)
    d_xw = None
    if d_xw_t is not None:
        d_xw = d_xw_t.new_zeros(saved[0].shape)
        d_xw[ctx.chain.rows[ctx.t]] = d_xw_t
    returned = _as_returned(ctx.chain.kind == "LSTM", d_xw, d_h, d_c, d_w, d_b)
    # as the engine sees the node: one gradient per tensor input (chain and t are not tensors)
    is_tensor = (False, False) + (True,) * (len(returned) - 4) + ctx.chain.optional
    return tuple(g for g, keep in zip(returned, is_tensor) if keep)


def _recomputed(ctx, saved, grads, create_graph, detached):
    """``(d xw_t, d h, d c, d W_hh, d b_hh, d c-probe)`` of the step recomputed with plain ops
    (under its forward's autocast) and differentiated; None where no gradient is wanted.
    ``detached``: from detached copies of the inputs (no hook of the user's graph runs)."""
    chain, t = ctx.chain, ctx.t
    is_lstm = chain.kind == "LSTM"
    xw, h, c, w_hh, b_hh = saved[:5]
    autocast = (torch.autocast(h.device.type, dtype=chain.autocast) if chain.autocast is not None
                else contextlib.nullcontext())
    with torch.enable_grad():
        if detached:
            xw, h, c, w_hh, b_hh = (None if x is None else x.detach().requires_grad_(x.requires_grad)
                                    for x in (xw, h, c, w_hh, b_hh))
        else:
            # fresh aliases of what every step shares: differentiating with respect to W_hh
            # itself would follow h back through every earlier step (its total derivative)
            w_hh, b_hh = (None if x is None else x.view_as(x) for x in (w_hh, b_hh))
        xw_t = xw[chain.rows[t]]
        probe = torch.zeros_like(c, requires_grad=True) if is_lstm else None
        with autocast:
            outputs = _differentiable_step(chain.kind, xw_t, h, c, w_hh, b_hh, probe)
        pairs = [(o, g) for o, g in zip(outputs, grads) if g is not None]
        candidates = [xw_t, h, c, w_hh, b_hh, probe]
        wanted = [i for i, x in enumerate(candidates) if x is not None and x.requires_grad]
        found = torch.autograd.grad([o for o, _ in pairs], [candidates[i] for i in wanted], [g for _, g in pairs],
                                    create_graph=create_graph, allow_unused=True)
    got = [None] * len(candidates)
    for i, value in zip(wanted, found):
        got[i] = value if value is not None else torch.zeros_like(candidates[i])
    return got


def _differentiable_step(kind, xw, h, c, w_hh, b_hh, c_probe):
    """One step with plain ops (the outputs of the node for ``kind``)."""
    if kind == "LSTM":
        gates = F.linear(h, w_hh, b_hh) + xw
        i, f, g, o = gates.chunk(4, dim=-1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        new_c = f * c + i * g
        return o * torch.tanh(new_c + c_probe), new_c
    if kind == "GRU":
        xr, xz, xn = xw.chunk(3, dim=-1)
        hr, hz, hn = F.linear(h, w_hh, b_hh).chunk(3, dim=-1)
        r = torch.sigmoid(hr + xr)
        z = torch.sigmoid(hz + xz)
        n = torch.tanh(xn + hn * r)
        return ((h - n) * z + n,)
    pre = xw + F.linear(h, w_hh, b_hh)
    return (torch.relu(pre) if kind == "RNN_RELU" else torch.tanh(pre),)
