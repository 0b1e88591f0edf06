"""The fast route's own BPTT for nn.LSTM layers on the CPU (own_bptt.py does RNN and GRU).

One autograd Function per layer and direction: the forward loop keeps the activated gates and
the cell states; the backward is one reverse pass that yields the per-step totals of dL/dh_t and
dL/dc_t (what gradscope records) and the gate gradients of every row, from which the weight and
input gradients follow by one product each. With projections (``proj_size``) h_t = W_hr (o_t *
tanh c_t). Its products go through oneDNN (cpu_matmul.py), as PyTorch's own fused CPU LSTM does.
"""

import torch
import torch.nn.functional as F

from gradscope.capture import cpu_matmul
from gradscope.capture.fast_adjoint import _previous
from gradscope.capture.gate_stats import gate_statistics
from gradscope.capture.own_bptt import _failed, _final, _start, _steps, add_at_final


def run_direction(job, x, h0, c0, w):
    """(output rows (N, H), final h (B, H), final c (B, H_c)) of one direction."""
    return _OwnLSTM.apply(job, x, h0, c0, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"], w["w_hr"])


def _forward(record, reverse, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr):
    """The forward loop without autograd: output rows, activated gates (N, 4H_c) in i|f|g|o
    order, cell states (N, H_c)."""
    size = c0.shape[1]
    bias = None if b_ih is None else b_ih + b_hh
    gates = cpu_matmul.linear(x, w_ih, bias)
    c_all = torch.empty(x.shape[0], size, dtype=x.dtype)
    out = torch.empty(x.shape[0], h0.shape[1], dtype=x.dtype)
    previous_h = previous_c = None
    for t, rows, active in _steps(record, reverse):
        prev_h, prev_c = _start(previous_h, h0, active), _start(previous_c, c0, active)
        g = gates[rows]
        g += cpu_matmul.linear(prev_h, w_hh)
        g[:, :2 * size].sigmoid_()
        g[:, 2 * size:3 * size].tanh_()
        g[:, 3 * size:].sigmoid_()
        i, f, cand, o = g.split(size, 1)
        c = torch.addcmul(f * prev_c, i, cand, out=c_all[rows])
        if w_hr is None:
            torch.mul(o, torch.tanh(c), out=out[rows])
        else:
            out[rows] = cpu_matmul.linear(o * torch.tanh(c), w_hr)
        previous_h, previous_c = out[rows], c
    return out, gates, c_all


def _forward_differentiable(record, reverse, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr):
    """The same forward in plain differentiable ops (for backward with ``create_graph=True``)."""
    size = c0.shape[1]
    xw = F.linear(x, w_ih, b_ih)
    outs, cells = [None] * record.T, [None] * record.T
    previous_h = previous_c = None
    for t, rows, active in _steps(record, reverse):
        prev_h, prev_c = _start(previous_h, h0, active), _start(previous_c, c0, active)
        i, f, cand, o = (xw[rows] + F.linear(prev_h, w_hh, b_hh)).split(size, 1)
        c = torch.sigmoid(f) * prev_c + torch.sigmoid(i) * torch.tanh(cand)
        h = torch.sigmoid(o) * torch.tanh(c)
        outs[t] = previous_h = h if w_hr is None else F.linear(h, w_hr)
        cells[t] = previous_c = c
    return torch.cat(outs), torch.cat(cells)


class _OwnLSTM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, job, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr):
        reverse = job.direction == "reverse"
        out, gates, c_all = _forward(job.record, reverse, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)
        ctx.job, ctx.record, ctx.reverse = job, job.record, reverse
        ctx.gates, ctx.c_all = gates, c_all
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, out)
        return out, _final(job.record, reverse, out).clone(), _final(job.record, reverse, c_all).clone()

    @staticmethod
    def backward(ctx, g_out, g_hn, g_cn):
        x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, out = ctx.saved_tensors
        job, ctx.job = ctx.job, None  # a second backward (retain_graph) computes, records nothing
        record, reverse = ctx.record, ctx.reverse
        if job is not None and (not job.ctx.live() or record.closed):
            job = None
        with torch.no_grad():
            prev_h = _previous(record, reverse, h0.detach(), out)
            prev_c = _previous(record, reverse, c0.detach(), ctx.c_all)
            f = _Factors(ctx.gates, ctx.c_all, prev_c)
            try:
                known_h, known_c = _arrived(job, record, reverse, g_out, g_hn, g_cn, out, ctx.c_all)
                if job is not None:
                    _side_records(job, record, ctx.gates, x, w_ih, b_ih, prev_h, prev_c)
            except Exception as err:  # never break the user's backward pass
                job = _failed(job, err)
                known_h, known_c = _arrived(None, record, reverse, g_out, g_hn, g_cn, out, ctx.c_all)
            parts = _bptt(record, reverse, known_h, known_c, f, w_hh, w_hr, h0.shape, c0.shape)
            if job is not None:
                _record(job, record, parts)
                job.ctx.reached()
        inputs = (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)
        if torch.is_grad_enabled():  # create_graph=True: differentiate a differentiable re-run
            return (None,) + _regrad(ctx, inputs, (g_out, g_hn, g_cn))
        with torch.no_grad():
            return (None,) + _gradients(ctx.needs_input_grad, parts, f, known_h, inputs, prev_h)


