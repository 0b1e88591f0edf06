"""The fast route's reverse recursion: per-step totals of dL/dh_t (and dL/dc_t) of one layer,
rebuilt after the fused backward from the states the forward saved.

    total_t = direct_t + carried_t,   carried_t = J_{t+1}^T total_{t+1}

Everything that does not depend on the incoming gradient is computed for all t at once: the
gate pre-activations (two matmuls over all rows), the activations, the LSTM cell states (one
elementwise scan) and the per-step derivative factors. The loop over t is then one small
matmul with W_hh and a few elementwise ops per step, on the device, with no host sync.

Rows are laid out as in accumulate.py: time-major, the first ``batch_sizes[t]`` (sorted)
sequences active at t. The state a step starts from is the previous processed step's for the
rows that continue, and the initial state for the others (packed sequences that start late in
the reverse direction).
"""

import torch
import torch.nn.functional as F

from gradscope.capture.gate_stats import gate_statistics


class LayerJob:
    """What one layer's recursion needs, saved at forward time (detached tensors only)."""

    def __init__(self, ctx, record, kind, layer, directions, bs, size_h, size_c, inputs, outputs, h0, c0,
                 weights, jacobians):
        self.ctx = ctx
        self.gate_stats = ctx.gate_stats
        self.record = record
        self.kind = kind
        self.layer = layer
        self.directions = directions
        self.bs = bs
        self.size_h = size_h
        self.size_c = size_c
        self.inputs = inputs
        self.outputs = outputs
        self.h0 = h0.detach()
        self.c0 = c0.detach() if c0 is not None else None
        self.weights = weights
        self.jacobians = jacobians

    def live(self):
        """False once the step closed or the scope stopped: then nothing is recorded."""
        return self.ctx.live()

    def reached(self):
        """Tell the step clock a backward pass went through this step (it closes at its end)."""
        self.ctx.reached()

    def failed(self, err):
        for direction in self.directions:
            for state in self.record.states:
                series = self.record.series.get((self.layer, direction, state))
                if series is not None:
                    series.spoiled = True  # no number rather than a wrong one
        self.ctx.warn(("fast", type(err).__name__), (
            f"gradscope: the fast route's recursion failed for {self.record.module or '<root>'} layer "
            f"{self.layer} ({type(err).__name__}: {err}); its numbers of this step are not recorded."))


def run_layer(job, g_out, g_hy, g_cy=None):
    """Called once per backward pass with the gradients of the layer's output and final states
    (None where unused): records the direct parts, runs the recursion, records the carried parts."""
    record = job.record
    if record.closed or (g_out is None and g_hy is None and g_cy is None):
        return
    size = job.size_h
    if g_out is not None:
        g_out = g_out.reshape(-1, g_out.shape[-1])
    for d, direction in enumerate(job.directions):
        key = (job.layer, direction)
        if g_out is not None:
            record.add(job.layer, direction, "h", "direct", g_out[:, d * size:(d + 1) * size])
        if g_hy is not None:
            record.add(job.layer, direction, "h", "direct", g_hy[d], record.final_rows(direction))
        if g_cy is not None:
            record.add(job.layer, direction, "c", "direct", g_cy[d], record.final_rows(direction))
        states = _layer_states(job, d, direction)
        if job.gate_stats:
            gate_statistics(record, job.kind, job.layer, direction, states["gate_block"])
        if job.jacobians:
            prev = states["prev_h"] if job.kind != "LSTM" else torch.cat([states["prev_h"], states["prev_c"]], 1)
            record.jacobian_inputs[key] = {"xw": states["xw"], "prev_state": prev,
                                           "weights": record.weights[key]}
        known_h = _known(record, key + ("h",))
        known_c = _known(record, key + ("c",)) if job.kind == "LSTM" else None
        parts = _recursion(job, direction, states, known_h, known_c)
        for (state, part), value in parts.items():
            record.add(job.layer, direction, state, part, value)
        for state in record.states:
            record.probe_fired(job.layer, direction, state)


def _known(record, key):
    """The sum of the parts that reached this series from outside the layer so far."""
    series = record.series[key]
    values = [series.parts[p].whole(record.n_rows) for p in ("direct", "carried")]
    values = [v for v in values if v is not None]
    if not values:
        return None
    return values[0] if len(values) == 1 else values[0] + values[1]


