"""One nn.LSTM layer on the CPU as one autograd Function: a forward, then gradscope's own
backward (own_lstm.py's BPTT) in place of PyTorch's.

The forward is PyTorch's own fused op (oneDNN where it applies) for layers whose per-step
product is small: one call for all steps is far cheaper than a loop of per-step ops when the
sequence is long and the layer small (a 64-unit layer over 1,000 steps: ~5 ms fused against
~30 ms stepped), and its outputs are the unwatched ones, bitwise; the backward then recomputes
the gates of every step at once (one product over all rows) and rebuilds c_t by a
one-op-per-step scan. Larger layers step their forward in gradscope's loop, which keeps the
gates and c_t for the backward (``stepped``). Either way the BPTT yields the per-step totals and
the gradients, equal to PyTorch's within float rounding.
"""

import torch
from torch import _VF

from gradscope.capture import cpu_matmul
from gradscope.capture.cpu_tanh import tanh, tanh_
from gradscope.capture.buffers import empty as pooled_empty
from gradscope.capture.fast_adjoint import cell_scan, previous_states, start_states
from gradscope.capture.own_bptt import OwnLayerJob, processing_order, spoil_and_warn
from gradscope.capture.gate_stats import gate_statistics
from gradscope.capture.own_lstm import arrived, bptt, Factors, gradients, jacobian_inputs, record_parts

WEIGHT_NAMES = ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr")
STEPPED_MIN_WORK = 6_000_000  # multiply-adds of one step's recurrent product (see ``stepped``)


class LayerJob:
    """One layer, all its directions: where the numbers go and how the fused op is called."""

    def __init__(self, ctx, record, layer, directions, packed, batch_sizes, has_bias, training, jacobians,
                 stepped=False):
        self.stepped = stepped  # the layer's forward as gradscope's loop (``stepped``), else fused
        self.ctx = ctx
        self.record = record
        self.layer = layer
        self.directions = directions
        self.packed = packed
        self.batch_sizes = batch_sizes
        self.has_bias = has_bias
        self.training = training
        self.jacobians = jacobians


def run_layer(job, layer_in, h0, c0, weights):
    """``(output, h_n, c_n)`` of one layer as the fused op returns them; ``weights`` one dict
    per direction (cells.module_weights)."""
    names = [[k for k in WEIGHT_NAMES if w[k] is not None] for w in weights]
    flat = [w[k] for w, keys in zip(weights, names) for k in keys]
    return _OwnLSTMLayer.apply(job, names, layer_in, h0, c0, *flat)


def _stepped_forward(record, reverse, x, h0, c0, w, buffers=None):
    """One direction's forward as gradscope's own loop over t, for layers whose per-step product
    is large enough to hide Python's per-op cost (``stepped``): it keeps the activated gates
    (N, 4H) in i|f|g|o order and the cell states (N, H), which the backward then need not
    recompute. Returns ``(output rows, gates, cell states)``; the cell states (which the forward
    writes a step's rows at a time) from the Scope's pool ``buffers`` where given (the output
    rows are the user's: never pooled)."""
    size = c0.shape[1]
    bias = None if w["b_ih"] is None else w["b_ih"] + w["b_hh"]
    gates = cpu_matmul.linear(x, w["w_ih"], bias)
    c_all = pooled_empty(buffers, (x.shape[0], size), x)
    out = torch.empty(x.shape[0], h0.shape[1], dtype=x.dtype, device=x.device)
    previous_h = previous_c = None
    with torch.inference_mode():  # per-step ops into the buffers above: no autograd dispatch
        for t, rows, active in processing_order(record, reverse):
            prev_h, prev_c = start_states(previous_h, h0, active), start_states(previous_c, c0, active)
            g = gates[rows]
            g += cpu_matmul.linear(prev_h, w["w_hh"])
            g[:, :2 * size].sigmoid_()
            tanh_(g[:, 2 * size:3 * size])
            g[:, 3 * size:].sigmoid_()
            i, f, cand, o = g.split(size, 1)
            # f c_prev + i g and o tanh(c), each written straight into its rows: the same
            # products as the out-of-place forms, without two fresh (B, H) tensors per step
            c = torch.mul(f, prev_c, out=c_all[rows]).addcmul_(i, cand)
            if w["w_hr"] is None:
                tanh(c, out=out[rows]).mul_(o)
            else:
                out[rows] = cpu_matmul.linear(o * tanh(c), w["w_hr"])
            previous_h, previous_c = out[rows], c
    return out, gates, c_all


