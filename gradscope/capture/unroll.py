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
from torch.nn.utils.rnn import PackedSequence

from gradscope.capture.accumulate import CallRecord
from gradscope.capture.forward_nonfinite import note_nonfinite_rows
from gradscope.cells import GATE_ACTIVATION, GATES, cell_kind, gru_step_node, lstm_step_node, module_weights, rnn_step

SATURATION_MARGIN = 0.05


class NotSteppable(Exception):
    """This call has nothing to measure (an empty batch): run the module's own code, silently."""


def exact_module_forward(ctx, name, module, input, hx=None):
    """Run ``module`` (nn.RNN, nn.GRU or nn.LSTM) on ``input`` exactly as its forward would,
    recording into the capture context ``ctx`` (a Scope's view of the open step)."""
    kind = cell_kind(module)
    is_lstm = kind == "LSTM"
    n_dir = 2 if module.bidirectional else 1
    directions = ("forward", "reverse")[:n_dir]
    layers = module.num_layers
    size_h = module.proj_size if module.proj_size > 0 else module.hidden_size

    # --- input layout, as RNNBase.forward handles it -------------------------------------
    packed = isinstance(input, PackedSequence)
    if packed:
        data, batch_sizes, sorted_indices, unsorted_indices = input
        bs = batch_sizes.tolist()  # batch_sizes always live on the CPU: no device sync
        batch = bs[0]
        is_batched = True
        x_flat = data
        checked_input = data
    else:
        if input.dim() not in (2, 3):
            raise ValueError(f"{type(module).__name__}: Expected input to be 2D or 3D, got {input.dim()}D instead")
        is_batched = input.dim() == 3
        batch_dim = 0 if module.batch_first else 1
        if not is_batched:
            input = input.unsqueeze(batch_dim)
        checked_input = input
        seq = input.transpose(0, 1) if module.batch_first else input
        steps, batch = seq.shape[0], seq.shape[1]
        bs = [batch] * steps
        x_flat = seq.reshape(steps * batch, seq.shape[2])
        batch_sizes = sorted_indices = unsorted_indices = None

    if x_flat.shape[0] == 0:
        raise NotSteppable("empty batch")

    # --- initial state ------------------------------------------------------------------------
    links = ctx.links.find(hx, name)
    if hx is None:
        zeros_h = torch.zeros(layers * n_dir, batch, size_h, dtype=x_flat.dtype, device=x_flat.device)
        hx = (zeros_h, torch.zeros(layers * n_dir, batch, module.hidden_size, dtype=x_flat.dtype,
                                   device=x_flat.device)) if is_lstm else zeros_h
    elif not packed:
        parts = hx if is_lstm else (hx,)
        want = 3 if is_batched else 2
        if any(p.dim() != want for p in parts):
            kind_txt = "batched 3-D" if is_batched else "unbatched 2-D"
            raise RuntimeError(f"For {kind_txt} input, hx should also be {want}-D but got "
                               f"{[p.dim() for p in parts]}-D tensors")
        if not is_batched:
            parts = tuple(p.unsqueeze(1) for p in parts)
        hx = parts if is_lstm else parts[0]
    module.check_forward_args(checked_input, hx, batch_sizes)
    if links is not None:  # the user passed on the final state of an earlier call: same sequence
        parts = ctx.continue_sequence(links, hx if is_lstm else (hx,), lambda g: g)
        hx = tuple(parts) if is_lstm else parts[0]
    if sorted_indices is not None:
        hx = module.permute_hidden(hx, sorted_indices)
    h0_all, c0_all = (hx[0], hx[1]) if is_lstm else (hx, None)
    # CPU autocast runs aten::lstm as one lower-precision kernel (RNN and GRU run as cell ops
    # there, as here): its outputs come back in that dtype, so ours do too
    low = None
    if is_lstm and x_flat.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        low = torch.get_autocast_dtype("cpu")

    # --- the call record -------------------------------------------------------------------
    if links is not None:
        previous = links[0].record
        call_index, t_offset = previous.call, previous.t_offset + previous.T
    else:
        call_index, t_offset = ctx.step.new_call_index(name), 0
    states = {"h": size_h, "c": module.hidden_size} if is_lstm else {"h": size_h}
    record = CallRecord(name, kind, call_index, t_offset, bs, layers, directions, states,
                        x_flat.device, sorted_indices=sorted_indices)
    ctx.add_call(record)
    note_nonfinite_rows(record, "input", 0, x_flat)

    # --- layers ------------------------------------------------------------------------------
    finals_h, finals_c = [], []
    layer_in = x_flat
    for layer in range(layers):
        outs = []
        for d, direction in enumerate(directions):
            weights = module_weights(module, layer, direction)
            record.weights[(layer, direction)] = {k: (v.detach() if v is not None else None)
                                                  for k, v in weights.items()}
            xw = F.linear(layer_in, weights["w_ih"], weights["b_ih"])
            index = layer * n_dir + d
            step_outs, h_fin, c_fin = run_direction(
                ctx, record, kind, layer, direction, xw, bs, h0_all[index],
                c0_all[index] if is_lstm else None, weights)
            outs.append(torch.cat(step_outs))
            finals_h.append(h_fin)
            finals_c.append(c_fin)
        layer_out = outs[0] if n_dir == 1 else torch.cat(outs, dim=1)
        note_nonfinite_rows(record, "output", layer, layer_out)
        ctx.hook(layer_out, lambda g, layer=layer: _direct_from_output(record, layer, directions, size_h, g))
        if layer < layers - 1 and module.dropout > 0 and module.training:
            layer_in = F.dropout(layer_out, module.dropout, True)
        else:
            layer_in = layer_out

    # --- outputs as the module returns them ------------------------------------------------
    if low is not None:
        layer_in = layer_in.to(low)
    if packed:
        output = PackedSequence(layer_in, batch_sizes, sorted_indices, unsorted_indices)
    else:
        output = layer_in.view(len(bs), batch, layer_in.shape[1])
        if module.batch_first:
            output = output.transpose(0, 1)
        if not is_batched:
            output = output.squeeze(batch_dim)
    finals = {"h": torch.stack(finals_h)}
    if is_lstm:
        finals["c"] = torch.stack(finals_c)
    user = []
    for state, internal in finals.items():
        if unsorted_indices is not None:
            internal = internal.index_select(1, unsorted_indices)
        if low is not None:
            internal = internal.to(low)
        user.append(ctx.returned_state(record, state, internal, cell=False, squeeze=not is_batched))
    return output, (tuple(user) if is_lstm else user[0])


