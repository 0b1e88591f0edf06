"""The fast route's own backpropagation through time for nn.RNN and nn.GRU layers on the CPU.

There PyTorch's "fused" RNN and GRU ops are a loop of per-step ATen ops whose backward is a
per-step autograd graph (only the LSTM has a fused CPU kernel, oneDNN's). So instead of adding a
recursion after that backward (recomputing every gate), one autograd Function per layer and
direction runs the forward loop itself, keeps the gates, and its backward is one pass of BPTT
that yields both the per-step totals gradscope records and the gradients PyTorch needs: the
weight and input gradients come from one product over all rows after the loop. Measured on a
2-core CPU this costs about what the module's own step costs (benchmarks/fast_route.py).

Outputs and gradients equal the module's own within float rounding, not bitwise (other order of
additions); a backward with ``create_graph=True`` recomputes the layer differentiably and
differentiates that, so gradient penalties work as on the module itself.

Rows are laid out as in accumulate.py: time-major, the first ``batch_sizes[t]`` sequences active
at t; a row whose step has no predecessor starts from the initial state.
"""

import torch
import torch.nn.functional as F

from gradscope.capture import cpu_matmul
from gradscope.capture.gate_stats import gate_statistics
from gradscope.capture.fast_adjoint import previous_states, start_states

OWN_KINDS = ("RNN_TANH", "RNN_RELU", "GRU", "LSTM")  # LSTM: own_lstm.py


def applies(call, layer_in, h0, weights):
    """True where gradscope's own BPTT replaces the module's layer: on the CPU, outside
    autocast, in a forward that autograd records."""
    if call.kind not in OWN_KINDS or layer_in.device.type != "cpu":
        return False
    if torch.is_autocast_enabled("cpu") or not torch.is_grad_enabled():
        return False
    tensors = [layer_in, h0] + [w for w in weights if w is not None]
    return any(t.requires_grad for t in tensors)


class OwnLayerJob:
    """One direction of one layer: where its numbers go."""

    def __init__(self, ctx, record, kind, layer, direction, jacobians):
        self.ctx = ctx
        self.record = record
        self.kind = kind
        self.layer = layer
        self.direction = direction
        self.jacobians = jacobians


def run_direction(job, x, h0, w_ih, w_hh, b_ih, b_hh):
    """(output rows (N, H), final state (B, H)) of one direction, recorded in backward."""
    return _OwnBPTT.apply(job, x, h0, w_ih, w_hh, b_ih, b_hh)


# ---- the forward loop -----------------------------------------------------------------------
def processing_order(record, reverse):
    """(t, rows, active) in processing order."""
    bs, offsets = record.batch_sizes, record.offsets()
    order = range(len(bs) - 1, -1, -1) if reverse else range(len(bs))
    return [(t, slice(offsets[t], offsets[t] + bs[t]), bs[t]) for t in order]


def backward_plan(record, reverse):
    """The reverse loop's steps: ``(t, the step it hands its state gradient to (None: the
    initial state), whether all of t's rows go on to exactly that step's rows)``, in backward
    order; made once so that the loop itself only indexes."""
    bs = record.batch_sizes
    order = [t for t, _, _ in processing_order(record, reverse)][::-1]
    following = order[1:] + [None]
    return [(t, nt, nt is not None and bs[nt] == bs[t]) for t, nt in zip(order, following)]


def _forward(kind, record, reverse, x, h0, w_ih, w_hh, b_ih, b_hh):
    """The layer's forward without autograd, into buffers of all rows (no per-step pieces to
    join: the forward's peak memory stays that of what it keeps). Returns the output rows, the
    activated gates (GRU: (N, 3H) r|z|n; RNN: None) and the hidden products' n part (GRU)."""
    size = h0.shape[1]
    gru = kind == "GRU"
    # an RNN adds both biases outside the activation: once for all rows
    bias = b_ih + b_hh if not gru and b_ih is not None else b_ih
    xw = cpu_matmul.linear(x, w_ih, bias)
    out = torch.empty(x.shape[0], size, dtype=x.dtype, device=x.device)
    hn_all = torch.empty_like(out) if gru else None
    gates = xw  # GRU: the input's part of each gate, overwritten by the gate itself
    with torch.inference_mode():  # per-step ops into the buffers above: no autograd dispatch
        _forward_loop(kind, record, reverse, h0, w_hh, b_hh, xw, out, hn_all)
    return out, (gates if gru else None), hn_all