class _Factors:
    """Per-row derivative factors over all rows at once: dgates = K * (total_c, total_c,
    total_c, a) where a = dL/d(o * tanh c); direct_c = a * Kc; carried_c = total_c * F."""

    def __init__(self, gates, c_all, prev_c):
        size = c_all.shape[1]
        i, f, g, o = gates.split(size, 1)
        tc = torch.tanh(c_all)
        self.tc_o = tc * o  # the projection's input (proj_size) and a factor of K's o part
        self.Kc = torch.addcmul(torch.ones_like(tc), tc, tc, value=-1).mul_(o)
        K = torch.empty(gates.shape[0], 4, size, dtype=gates.dtype)
        torch.mul(g * i, 1 - i, out=K[:, 0])
        torch.mul(prev_c * f, 1 - f, out=K[:, 1])
        torch.mul(i, torch.addcmul(torch.ones_like(g), g, g, value=-1), out=K[:, 2])
        torch.mul(self.tc_o, 1 - o, out=K[:, 3])
        self.K, self.F = K, f


def _arrived(job, record, reverse, g_out, g_hn, g_cn, out, c_all):
    """Record the direct parts; return the known parts of the totals of h and c (None: zero)."""
    if job is not None:
        if g_out is not None:
            record.add(job.layer, job.direction, "h", "direct", g_out)
        final = record.final_rows(job.direction)
        if g_hn is not None:
            record.add(job.layer, job.direction, "h", "direct", g_hn, final)
        if g_cn is not None:
            record.add(job.layer, job.direction, "c", "direct", g_cn, final)
    known_h = add_at_final(record, reverse, g_out, g_hn, out)
    known_c = add_at_final(record, reverse, None, g_cn, c_all) if g_cn is not None else None
    return known_h, known_c


def _side_records(job, record, gates, x, w_ih, b_ih, prev_h, prev_c):
    key = (job.layer, job.direction)
    if job.ctx.gate_stats:
        gate_statistics(record, "LSTM", job.layer, job.direction, gates.view(gates.shape[0], 4, -1))
    if job.jacobians:
        record.jacobian_inputs[key] = {"xw": F.linear(x, w_ih, b_ih), "prev_state": torch.cat([prev_h, prev_c], 1),
                                       "weights": record.weights[key]}