def stepped(layer_in, weights):
    """True where the stepped forward is the cheaper one: a (batch, 4H) x (4H, H) product per
    step of at least ``STEPPED_MIN_WORK`` multiply-adds. Measured (gradscope bench, 2 threads):
    at 32x256x200 (8.4M per step) a recorded step costs 1.44x stepped against 1.56x-1.65x fused
    plus recomputed gates; at 64x128x100 (4.2M) 1.72x against 1.64x; at 16x64x1000 the fused
    forward wins clearly (its forward 22 ms against 37 ms stepped, one thread)."""
    batch = layer_in.shape[1] if layer_in.dim() == 3 else None
    w_hh = weights[0]["w_hh"]
    if batch is None or layer_in.dtype != torch.float32:
        return False
    return batch * w_hh.shape[0] * w_hh.shape[1] >= STEPPED_MIN_WORK


def _stepped_layer(job, layer_in, h0, c0, weights):
    """The layer's output, h_n, c_n as the fused op would return them, and each direction's
    (gates, cell states)."""
    x = layer_in.reshape(-1, layer_in.shape[-1])
    outs, hys, cys, kept = [], [], [], []
    for d in range(len(job.directions)):
        reverse = d == 1
        out, gates, c_all = _stepped_forward(job.record, reverse, x, h0[d], c0[d], weights[d], job.ctx.buffers)
        rows = job.record.final_rows("reverse" if reverse else "forward")
        outs.append(out)
        hys.append(out[rows])
        cys.append(c_all[rows])
        kept.append((gates, c_all))
    out = torch.cat(outs, 1) if len(outs) > 1 else outs[0]
    return out.view(layer_in.shape[0], layer_in.shape[1], -1), torch.stack(hys), torch.stack(cys), kept


def _fused(job, layer_in, h0, c0, flat):
    args = (flat, job.has_bias, 1, 0.0, job.training, len(job.directions) == 2)
    if job.packed:
        return _VF.lstm(layer_in, job.batch_sizes, (h0, c0), *args)
    return _VF.lstm(layer_in, (h0, c0), *args, False)


class _OwnLSTMLayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, job, names, layer_in, h0, c0, *flat):
        ctx.kept = None  # per direction (gates, cell states) from a stepped forward, for backward
        if job.stepped:
            out, hy, cy, ctx.kept = _stepped_layer(job, layer_in, h0, c0, _by_direction(names, flat))
        else:
            out, hy, cy = _fused(job, layer_in, h0, c0, list(flat))
        ctx.job, ctx.layer_job, ctx.names, ctx.record = job, job, names, job.record
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(layer_in, h0, c0, out, *flat)
        return out, hy, cy

    @staticmethod
    def backward(ctx, g_out, g_hy, g_cy):
        layer_in, h0, c0, out, *flat = ctx.saved_tensors
        job, ctx.job = ctx.job, None  # a second backward (retain_graph) computes, records nothing
        if torch.is_grad_enabled():  # create_graph=True: differentiate the fused op itself
            grads = _regrad(ctx, layer_in, h0, c0, flat, (g_out, g_hy, g_cy))
            with torch.no_grad():
                _directions(ctx, job, layer_in, h0, c0, out, flat, g_out, g_hy, g_cy, want_grads=False)
            return (None, None) + grads
        with torch.no_grad():
            return (None, None) + _directions(ctx, job, layer_in, h0, c0, out, flat, g_out, g_hy, g_cy)