def _forward_loop(kind, record, reverse, h0, w_hh, b_hh, xw, out, hn_all):
    """The steps of ``_forward``, writing ``out``, ``hn_all`` and (GRU) the gates over ``xw``."""
    size = h0.shape[1]
    gru = kind == "GRU"
    gates = xw
    previous = None
    for t, rows, active in processing_order(record, reverse):
        prev = start_states(previous, h0, active)
        h = out[rows]
        if gru:
            gh = cpu_matmul.linear(prev, w_hh, b_hh)
            g = gates[rows]
            rz = g[:, :2 * size]
            torch.sigmoid(rz.add_(gh[:, :2 * size]), out=rz)
            hn = hn_all[rows]
            hn.copy_(gh[:, 2 * size:])
            n = g[:, 2 * size:]
            torch.tanh(n.addcmul_(rz[:, :size], hn), out=n)
            torch.addcmul(n, rz[:, size:], prev - n, out=h)  # (1 - z) n + z prev
        else:
            pre = xw[rows].add_(cpu_matmul.linear(prev, w_hh))
            if kind == "RNN_TANH":
                torch.tanh(pre, out=h)
            else:
                torch.clamp(pre, min=0, out=h)  # relu
        previous = h


def _forward_differentiable(kind, record, reverse, x, h0, w_ih, w_hh, b_ih, b_hh):
    """The same forward in plain differentiable ops (for backward with ``create_graph=True``)."""
    size = h0.shape[1]
    xw = F.linear(x, w_ih, b_ih)
    outs = [None] * record.T
    previous = None
    for t, rows, active in processing_order(record, reverse):
        prev = start_states(previous, h0, active)
        gh = F.linear(prev, w_hh, b_hh)
        if kind == "GRU":
            gx = xw[rows]
            r = torch.sigmoid(gx[:, :size] + gh[:, :size])
            z = torch.sigmoid(gx[:, size:2 * size] + gh[:, size:2 * size])
            n = torch.tanh(gx[:, 2 * size:] + r * gh[:, 2 * size:])
            h = (1 - z) * n + z * prev
        else:
            h = torch.tanh(xw[rows] + gh) if kind == "RNN_TANH" else torch.relu(xw[rows] + gh)
        outs[t] = previous = h
    return torch.cat(outs)


def _final(record, reverse, out):
    rows = record.final_rows("reverse" if reverse else "forward")
    return out[rows] if isinstance(rows, slice) else out.index_select(0, rows)


class _OwnBPTT(torch.autograd.Function):
    @staticmethod
    def forward(ctx, job, x, h0, w_ih, w_hh, b_ih, b_hh):
        reverse = job.direction == "reverse"
        out, gates, hn = _forward(job.kind, job.record, reverse, x, h0, w_ih, w_hh, b_ih, b_hh)
        ctx.job, ctx.record, ctx.kind, ctx.reverse = job, job.record, job.kind, reverse
        ctx.set_materialize_grads(False)  # an unused output's gradient is None, not zeros to add
        ctx.gates, ctx.hn = gates, hn
        ctx.save_for_backward(x, h0, w_ih, w_hh, b_ih, b_hh, out)
        return out, _final(job.record, reverse, out).clone()

    @staticmethod
    def backward(ctx, g_out, g_hn):
        x, h0, w_ih, w_hh, b_ih, b_hh, out = ctx.saved_tensors
        job, ctx.job = ctx.job, None  # a second backward (retain_graph) computes, records nothing
        record, reverse = ctx.record, ctx.reverse
        if job is not None and (not job.ctx.live() or record.closed):
            job = None  # the step closed or the scope stopped: compute, record nothing
        with torch.no_grad():
            prev_h = previous_states(record, reverse, h0.detach(), out)
            # the factors are made over the gates in place: taken over here, so a second backward
            # through the same graph (retain_graph=True) runs the forward again for them
            gates, hn, ctx.gates, ctx.hn = ctx.gates, ctx.hn, None, None
            if ctx.kind == "GRU" and gates is None:
                _, gates, hn = _forward(ctx.kind, record, reverse, x, h0, w_ih, w_hh, b_ih, b_hh)
            try:
                known = _arrived(job, record, reverse, g_out, g_hn, out)
                if job is not None:
                    _gate_statistics(job, ctx.kind, out, gates, prev_h, x, w_ih, b_ih)
            except Exception as err:  # never break the user's backward pass
                job = spoil_and_warn(job, err)
                known = _arrived(None, record, reverse, g_out, g_hn, out)
            K, Kx, Z = _factors(ctx.kind, out, prev_h, gates, hn)
            del gates, hn
            G, carried, dh0 = _bptt(ctx.kind, record, reverse, known, K, Z, w_hh, h0.shape)
            if job is not None:
                _record(job, record, carried)
                job.ctx.reached()
        if torch.is_grad_enabled():  # create_graph=True: differentiate a differentiable re-run
            return (None,) + _regrad(ctx, (x, h0, w_ih, w_hh, b_ih, b_hh), g_out, g_hn)
        with torch.no_grad():
            return (None,) + _gradients(ctx, G, Kx, known, carried, dh0, x, w_ih, w_hh, b_ih, b_hh, prev_h)


