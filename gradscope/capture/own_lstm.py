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
from gradscope.capture.cpu_tanh import tanh
from gradscope.capture.buffers import empty as pooled_empty
from gradscope.capture.own_bptt import add_at_final, backward_plan


class Factors:
    """Per-row derivative factors over all rows at once: dgates = K * (total_c, total_c,
    total_c, a) where a = dL/d(o * tanh c); direct_c = a * Kc; carried_c = total_c * F.

    K is made in place over ``gates`` (which it takes over: the caller must not read them
    afterwards), one gate at a time. Each factor of the form u (1 - v) or u (1 - v^2) is one
    ``addcmul`` (u - u v, u - (u v) v): these passes over (N, H) are memory-bound, and ten of
    them cost half of the twenty-one that separate ops took (a recorded LSTM step at 32x256x200
    spent ~7 ms of ~105 in them)."""

    def __init__(self, gates, c_all, prev_c, buffers=None):
        size = c_all.shape[1]
        i, f, g, o = gates.split(size, 1)

        def empty():  # (N, H) working buffers from the Scope's pool: fresh pages cost most here
            return pooled_empty(buffers, c_all.shape, c_all)

        self.F = empty().copy_(f)
        tc = tanh(c_all, out=empty())
        self.tc_o = torch.mul(tc, o, out=empty())  # the projection's input (proj_size) and a factor of K's o part
        self.Kc = torch.addcmul(o, self.tc_o, tc, value=-1, out=tc)  # o - o tanh^2 c
        torch.addcmul(self.tc_o, self.tc_o, o, value=-1, out=o)  # tanh(c) o (1 - o)
        ig = torch.mul(i, g, out=empty())
        torch.addcmul(i, ig, g, value=-1, out=g)  # i (1 - g^2), before i is overwritten
        torch.addcmul(ig, ig, i, value=-1, out=i)  # g i (1 - i)
        fc = torch.mul(f, prev_c, out=ig)
        torch.addcmul(fc, fc, f, value=-1, out=f)  # c_prev f (1 - f)
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


def bptt(record, reverse, known_h, known_c, f, w_hh, w_hr, h_shape, c_shape, buffers=None):
    """The loop over t in backward order. Returns a dict of all rows' carried h and c, the
    direct part of c from h, the gate gradients, the totals of h and c (which the norms then need
    not sum again), and the initial states' gradients.

    A step is six ops: at small layers over long sequences (16 x 64 x 1000) the loop's cost is
    per-op dispatch, not arithmetic, so every view a step needs is made before the loop (one
    ``split`` per tensor), the state products go straight into the next step's rows (``out=``),
    the loop runs in inference mode (no autograd dispatch), and the direct part of c (a * Kc)
    is taken for all rows at once after it. ``buffers``: the Scope's pool (buffers.py) for the
    loop's buffers, which it writes a step's rows at a time (fresh pages cost most written so)."""
    rows = _StepRows(record, known_h, known_c, f, w_hr, reverse, buffers)
    dh0, dc0 = known_h.new_zeros(h_shape), known_h.new_zeros(c_shape)
    with torch.inference_mode():  # in place into the buffers made above
        _reverse_loop(rows, backward_plan(record, reverse), record.batch_sizes, w_hh, w_hr, dh0, dc0)
    direct_c = torch.mul(rows.a_all, f.Kc, out=pooled_empty(buffers, f.Kc.shape, f.Kc))
    return {"carried_h": rows.carried_h, "carried_c": rows.carried_c.squeeze(1), "direct_c": direct_c,
            "G": f.K, "dh0": dh0, "dc0": dc0, "total_h": rows.total_h, "total_c": rows.total_c.squeeze(1)}


