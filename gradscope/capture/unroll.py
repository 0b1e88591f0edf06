"""The exact route for nn.RNN / nn.GRU / nn.LSTM: step the module's own computation one time
step at a time, with the module's own weights and the same cell ops, so that every state is an
autograd tensor whose gradient can be measured.

Per layer and direction:
  - each time step is one autograd node (exact_steps.py) whose backward computes the carried
    part of the state it started from (and, for LSTM, the direct part of dL/dc_t: its use in
    h_t) and reports the parts once per backward pass;
  - a hook on the layer output gives the direct part of dL/dh_t (from the loss or the layer above);
  - the final state returned to the user is a copy with a hook (direct part of the last step);
    a next call that continues the sequence adds the carried part (see links.py).
There is no hook per time step.
"""

import torch
import torch.nn.functional as F

from gradscope.capture.accumulate import CallRecord
from gradscope.capture.buffers import empty as pooled_empty
from gradscope.capture.forward_nonfinite import note_nonfinite_rows
from gradscope.capture.gate_stats import gate_statistics
from gradscope.capture.module_call import ModuleCall
from gradscope.capture.exact_chain import StepChain
from gradscope.capture.exact_steps import GRUStep, LSTMStep, RNNStep
from gradscope.cells import GATES, module_weights


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
    _add_series(record, is_lstm, layer, direction)
    record.needs_reports = True
    # GRU/LSTM activations go straight into one buffer the gate statistics read once (an RNN's
    # one "gate" is its output)
    gated = ctx.gate_stats and kind in ("GRU", "LSTM")
    acts = None
    if gated:
        acts = pooled_empty(ctx.buffers, xw.shape, xw)
    chain = StepChain(kind, xw, bs, reverse, acts=acts, buffers=ctx.buffers,
                      report=_reporter(ctx, record, is_lstm, layer, direction, _carried_rows(record, bs, reverse)))
    w_hh, b_hh, w_hr = weights["w_hh"], weights["b_hh"], weights["w_hr"]
    anchor = _anchor(xw, h0, c0, weights)
    prev_states = [None] * steps if ctx.jacobians else None
    outs = [None] * steps
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
        if is_lstm:
            new_h, new_c = LSTMStep.apply(chain, t, xw, h, c, w_hh, b_hh, anchor)
            if w_hr is not None:
                new_h = F.linear(new_h, w_hr)
        else:
            new_h = (GRUStep if kind == "GRU" else RNNStep).apply(chain, t, xw, h, w_hh, b_hh, anchor)
        outs[t] = new_h
        h, final = _pass_on(new_h, t, bs, reverse)
        if final is not None:
            finals_h.append(final)
        if is_lstm:
            c, final = _pass_on(new_c, t, bs, reverse)
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


def _add_series(record, is_lstm, layer, direction):
    """The series of this layer and direction, each waiting for the one report the step nodes
    make per backward pass (so a call whose nodes did not all report is known at close)."""
    for state in ("h", "c") if is_lstm else ("h",):
        record.add_series(layer, direction, state, pending=1)


def _reporter(ctx, record, is_lstm, layer, direction, carried_rows):
    """What the step nodes call once per backward pass with the parts they computed."""
    states = ("h", "c") if is_lstm else ("h",)

    def report(parts):
        if not ctx.live() or record.closed:
            return
        try:
            for state in states:
                if parts[f"carried_{state}"] is not None:
                    record.add(layer, direction, state, "carried", parts[f"carried_{state}"], carried_rows,
                               owned=True)
                if state == "c":
                    record.add(layer, direction, state, "direct", parts["direct_c"], None)
                record.probe_fired(layer, direction, state)
        except Exception as err:  # never break the user's backward pass; no number rather than a wrong one
            for state in states:
                series = record.series[(layer, direction, state)]
                series.spoiled, series.pending = True, 0
            ctx.warn(("hook", type(err).__name__), f"gradscope: a measurement failed and was dropped "
                                                  f"({type(err).__name__}: {err})")
        ctx.reached()

    return report


def _anchor(xw, h0, c0, weights):
    """A zero leaf that wants a gradient, given to every step node when nothing else it is given
    does: the states then still take part in backward (a frozen module under a trained head)."""
    given = [xw, h0, c0, weights["w_hh"], weights["b_hh"]]
    if any(x is not None and x.requires_grad for x in given):
        return None
    return xw.new_zeros(()).requires_grad_()


def _with_starting(state, initial, active):
    """Reverse direction over packed sequences: the longer sequences start at this step, from
    their initial state."""
    if state.shape[0] < active:
        return torch.cat([state, initial[state.shape[0]:active]])
    return state


def _pass_on(new, t, bs, reverse):
    """Where the state made at step ``t`` goes: ``(state the next processed step starts from,
    or None; rows whose sequence ends here, or None)``."""
    if reverse:
        return (new, None) if t > 0 else (None, new)
    active = bs[t]
    following = bs[t + 1] if t + 1 < len(bs) else 0
    final = None
    if following < active:  # these sequences end here: their final state
        final = new if following == 0 else new[following:]
    if not following:
        return None, final
    return (new if following == active else new[:following]), final


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