# ---- the backward pass ----------------------------------------------------------------------
def _factors(kind, out, prev_h, gates, hn):
    """Per-row derivative factors ``(K, Kx, Z)``. RNN: dpre = K * total. GRU: the hidden side's
    gate gradients are K[:, g] * total, the input side's n gate Kx * total, and Z the update
    gate (the direct path to the previous state). The GRU's K is made in place over ``gates``
    (taken over: not to be read afterwards), one gate at a time."""
    if kind == "RNN_TANH":
        return torch.addcmul(torch.ones_like(out), out, out, value=-1), None, None
    if kind == "RNN_RELU":
        return (out > 0).to(out.dtype), None, None
    size = out.shape[1]
    r, z, n = gates[:, :size], gates[:, size:2 * size], gates[:, 2 * size:]
    Z = z.clone()
    a_n = torch.mul(n, n).neg_().add_(1)
    a_n.addcmul_(a_n, z, value=-1)  # (1 - z) (1 - n^2)
    z.sub_(z * z).mul_(prev_h - n)  # (h_prev - n) z (1 - z)
    torch.mul(a_n, r, out=n)  # (1 - z) (1 - n^2) r
    r.sub_(r * r).mul_(hn).mul_(a_n)  # (1 - z) (1 - n^2) hn r (1 - r)
    return gates.view(out.shape[0], 3, size), a_n, Z


def _arrived(job, record, reverse, g_out, g_hn, like):
    """Record the gradients that reached the layer from outside (its direct parts) and return
    their sum per row: the totals' known part."""
    if job is not None:
        if g_out is not None:
            record.add(job.layer, job.direction, "h", "direct", g_out)
        if g_hn is not None:
            record.add(job.layer, job.direction, "h", "direct", g_hn, record.final_rows(job.direction))
    return add_at_final(record, reverse, g_out, g_hn, like)


def add_at_final(record, reverse, g_rows, g_final, like):
    """``g_rows`` (N, S) plus ``g_final`` (B, S) at each sequence's final row; either may be
    None (zeros). Not a copy where there is nothing to add: read only."""
    if g_final is None:
        return g_rows if g_rows is not None else like.new_zeros(like.shape)
    known = g_rows.clone() if g_rows is not None else like.new_zeros(like.shape)
    rows = record.final_rows("reverse" if reverse else "forward")
    if isinstance(rows, slice):
        known[rows] += g_final
    else:
        known.index_add_(0, rows, g_final)
    return known


def _gate_statistics(job, kind, out, gates, prev_h, x, w_ih, b_ih):
    record = job.record
    key = (job.layer, job.direction)
    if job.ctx.gate_stats:
        size = out.shape[1]
        block = out.unsqueeze(1) if kind != "GRU" else gates.view(-1, 3, size)
        gate_statistics(record, kind, job.layer, job.direction, block)
    if job.jacobians:
        record.jacobian_inputs[key] = {"xw": F.linear(x, w_ih, b_ih), "prev_state": prev_h,
                                       "weights": record.weights[key]}