class _StepRows:
    """The loop's buffers over all rows and each one's per-step views (``x_s[t]``), the
    c-sized ones as (rows, 1, H) so that they broadcast over the i, f, g gates. Each step's
    factors ``f.K`` become its gate gradients in place (no second (N, 4H) buffer)."""

    def __init__(self, record, known_h, known_c, f, w_hr, reverse, buffers=None):
        bs = record.batch_sizes
        n_rows, size = f.Kc.shape

        def empty(*shape):
            return pooled_empty(buffers, shape, known_h)

        self.carried_h = empty(*known_h.shape).zero_()
        self.carried_c = empty(n_rows, 1, size).zero_()
        self.total_h = empty(*known_h.shape)
        # a = dL/d(o * tanh c): the total itself, or through the projection
        self.a_all = self.total_h if w_hr is None else empty(n_rows, size)
        self.total_c = empty(n_rows, 1, size)
        with torch.inference_mode():  # views for the loop only: here they skip autograd's bookkeeping
            self._split(known_h, known_c, f, w_hr, reverse, bs, n_rows)

    def _split(self, known_h, known_c, f, w_hr, reverse, bs, n_rows):
        self.known_s, self.carried_s, self.total_s = (v.split(bs) for v in (known_h, self.carried_h, self.total_h))
        self.a_s = self.total_s if w_hr is None else self.a_all.split(bs)
        self.a_u_s, self.kc_s, self.f_s = (v.unsqueeze(1).split(bs) for v in (self.a_all, f.Kc, f.F))
        self.carried_c_s, self.total_c_s = self.carried_c.split(bs), self.total_c.split(bs)
        G = f.K
        self.ifg_s, self.o_s, self.flat_s = G[:, :3].split(bs), G[:, 3].split(bs), G.view(n_rows, -1).split(bs)
        self.known_c_s = known_c.unsqueeze(1).split(bs) if known_c is not None else None
        self.known_c_at = _steps_with_final_rows(bs, reverse) if known_c is not None else ()


def _reverse_loop(r, plan, bs, w_hh, w_hr, dh0, dc0):
    # names bound once: at 1,000 steps each attribute read inside the loop costs
    known_s, carried_s, total_s, a_s, a_u_s, kc_s = r.known_s, r.carried_s, r.total_s, r.a_s, r.a_u_s, r.kc_s
    f_s, carried_c_s, total_c_s, ifg_s, o_s, flat_s = r.f_s, r.carried_c_s, r.total_c_s, r.ifg_s, r.o_s, r.flat_s
    known_c_at, known_c_s = r.known_c_at, r.known_c_s
    add, addcmul, mul = torch.add, torch.addcmul, torch.mul
    matmul = cpu_matmul.right_product(w_hh, max(bs))
    project = cpu_matmul.right_product(w_hr, max(bs)) if w_hr is not None else None
    for t, nt, straight in plan:
        total = add(known_s[t], carried_s[t], out=total_s[t])
        if project is not None:
            project(total, out=a_s[t])
        c_t = addcmul(carried_c_s[t], a_u_s[t], kc_s[t], out=total_c_s[t])
        if t in known_c_at:
            c_t += known_c_s[t]
        ifg_s[t].mul_(c_t)
        o_s[t].mul_(a_s[t])
        if straight:  # every row goes on: straight into the next step's rows
            matmul(flat_s[t], out=carried_s[nt])
            mul(c_t, f_s[t], out=carried_c_s[nt])
            continue
        active = bs[t]
        continuing = min(active, bs[nt]) if nt is not None else 0
        back_h = matmul(flat_s[t])
        back_c = (c_t * f_s[t]).squeeze(1)
        if continuing:
            carried_s[nt][:continuing] = back_h[:continuing]
            carried_c_s[nt][:continuing] = back_c[:continuing].unsqueeze(1)
        dh0[continuing:active] = back_h[continuing:]
        dc0[continuing:active] = back_c[continuing:]


def _steps_with_final_rows(bs, reverse):
    """Time steps that hold some sequence's final row (the reverse direction ends at t = 0)."""
    if reverse:
        return {0}
    return {t for t in range(len(bs)) if t + 1 == len(bs) or bs[t + 1] < bs[t]}


def record_parts(job, record, parts):
    layer, direction = job.layer, job.direction
    record.add(layer, direction, "h", "carried", parts["carried_h"])
    record.add(layer, direction, "c", "carried", parts["carried_c"])
    record.add(layer, direction, "c", "direct", parts["direct_c"])
    for state in record.states:
        record.add_total(layer, direction, state, parts[f"total_{state}"])
        record.probe_fired(layer, direction, state)


def gradients(need, parts, f, known_h, inputs, prev_h):
    """(dx, dh0, dc0, dW_ih, dW_hh, db_ih, db_hh, dW_hr) from all rows' gate gradients."""
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr = inputs
    G = parts["G"].view(parts["G"].shape[0], -1)
    dx = cpu_matmul.matmul(G, w_ih) if need[1] else None
    dw_ih, dw_hh = cpu_matmul.weight_gradients(G, [x if need[4] else None, prev_h if need[5] else None])
    db = cpu_matmul.column_sums(G) if (need[6] or need[7]) else None
    dw_hr = None
    if w_hr is not None and need[8]:
        dw_hr = cpu_matmul.weight_gradient(parts["total_h"], f.tc_o)
    return (dx, parts["dh0"] if need[2] else None, parts["dc0"] if need[3] else None, dw_ih, dw_hh,
            db if need[6] else None, (db.clone() if need[6] else db) if need[7] else None, dw_hr)
