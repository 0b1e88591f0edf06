"""The exact route for nn.RNN / nn.GRU / nn.LSTM: step the module's own computation one time
step at a time, with the module's own weights and the same cell ops, so that every state is an
autograd tensor whose gradient can be measured.

Per layer and direction, zero probes are added where a state is used again:
  - ``carry`` probe on the recurrent use (h_t -> step t+1): its gradient is the carried part;
  - for LSTM, a probe where c_t enters h_t: its gradient is the direct part of dL/dc_t;
  - a hook on the layer output gives the direct part of dL/dh_t (from the loss or the layer above);
  - the final state returned to the user is a copy with a hook (direct part of the last step);
    a next call that continues the sequence adds the carried part (see links.py).
Probes are one leaf tensor per layer, direction and state, split into time steps by one op, so
there is no hook per time step.
"""

import weakref

import torch
import torch.nn.functional as F

from gradscope.capture.accumulate import CallRecord
from gradscope.capture.forward_nonfinite import note_nonfinite_rows
from gradscope.capture.gate_stats import gate_statistics
from gradscope.capture.module_call import ModuleCall
from gradscope.cells import GATES, gru_step_node, lstm_step_node, module_weights, rnn_step


def exact_module_forward(ctx, name, module, input, hx=None):
    """Run ``module`` (nn.RNN, nn.GRU or nn.LSTM) on ``input`` exactly as its forward would,
    recording into the capture context ``ctx`` (a Scope's view of the open step)."""
    call = ModuleCall(ctx, name, module, input, hx)
    layout = call.layout
    rows = layout.rows()
    record = CallRecord(name, call.kind, call.call_index, call.t_offset, layout.bs, call.layers, call.directions,
                        call.states, rows.device, sorted_indices=layout.sorted_indices)
    ctx.add_call(record)
    note_nonfinite_rows(record, "input", 0, rows)
    low = _autocast_dtype(call, rows)
    finals = {state: [] for state in call.states}
    layer_in = rows
    for layer in range(call.layers):
        layer_out = _exact_layer(ctx, record, call, layer, layer_in, finals)
        layer_in = call.next_layer_input(layer, layer_out)
    if low is not None:
        layer_in = layer_in.to(low)
    return layout.output(layer_in), _returned_states(ctx, record, call, finals, low)


def _autocast_dtype(call, rows):
    """CPU autocast runs aten::lstm as one lower-precision kernel (RNN and GRU run as cell ops
    there, as here): its outputs come back in that dtype, so ours do too. None: no cast."""
    if call.is_lstm and rows.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        return torch.get_autocast_dtype("cpu")
    return None


def _exact_layer(ctx, record, call, layer, layer_in, finals):
    """Every direction of one layer; returns the layer's output rows (directions side by side)
    and appends each direction's final states to ``finals``."""
    outs = []
    for d, direction in enumerate(call.directions):
        weights = module_weights(call.module, layer, direction)
        record.weights[(layer, direction)] = {k: (v.detach() if v is not None else None) for k, v in weights.items()}
        xw = F.linear(layer_in, weights["w_ih"], weights["b_ih"])
        index = layer * len(call.directions) + d
        rows, h_fin, c_fin = run_direction(
            ctx, record, call.kind, layer, direction, xw, call.layout.bs, call.h0[index],
            call.c0[index] if call.is_lstm else None, weights)
        outs.append(rows)
        finals["h"].append(h_fin)
        if call.is_lstm:
            finals["c"].append(c_fin)
    layer_out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
    note_nonfinite_rows(record, "output", layer, layer_out)
    ctx.hook(layer_out, lambda g: _direct_from_output(record, layer, call.directions, call.size_h, g))
    return layer_out


def _returned_states(ctx, record, call, finals, low):
    """The final states as the module returns them (in dtype ``low`` where not None): h, or
    (h, c), each a hooked copy."""
    user = []
    for state, pieces in finals.items():
        internal = call.layout.user_order(torch.stack(pieces))
        if low is not None:
            internal = internal.to(low)
        user.append(ctx.returned_state(record, state, internal, cell=False, squeeze=not call.layout.is_batched))
    return tuple(user) if call.is_lstm else user[0]


def _direct_from_output(record, layer, directions, size, grad):
    for d, direction in enumerate(directions):
        piece = grad if len(directions) == 1 else grad[:, d * size:(d + 1) * size]
        record.add(layer, direction, "h", "direct", piece)