def _bptt(record, reverse, known_h, known_c, f, w_hh, w_hr, h_shape, c_shape):
    """The loop over t in backward order. Returns a dict of all rows' carried h and c, the
    direct part of c from h, the gate gradients, and the initial states' gradients."""
    size = f.Kc.shape[1]
    n_rows = f.Kc.shape[0]
    carried_h = known_h.new_zeros(known_h.shape)
    carried_c = known_h.new_zeros(n_rows, size)
    direct_c = known_h.new_empty(n_rows, size)
    G = known_h.new_empty(n_rows, 4, size)
    dh0, dc0 = known_h.new_zeros(h_shape), known_h.new_zeros(c_shape)
    steps = _steps(record, reverse)
    steps.reverse()
    for index, (t, rows, active) in enumerate(steps):
        total = known_h[rows] + carried_h[rows]
        a = total if w_hr is None else cpu_matmul.matmul(total, w_hr)
        torch.mul(a, f.Kc[rows], out=direct_c[rows])
        total_c = direct_c[rows] + carried_c[rows]
        if known_c is not None:
            total_c += known_c[rows]
        g = G[rows]
        torch.mul(f.K[rows, :3], total_c.unsqueeze(1), out=g[:, :3])
        torch.mul(f.K[rows, 3], a, out=g[:, 3])
        back_h = cpu_matmul.matmul(g.view(active, -1), w_hh)
        back_c = total_c * f.F[rows]
        nxt = steps[index + 1] if index + 1 < len(steps) else None
        continuing = min(active, nxt[2]) if nxt is not None else 0
        if continuing:
            carried_h[nxt[1]][:continuing] = back_h[:continuing]
            carried_c[nxt[1]][:continuing] = back_c[:continuing]
        if continuing < active:
            dh0[continuing:active] = back_h[continuing:]
            dc0[continuing:active] = back_c[continuing:]
    return {"carried_h": carried_h, "carried_c": carried_c, "direct_c": direct_c, "G": G, "dh0": dh0, "dc0": dc0}


def _record(job, record, parts):
    layer, direction = job.layer, job.direction
    record.add(layer, direction, "h", "carried", parts["carried_h"])
    record.add(layer, direction, "c", "carried", parts["carried_c"])
    record.add(layer, direction, "c", "direct", parts["direct_c"])
    for state in record.states:
        record.probe_fired(layer, direction, state)


def _gradients(need, parts, f, known_h, inputs, prev_h):
    """(dx, dh0, dc0, dW_ih, dW_hh, db_ih, db_hh, dW_hr) from all rows' gate gradients."""
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr = inputs
    G = parts["G"].view(parts["G"].shape[0], -1)
    dx = cpu_matmul.matmul(G, w_ih) if need[1] else None
    dw_ih = cpu_matmul.weight_gradient(G, x) if need[4] else None
    dw_hh = cpu_matmul.weight_gradient(G, prev_h) if need[5] else None
    db = cpu_matmul.column_sums(G) if (need[6] or need[7]) else None
    dw_hr = None
    if w_hr is not None and need[8]:
        dw_hr = cpu_matmul.weight_gradient(known_h + parts["carried_h"], f.tc_o)
    return (dx, parts["dh0"] if need[2] else None, parts["dc0"] if need[3] else None, dw_ih, dw_hh,
            db if need[6] else None, (db.clone() if need[6] else db) if need[7] else None, dw_hr)


def _regrad(ctx, inputs, grads):
    """Gradients by autograd over a differentiable re-run of the forward (create_graph=True)."""
    with torch.enable_grad():
        out, c_all = _forward_differentiable(ctx.record, ctx.reverse, *inputs)
        outputs = (out, _final(ctx.record, ctx.reverse, out), _final(ctx.record, ctx.reverse, c_all))
        pairs = [(o, g) for o, g in zip(outputs, grads) if g is not None]
        wanted = [(i, t) for i, t in enumerate(inputs) if t is not None and ctx.needs_input_grad[i + 1]]
        result = torch.autograd.grad([o for o, _ in pairs], [t for _, t in wanted], [g for _, g in pairs],
                                     create_graph=True, allow_unused=True)
    grads_in = [None] * len(inputs)
    for (i, _), grad in zip(wanted, result):
        grads_in[i] = grad
    return tuple(grads_in)