def _direct_from_output(record, layer, directions, size, grad):
    for d, direction in enumerate(directions):
        piece = grad if len(directions) == 1 else grad[:, d * size:(d + 1) * size]
        record.add(layer, direction, "h", "direct", piece)


def run_direction(ctx, record, kind, layer, direction, xw, bs, h0, c0, weights):
    """One layer, one direction over all time steps. Returns (outputs per step in time order,
    final h (B, S), final c or None), both finals in sorted batch order."""
    is_lstm = kind == "LSTM"
    reverse = direction == "reverse"
    steps = len(bs)
    n_rows = sum(bs)
    w_hh, b_hh, w_hr = weights["w_hh"], weights["b_hh"], weights["w_hr"]
    xw_steps = xw.split(bs)

    # Probes for the recurrent use (rows used by the next processed step) and, for LSTM, for
    # the use of c_t in h_t. One leaf per state; ``split`` makes the per-step pieces in one op.
    carry = steps > 1
    rows_carried = n_rows - bs[0]
    probe_h = probe_c = probe_c_out = None
    if carry:
        probe_h = xw.new_zeros(rows_carried, h0.shape[1], requires_grad=True)
        pieces_h = probe_h.split(bs[1:])
        if is_lstm:
            probe_c = xw.new_zeros(rows_carried, c0.shape[1], requires_grad=True)
            pieces_c = probe_c.split(bs[1:])
    if is_lstm:
        probe_c_out = xw.new_zeros(n_rows, c0.shape[1], requires_grad=True)
        pieces_c_out = probe_c_out.split(bs)

    record.add_series(layer, direction, "h", pending=1 if carry else 0)
    if is_lstm:
        record.add_series(layer, direction, "c", pending=2 if carry else 1)
    record.probe_leaves.extend(weakref.ref(p) for p in (probe_h, probe_c, probe_c_out) if p is not None)
    if carry:
        rows = _carried_rows(record, bs, reverse)
        ctx.probe(probe_h, record, layer, direction, "h", "carried", rows)
        if is_lstm:
            ctx.probe(probe_c, record, layer, direction, "c", "carried", rows)
    if is_lstm:
        ctx.probe(probe_c_out, record, layer, direction, "c", "direct", None)

    gates_seen = [] if ctx.gate_stats else None
    prev_states = [None] * steps if ctx.jacobians else None
    outs = [None] * steps
    h, c = h0, c0
    finals_h, finals_c = [], []
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    if reverse and bs[-1] < h0.shape[0]:
        h = h0[:bs[-1]]
        c = c0[:bs[-1]] if is_lstm else None
    for t in order:
        active = bs[t]
        if reverse and h.shape[0] < active:  # packed: longer sequences start here
            h = torch.cat([h, h0[h.shape[0]:active]])
            if is_lstm:
                c = torch.cat([c, c0[c.shape[0]:active]])
        if prev_states is not None:
            prev_states[t] = (torch.cat([h, c], dim=1) if is_lstm else h).detach()
        if is_lstm:
            new_h, new_c, gates = lstm_step_node(xw_steps[t], h, c, w_hh, b_hh, w_hr, c_probe=pieces_c_out[t])
        elif kind == "GRU":
            new_h, gates = gru_step_node(xw_steps[t], h, w_hh, b_hh)
        else:
            new_h, gates = rnn_step(xw_steps[t], h, w_hh, b_hh, relu=kind == "RNN_RELU")
        if gates_seen is not None:
            gates_seen.append(gates)  # graph tensors already; read once under no_grad below
        outs[t] = new_h
        if reverse:
            if t > 0:
                h = new_h + pieces_h[t - 1]
                if is_lstm:
                    c = new_c + pieces_c[t - 1]
            else:
                finals_h.append(new_h)
                finals_c.append(new_c if is_lstm else None)
        else:
            following = bs[t + 1] if t + 1 < steps else 0
            if following < active:  # these sequences end here: their final state
                finals_h.append(new_h if following == 0 else new_h[following:])
                if is_lstm:
                    finals_c.append(new_c if following == 0 else new_c[following:])
            if following:
                keep_h = new_h if following == active else new_h[:following]
                h = keep_h + pieces_h[t]
                if is_lstm:
                    keep_c = new_c if following == active else new_c[:following]
                    c = keep_c + pieces_c[t]

    final_h = finals_h[0] if len(finals_h) == 1 else torch.cat(finals_h[::-1])
    final_c = None
    if is_lstm:
        final_c = finals_c[0] if len(finals_c) == 1 else torch.cat(finals_c[::-1])
    if gates_seen is not None:
        with torch.no_grad():
            _gate_statistics(record, kind, layer, direction, gates_seen)
    if prev_states is not None:
        record.jacobian_inputs[(layer, direction)] = {
            "xw": xw.detach(), "prev_state": torch.cat(prev_states), "weights": record.weights[(layer, direction)],
        }
    return outs, final_h, final_c


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