def run_direction(ctx, record, kind, layer, direction, xw, bs, h0, c0, weights):
    """One layer, one direction over all time steps. Returns (output rows in time order (N, S),
    final h (B, S), final c or None), both finals in sorted batch order."""
    is_lstm = kind == "LSTM"
    reverse = direction == "reverse"
    steps = len(bs)
    pieces_h, pieces_c, pieces_c_out = _add_probes(ctx, record, kind, layer, direction, xw, bs, h0, c0)
    # GRU/LSTM activations go straight into one buffer the gate statistics read once (an RNN's
    # one "gate" is its output)
    gated = ctx.gate_stats and kind in ("GRU", "LSTM")
    acts = xw.new_empty(xw.shape, requires_grad=False) if gated else None
    acts_steps = acts.split(bs) if gated else [None] * steps
    prev_states = [None] * steps if ctx.jacobians else None
    outs = [None] * steps
    xw_steps = xw.split(bs)
    finals_h, finals_c = [], []
    h, c = h0, c0
    if reverse and bs[-1] < h0.shape[0]:
        h = h0[:bs[-1]]
        c = c0[:bs[-1]] if is_lstm else None
    for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
        if reverse:  # packed: longer sequences start here
            h = _with_starting(h, h0, bs[t])
            c = _with_starting(c, c0, bs[t]) if is_lstm else None
        if prev_states is not None:
            prev_states[t] = (torch.cat([h, c], dim=1) if is_lstm else h).detach()
        new_h, new_c = _cell_step(kind, xw_t=xw_steps[t], h=h, c=c, weights=weights,
                                  c_probe=pieces_c_out[t] if is_lstm else None, acts=acts_steps[t])
        outs[t] = new_h
        h, final = _pass_on(new_h, t, bs, reverse, pieces_h)
        if final is not None:
            finals_h.append(final)
        if is_lstm:
            c, final = _pass_on(new_c, t, bs, reverse, pieces_c)
            if final is not None:
                finals_c.append(final)
    rows = torch.cat(outs)  # a new tensor even for one step: its hook must see only the output's use
    if ctx.gate_stats:
        with torch.no_grad():
            gates = rows if acts is None else acts
            gate_statistics(record, kind, layer, direction, gates.view(rows.shape[0], len(GATES[kind]), -1))
    if prev_states is not None:
        record.jacobian_inputs[(layer, direction)] = {
            "xw": xw.detach(), "prev_state": torch.cat(prev_states), "weights": record.weights[(layer, direction)],
        }
    return rows, _joined(finals_h), _joined(finals_c) if is_lstm else None


def _add_probes(ctx, record, kind, layer, direction, xw, bs, h0, c0):
    """Zero probes for the recurrent use (rows used by the next processed step) and, for LSTM,
    for the use of c_t in h_t: one leaf per state, split into per-step pieces by one op.
    Returns the per-step pieces (h carried, c carried, c direct; None where there is none)."""
    is_lstm = kind == "LSTM"
    n_rows = sum(bs)
    carry = len(bs) > 1
    rows_carried = n_rows - bs[0]
    probe_h = probe_c = probe_c_out = None
    pieces_h = pieces_c = pieces_c_out = None
    if carry:
        probe_h = _zero_probe(xw, rows_carried, h0.shape[1])
        pieces_h = probe_h.split(bs[1:])
        if is_lstm:
            probe_c = _zero_probe(xw, rows_carried, c0.shape[1])
            pieces_c = probe_c.split(bs[1:])
    if is_lstm:
        probe_c_out = _zero_probe(xw, n_rows, c0.shape[1])
        pieces_c_out = probe_c_out.split(bs)

    record.add_series(layer, direction, "h", pending=1 if carry else 0)
    if is_lstm:
        record.add_series(layer, direction, "c", pending=2 if carry else 1)
    record.probe_leaves.extend(weakref.ref(p) for p in (probe_h, probe_c, probe_c_out) if p is not None)
    if carry:
        rows = _carried_rows(record, bs, direction == "reverse")
        ctx.probe(probe_h, record, layer, direction, "h", "carried", rows)
        if is_lstm:
            ctx.probe(probe_c, record, layer, direction, "c", "carried", rows)
    if is_lstm:
        ctx.probe(probe_c_out, record, layer, direction, "c", "direct", None)
    return pieces_h, pieces_c, pieces_c_out


def _zero_probe(like, rows, size):
    """A (rows, size) leaf of zeros that takes no memory: one zero expanded (a probe is only
    read, and a filled buffer cost a full pass over fresh pages per call)."""
    return like.new_zeros(()).expand(rows, size).requires_grad_()


def _cell_step(kind, xw_t, h, c, weights, c_probe, acts):
    """One time step of the cell: (new h, new c or None); GRU/LSTM activations into ``acts``."""
    w_hh, b_hh = weights["w_hh"], weights["b_hh"]
    if kind == "LSTM":
        return lstm_step_node(xw_t, h, c, w_hh, b_hh, weights["w_hr"], c_probe=c_probe, acts=acts)
    if kind == "GRU":
        return gru_step_node(xw_t, h, w_hh, b_hh, acts=acts), None
    return rnn_step(xw_t, h, w_hh, b_hh, relu=kind == "RNN_RELU")[0], None


def _with_starting(state, initial, active):
    """Reverse direction over packed sequences: the longer sequences start at this step, from
    their initial state."""
    if state.shape[0] < active:
        return torch.cat([state, initial[state.shape[0]:active]])
    return state


def _pass_on(new, t, bs, reverse, pieces):
    """Where the state made at step ``t`` goes: ``(state the next processed step starts from,
    with its carry probe; or None, rows whose sequence ends here; or None)``."""
    if reverse:
        return (new + pieces[t - 1], None) if t > 0 else (None, new)
    active = bs[t]
    following = bs[t + 1] if t + 1 < len(bs) else 0
    final = None
    if following < active:  # these sequences end here: their final state
        final = new if following == 0 else new[following:]
    if not following:
        return None, final
    return (new if following == active else new[:following]) + pieces[t], final


def _joined(finals):
    """Final states collected as sequences ended (shortest last) -> sorted batch order."""
    return finals[0] if len(finals) == 1 else torch.cat(finals[::-1])


def _carried_rows(record, bs, reverse):
    """Flat rows whose recurrent use the carry probe stands for, in the probe's row order."""
    n_rows = sum(bs)
    if reverse:
        return slice(bs[0], n_rows)  # steps 1..T-1, all their rows
    if record.uniform:
        return slice(0, n_rows - bs[0])  # steps 0..T-2
    offsets = record.offsets()
    index = [offsets[t] + i for t in range(len(bs) - 1) for i in range(bs[t + 1])]
    return torch.tensor(index, device=record.device)