# ---- states, gates and factors over all t at once -------------------------------------------
def _prev_index(record, reverse):
    """Row of [h0 (B rows); outputs (N rows)] each flat row's step starts from."""
    cache = record.__dict__.setdefault("_fast_prev_index", {})
    index = cache.get(reverse)
    if index is None:
        bs, batch = record.batch_sizes, record.batch_sizes[0]
        offsets = record.offsets()
        index = []
        for t, active in enumerate(bs):
            for i in range(active):
                if reverse:
                    index.append(batch + offsets[t + 1] + i if t + 1 < len(bs) and i < bs[t + 1] else i)
                else:
                    index.append(i if t == 0 else batch + offsets[t - 1] + i)
        index = cache[reverse] = torch.tensor(index, device=record.device)
    return index


def previous_states(record, reverse, initial, states):
    """(N, S): the state each row's step starts from."""
    batch, n_rows = record.batch_sizes[0], record.n_rows
    if record.uniform:
        if reverse:
            return torch.cat([states[batch:], initial])
        return torch.cat([initial, states[:n_rows - batch]])
    return torch.cat([initial, states]).index_select(0, _prev_index(record, reverse))


def _layer_states(job, d, direction):
    """Gates, activations, previous states and the derivative factors of one direction."""
    record, kind = job.record, job.kind
    reverse = direction == "reverse"
    size = job.size_h
    h = job.outputs[:, d * size:(d + 1) * size]
    # under autocast the fused op ran in a lower precision than the weights: recompute (and run
    # the recursion) in that precision too, as its own backward does, overflow included
    w = {k: (v.to(h.dtype) if v is not None else None) for k, v in job.weights[d].items()}
    prev_h = previous_states(record, reverse, job.h0[d].to(h.dtype), h)
    out = {"prev_h": prev_h, "w_hh": w["w_hh"], "w_hr": w["w_hr"]}
    if kind in ("RNN_TANH", "RNN_RELU") and not job.jacobians:
        xw = None  # an RNN's factors need only its outputs: no matmul over all t
    else:
        xw = F.linear(job.inputs.to(h.dtype), w["w_ih"], w["b_ih"])
    out["xw"] = xw
    if kind in ("RNN_TANH", "RNN_RELU"):
        out["gate_block"] = h.unsqueeze(1)
        out["K"] = torch.addcmul(torch.ones_like(h), h, h, value=-1) if kind == "RNN_TANH" else (h > 0).to(h.dtype)
        return out
    pre = F.linear(prev_h, w["w_hh"], w["b_hh"])
    if kind == "GRU":
        xr, xz, xn = xw.chunk(3, dim=1)
        hr, hz, hn = pre.chunk(3, dim=1)
        r = torch.sigmoid(hr + xr)
        z = torch.sigmoid(hz + xz)
        n = torch.tanh(xn + hn * r)
        out["gate_block"] = torch.stack([r, z, n], dim=1)
        a_n = (1 - z) * (1 - n * n)
        K = torch.empty(h.shape[0], 3, h.shape[1], dtype=h.dtype, device=h.device)
        torch.mul(a_n * hn, r * (1 - r), out=K[:, 0])
        torch.mul(prev_h - n, z * (1 - z), out=K[:, 1])
        torch.mul(a_n, r, out=K[:, 2])
        out["K"] = K
        out["Z"] = z
        return out
    # LSTM: activations in place on the (N, 4, H) pre-activations
    gates = pre.add_(xw).view(pre.shape[0], 4, -1)
    i, f, g, o = gates.unbind(1)
    i.sigmoid_(), f.sigmoid_(), g.tanh_(), o.sigmoid_()
    c = cell_scan(record, reverse, job.c0[d].to(h.dtype), f, i * g)
    prev_c = previous_states(record, reverse, job.c0[d], c)
    tc = torch.tanh(c)
    out["gate_block"] = gates
    out["prev_c"] = prev_c
    out["Kc"] = torch.addcmul(torch.ones_like(tc), tc, tc, value=-1).mul_(o)
    K = torch.empty_like(gates)
    torch.mul(g * i, 1 - i, out=K[:, 0])
    torch.mul(prev_c * f, 1 - f, out=K[:, 1])
    torch.mul(i, torch.addcmul(torch.ones_like(g), g, g, value=-1), out=K[:, 2])
    torch.mul(tc * o, 1 - o, out=K[:, 3])
    out["K"] = K
    out["F"] = f
    return out


