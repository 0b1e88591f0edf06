"""The BPTT of one nn.LSTM direction on the CPU, given its activated gates and cell states
(own_lstm_layer.py runs the layer and calls it; own_bptt.py does RNN and GRU).

One reverse pass yields the per-step totals of dL/dh_t and dL/dc_t (what gradscope records) and
the gate gradients of every row, from which the weight and input gradients follow by one
product each. With projections (``proj_size``) h_t = W_hr (o_t * tanh c_t). Its products go
through oneDNN (cpu_matmul.py), as PyTorch's own fused CPU LSTM does.
"""

import torch
import torch.nn.functional as F

from gradscope.capture import cpu_matmul
from gradscope.capture.own_bptt import add_at_final, processing_order


class Factors:
    """Per-row derivative factors over all rows at once: dgates = K * (total_c, total_c,
    total_c, a) where a = dL/d(o * tanh c); direct_c = a * Kc; carried_c = total_c * F.

    K is made in place over ``gates`` (which it takes over: the caller must not read them
    afterwards), one gate at a time, so the factors cost two (N, H) buffers beyond the gates."""

    def __init__(self, gates, c_all, prev_c):
        size = c_all.shape[1]
        i, f, g, o = gates.split(size, 1)
        self.F = f.clone()
        tc_o = torch.tanh(c_all)
        self.Kc = torch.mul(tc_o, tc_o).neg_().add_(1).mul_(o)  # (1 - tanh^2 c) o
        self.tc_o = tc_o.mul_(o)  # the projection's input (proj_size) and a factor of K's o part
        k_g = torch.mul(g, g).neg_().add_(1).mul_(i)  # i (1 - g^2)
        i.sub_(i * i).mul_(g)  # g i (1 - i)
        g.copy_(k_g)
        del k_g
        f.sub_(f * f).mul_(prev_c)  # c_prev f (1 - f)
        o.neg_().add_(1).mul_(self.tc_o)  # tanh(c) o (1 - o)
        self.K = gates.view(gates.shape[0], 4, size)


def arrived(job, record, reverse, g_out, g_hn, g_cn, out, c_all):
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


def jacobian_inputs(job, record, x, w, prev_h, prev_c_of):
    """With ``jacobians=True``, what the Jacobians need (``prev_c_of()`` makes the previous cell
    states only then)."""
    key = (job.layer, job.direction)
    w_ih, b_ih = w["w_ih"], w["b_ih"]
    if job.jacobians:
        record.jacobian_inputs[key] = {"xw": F.linear(x, w_ih, b_ih), "prev_state": torch.cat([prev_h, prev_c_of()], 1),
                                       "weights": record.weights[key]}


def bptt(record, reverse, known_h, known_c, f, w_hh, w_hr, h_shape, c_shape):
    """The loop over t in backward order. Returns a dict of all rows' carried h and c, the
    direct part of c from h, the gate gradients, and the initial states' gradients."""
    size = f.Kc.shape[1]
    n_rows = f.Kc.shape[0]
    carried_h = known_h.new_zeros(known_h.shape)
    carried_c = known_h.new_zeros(n_rows, size)
    direct_c = known_h.new_empty(n_rows, size)
    G = f.K  # each step's factors become its gate gradients in place: no second (N, 4H) buffer
    dh0, dc0 = known_h.new_zeros(h_shape), known_h.new_zeros(c_shape)
    bs = record.batch_sizes
    # every per-row tensor split once into its steps' views: no slicing inside the loop
    known_s, carried_s, kc_s, direct_s = (v.split(bs) for v in (known_h, carried_h, f.Kc, direct_c))
    carried_c_s, k_s, f_s = carried_c.split(bs), G.split(bs), f.F.split(bs)
    known_c_s = known_c.split(bs) if known_c is not None else None
    order = [t for t, _, _ in processing_order(record, reverse)][::-1]
    for index, t in enumerate(order):
        active = bs[t]
        total = known_s[t] + carried_s[t]
        a = total if w_hr is None else cpu_matmul.matmul(total, w_hr)
        torch.mul(a, kc_s[t], out=direct_s[t])
        total_c = direct_s[t] + carried_c_s[t]
        if known_c_s is not None:
            total_c += known_c_s[t]
        g = k_s[t]
        torch.mul(g[:, :3], total_c.unsqueeze(1), out=g[:, :3])
        torch.mul(g[:, 3], a, out=g[:, 3])
        back_h = cpu_matmul.matmul(g.view(active, -1), w_hh)
        nt = order[index + 1] if index + 1 < len(order) else None
        continuing = min(active, bs[nt]) if nt is not None else 0
        if continuing == active:  # every row goes on: straight into the next step's rows
            torch.mul(total_c, f_s[t], out=carried_c_s[nt][:active])
            carried_s[nt][:active] = back_h
            continue
        back_c = total_c * f_s[t]
        if continuing:
            carried_s[nt][:continuing] = back_h[:continuing]
            carried_c_s[nt][:continuing] = back_c[:continuing]
        dh0[continuing:active] = back_h[continuing:]
        dc0[continuing:active] = back_c[continuing:]
    return {"carried_h": carried_h, "carried_c": carried_c, "direct_c": direct_c, "G": G, "dh0": dh0, "dc0": dc0}


def record_parts(job, record, parts):
    layer, direction = job.layer, job.direction
    record.add(layer, direction, "h", "carried", parts["carried_h"])
    record.add(layer, direction, "c", "carried", parts["carried_c"])
    record.add(layer, direction, "c", "direct", parts["direct_c"])
    for state in record.states:
        record.probe_fired(layer, direction, state)


def gradients(need, parts, f, known_h, inputs, prev_h):
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