def _directions(ctx, job, layer_in, h0, c0, out, flat, g_out, g_hy, g_cy, want_grads=True):
    """Every direction's BPTT: records its numbers (when ``job`` is live) and returns the
    gradients of (layer_in, h0, c0, *flat) unless ``want_grads`` is False."""
    record = ctx.record
    if job is not None and (not job.ctx.live() or record.closed):
        job = None
    x = layer_in.reshape(-1, layer_in.shape[-1])
    rows_out = out.reshape(-1, out.shape[-1])
    g_rows = g_out.reshape(-1, g_out.shape[-1]) if g_out is not None else None
    n_dir = h0.shape[0]
    size = h0.shape[-1]
    weights = _by_direction(ctx.names, flat)
    # a stepped forward's gates and cell states, taken over (the factors are made over them in
    # place): a second backward through the same graph (retain_graph) recomputes them
    kept, ctx.kept = ctx.kept, None
    need = ctx.needs_input_grad
    dx, dh0, dc0, dflat = None, [], [], []
    for d in range(n_dir):
        direction = "reverse" if d == 1 else "forward"
        reverse = d == 1
        w = weights[d]
        h_d = rows_out[:, d * size:(d + 1) * size]
        g_d = g_rows[:, d * size:(d + 1) * size] if g_rows is not None else None
        prev_h = previous_states(record, reverse, h0[d], h_d)
        if kept is not None:
            gates, c_all = kept[d]
            kept[d] = None
        else:
            gates, c_all = _recompute(record, reverse, x, prev_h, c0[d], w, job.ctx.buffers if job else None)
        step_job = OwnLayerJob(job.ctx, record, "LSTM", job.layer, direction, job.jacobians) if job else None
        try:
            known_h, known_c = arrived(step_job, record, reverse, g_d, _at(g_hy, d), _at(g_cy, d), h_d, c_all)
            if step_job is not None:
                if job.ctx.gate_stats:  # before the factors take the gates over
                    gate_statistics(record, "LSTM", job.layer, direction, gates.view(gates.shape[0], 4, -1))
                jacobian_inputs(step_job, record, x, w, prev_h, lambda: previous_states(record, reverse, c0[d], c_all))
        except Exception as err:  # never break the user's backward pass
            step_job = spoil_and_warn(step_job, err)
            job = None
            known_h, known_c = arrived(None, record, reverse, g_d, _at(g_hy, d), _at(g_cy, d), h_d, c_all)
        buffers = job.ctx.buffers if job is not None else None
        factors = Factors(gates, c_all, previous_states(record, reverse, c0[d], c_all), buffers)
        parts = bptt(record, reverse, known_h, known_c, factors, w["w_hh"], w["w_hr"], h0[d].shape, c0[d].shape,
                     buffers)
        if step_job is not None:
            record_parts(step_job, record, parts)
        if not want_grads:
            continue
        grads = gradients(_Need(need[2], _flat_need(need, ctx.names, d)), parts, factors, known_h,
                           (x, h0[d], c0[d], w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"], w["w_hr"]), prev_h)
        gx, gh0, gc0, *gw = grads
        if gx is not None:
            dx = gx if dx is None else dx + gx
        dh0.append(gh0)
        dc0.append(gc0)
        by_name = dict(zip(WEIGHT_NAMES, gw))
        dflat.extend(by_name[k] for k in ctx.names[d])
    if job is not None:
        job.ctx.reached()
    if not want_grads:
        return None
    return ((dx.view(layer_in.shape) if dx is not None else None),
            torch.stack(dh0) if need[3] else None, torch.stack(dc0) if need[4] else None, *dflat)


def _by_direction(names, flat):
    """The flat weight list as one dict per direction (missing weights None)."""
    weights, at = [], 0
    for keys in names:
        weights.append(dict.fromkeys(WEIGHT_NAMES) | dict(zip(keys, flat[at:at + len(keys)])))
        at += len(keys)
    return weights


def _flat_need(need, names, d):
    """needs_input_grad of direction ``d``'s weights, by name."""
    start = 5 + sum(len(keys) for keys in names[:d])
    return {k: need[start + i] for i, k in enumerate(names[d])}


class _Need:
    """needs_input_grad as own_lstm._gradients reads it: (job, x, h0, c0, w_ih, w_hh, b_ih,
    b_hh, w_hr)."""

    def __init__(self, x, weights):
        self._values = (False, x, True, True) + tuple(weights.get(k, False) for k in WEIGHT_NAMES)

    def __getitem__(self, index):
        return self._values[index]


def _at(grad, d):
    return grad[d] if grad is not None else None


def _recompute(record, reverse, x, prev_h, c0, w, buffers=None):
    """Activated gates (N, 4H) and cell states (N, H) of every row, from the layer's input and
    the states the fused forward returned; working buffers from the Scope's pool ``buffers``."""
    size = c0.shape[1]
    bias = None if w["b_ih"] is None else w["b_ih"] + w["b_hh"]
    gates = cpu_matmul.linear(x, w["w_ih"], bias)
    cpu_matmul.add_linear_(gates, prev_h, w["w_hh"])
    gates[:, :2 * size].sigmoid_()
    tanh_(gates[:, 2 * size:3 * size])
    gates[:, 3 * size:].sigmoid_()
    i, f, g, _ = gates.split(size, 1)
    ig = torch.mul(i, g, out=pooled_empty(buffers, i.shape, i))
    return gates, cell_scan(record, reverse, c0, f, ig, out=pooled_empty(buffers, i.shape, i))


def _regrad(ctx, layer_in, h0, c0, flat, grads):
    """Gradients by autograd through the fused op itself (create_graph=True)."""
    inputs = [layer_in, h0, c0, *flat]
    with torch.enable_grad():
        outputs = _fused(ctx.layer_job, layer_in, h0, c0, list(flat))
        pairs = [(o, g) for o, g in zip(outputs, grads) if g is not None]
        wanted = [i for i, t in enumerate(inputs) if ctx.needs_input_grad[i + 2]]
        result = torch.autograd.grad([o for o, _ in pairs], [inputs[i] for i in wanted], [g for _, g in pairs],
                                     create_graph=True, allow_unused=True)
    out = [None] * len(inputs)
    for i, grad in zip(wanted, result):
        out[i] = grad
    return tuple(out)