def _gate_statistics(record, kind, layer, direction, gates_seen):
    """Per gate: [count, sum, share near the lower bound, share near the upper bound].

    Sums run over rows in the gates' own dtype first and in float64 only over the units, and
    counts use ``count_nonzero``: no float64 copy of every activation (that copy cost more than
    the statistics themselves)."""
    activations = GATE_ACTIVATION[kind]
    for index, gate in enumerate(GATES[kind]):
        values = torch.cat([g[index] for g in gates_seen])
        activation = activations[gate]
        count = float(values.numel())
        if activation == "sigmoid":
            low, high = values < SATURATION_MARGIN, values > 1 - SATURATION_MARGIN
        elif activation == "tanh":
            low, high = values < -1 + SATURATION_MARGIN, values > 1 - SATURATION_MARGIN
        else:  # relu: "low" is a dead unit; there is no upper bound
            low, high = values == 0, None
        nan = values.new_tensor(float("nan"), dtype=torch.float64)
        stats = torch.stack([
            values.new_tensor(count, dtype=torch.float64),
            values.sum(0).sum(dtype=torch.float64),
            torch.count_nonzero(low).to(torch.float64),
            torch.count_nonzero(high).to(torch.float64) if high is not None else nan,
        ])
        record.gate_stats.append((layer, direction, gate, activation, stats))