def start_states(previous, initial, active):
    """The state a step's ``active`` rows start from: the previous processed step's (None: the
    first step), or for the reverse direction over packed sequences those plus the initial
    states of the longer sequences that start here."""
    if previous is None:
        return initial[:active]
    if previous.shape[0] == active:
        return previous
    if previous.shape[0] > active:
        return previous[:active]
    return torch.cat([previous, initial[previous.shape[0]:active]])


def cell_scan(record, reverse, c0, f, ig, out=None):
    """c_t = f_t * c_prev + i_t * g_t over the steps in processing order (into ``out``, an
    (N, H) buffer, where given)."""
    bs = record.batch_sizes
    c = torch.empty_like(ig) if out is None else out
    order = range(len(bs) - 1, -1, -1) if reverse else range(len(bs))
    previous = None
    with torch.inference_mode():  # one op per step into ``c`` and views made without autograd's bookkeeping
        c_steps, f_steps, ig_steps = c.split(bs), f.split(bs), ig.split(bs)
        for t in order:
            prev = start_states(previous, c0, bs[t])
            torch.addcmul(ig_steps[t], f_steps[t], prev, out=c_steps[t])
            previous = c_steps[t]
    return c


# ---- the loop over t -------------------------------------------------------------------------
def _recursion(job, direction, states, known_h, known_c):
    """carried parts of h (and c, plus the direct part of c from h_t, for LSTM) for all rows."""
    record, kind = job.record, job.kind
    bs = record.batch_sizes
    steps = len(bs)
    reverse = direction == "reverse"
    w_hh, w_hr = states["w_hh"], states["w_hr"]
    like = states["prev_h"]
    # the gradients that arrived may be of another precision than the layer ran in (autocast)
    known_h = known_h.to(like.dtype) if known_h is not None else None
    known_c = known_c.to(like.dtype) if known_c is not None else None
    rec_h = torch.zeros_like(like)
    split = lambda value: value.split(bs) if value is not None else [None] * steps  # noqa: E731
    known_h_s, rec_h_s = split(known_h), rec_h.split(bs)
    K_s = split(states["K"])
    order = range(steps) if reverse else range(steps - 1, -1, -1)
    out = {("h", "carried"): rec_h}
    if kind == "LSTM":
        size_c = job.size_c
        rec_c = like.new_zeros(like.shape[0], size_c)
        direct_c = like.new_empty(like.shape[0], size_c)
        known_c_s, rec_c_s, direct_c_s = split(known_c), rec_c.split(bs), direct_c.split(bs)
        Kc_s, F_s = split(states["Kc"]), split(states["F"])
        out[("c", "carried")] = rec_c
        out[("c", "direct")] = direct_c
        g_buffer = like.new_empty(bs[0], 4, size_c)
    elif kind == "GRU":
        Z_s = split(states["Z"])
    for t in order:
        nt = t + 1 if reverse else t - 1  # the step this one started from
        total = rec_h_s[t] if known_h_s[t] is None else known_h_s[t] + rec_h_s[t]
        if kind == "LSTM":
            a = total if w_hr is None else total @ w_hr
            torch.mul(a, Kc_s[t], out=direct_c_s[t])
            total_c = direct_c_s[t] + rec_c_s[t]
            if known_c_s[t] is not None:
                total_c = total_c + known_c_s[t]
        if not 0 <= nt < steps:
            continue
        m = min(bs[t], bs[nt])
        if kind == "LSTM":
            g = g_buffer[:m]
            torch.mul(K_s[t][:m, :3], total_c[:m].unsqueeze(1), out=g[:, :3])
            torch.mul(K_s[t][:m, 3], a[:m], out=g[:, 3])
            torch.mm(g.view(m, -1), w_hh, out=rec_h_s[nt][:m])
            torch.mul(total_c[:m], F_s[t][:m], out=rec_c_s[nt][:m])
        elif kind == "GRU":
            g = K_s[t][:m] * total[:m].unsqueeze(1)
            torch.addmm(total[:m] * Z_s[t][:m], g.view(m, -1), w_hh, out=rec_h_s[nt][:m])
        else:
            torch.mm(total[:m] * K_s[t][:m], w_hh, out=rec_h_s[nt][:m])
    return out