def _bptt(kind, record, reverse, known, K, z, w_hh, h0_shape):
    """The loop over t, in the backward order: total = known + carried; the hidden side's gate
    gradients G (all rows, written over the factors ``K``); carried (N, H); the initial state's
    gradient (B, H)."""
    carried = torch.zeros_like(known)
    dh0 = known.new_zeros(h0_shape)
    G = K  # each step's factors become its gate gradients in place: no second (N, G, H) buffer
    gru = kind == "GRU"
    bs = record.batch_sizes
    product = cpu_matmul.right_product(w_hh, max(bs))
    with torch.inference_mode():  # in place into the buffers above: no autograd dispatch
        # every per-row tensor split once into its steps' views (made here, a view skips
        # autograd's bookkeeping): no slicing inside the loop
        known_s, carried_s, k_s = known.split(bs), carried.split(bs), K.split(bs)
        z_s = z.split(bs) if gru else None
        g_s = K.view(K.shape[0], -1).split(bs)
        for t, nt, straight in backward_plan(record, reverse):
            total = known_s[t] + carried_s[t]
            g = k_s[t]
            torch.mul(g, total.unsqueeze(1) if gru else total, out=g)
            # the rows whose step started from the previous processed step get it as carried
            back = product(g_s[t], out=carried_s[nt] if straight else None)
            if gru:
                back.addcmul_(total, z_s[t])
            if straight:
                continue
            active = bs[t]
            continuing = min(active, bs[nt]) if nt is not None else 0
            if continuing:
                carried_s[nt][:continuing] = back[:continuing]
            if continuing < active:
                dh0[continuing:active] = back[continuing:]
    return G, carried, dh0


def spoil_and_warn(job, err):
    """No number rather than a wrong one: spoil the direction's series and say so once."""
    if job is None:
        return None
    for state in job.record.states:  # h, and c for an LSTM
        series = job.record.series.get((job.layer, job.direction, state))
        if series is not None:
            series.spoiled = True
    job.ctx.warn(("fast", type(err).__name__), (
        f"gradscope: the fast route's backward pass failed to record {job.record.module or '<root>'} layer "
        f"{job.layer} ({type(err).__name__}: {err}); its numbers of this step are not recorded."))
    job.ctx.reached()
    return None


def _record(job, record, carried):
    record.add(job.layer, job.direction, "h", "carried", carried)
    for state in record.states:
        record.probe_fired(job.layer, job.direction, state)


def _gradients(ctx, G, Kx, known, carried, dh0, x, w_ih, w_hh, b_ih, b_hh, prev_h):
    """(dx, dh0, dW_ih, dW_hh, db_ih, db_hh) from the gate gradients of all rows."""
    need = ctx.needs_input_grad
    G_h = G.view(G.shape[0], -1)
    gru = ctx.kind == "GRU"
    # an RNN's two weights share G (one product for both); a GRU's input side differs (below)
    dw_ih, dw_hh = cpu_matmul.weight_gradients(G_h, [x if need[3] and not gru else None,
                                                     prev_h if need[4] else None])
    db_hh = cpu_matmul.column_sums(G_h) if need[6] else None
    if gru:  # the input side's n gradient lacks the reset gate's factor
        torch.mul(known + carried, Kx, out=G[:, 2])
    G_x = G_h
    dx = cpu_matmul.matmul(G_x, w_ih) if need[1] else None
    if gru and need[3]:
        dw_ih = cpu_matmul.weight_gradient(G_x, x)
    if need[5]:
        # an RNN's two biases get the same gradient: two tensors, since .grad may keep either
        db_ih = db_hh.clone() if ctx.kind != "GRU" and db_hh is not None else cpu_matmul.column_sums(G_x)
    else:
        db_ih = None
    return dx, (dh0 if need[2] else None), dw_ih, dw_hh, db_ih, db_hh


def _regrad(ctx, inputs, g_out, g_hn):
    """Gradients by autograd over a differentiable re-run of the forward (create_graph=True)."""
    with torch.enable_grad():
        out = _forward_differentiable(ctx.kind, ctx.record, ctx.reverse, *inputs)
        final = _final(ctx.record, ctx.reverse, out)
        pairs = [(o, g) for o, g in ((out, g_out), (final, g_hn)) if g is not None]
        wanted = [(i, t) for i, t in enumerate(inputs) if t is not None and ctx.needs_input_grad[i + 1]]
        grads = torch.autograd.grad([o for o, _ in pairs], [t for _, t in wanted], [g for _, g in pairs],
                                    create_graph=True, allow_unused=True)
    result = [None] * len(inputs)
    for (i, _), grad in zip(wanted, grads):
        result[i] = grad
    return tuple(result)
