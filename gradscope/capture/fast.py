"""The fast route for nn.RNN / nn.GRU / nn.LSTM, one layer at a time.

On the CPU (outside autocast, under grad) a layer is handed to gradscope's own BPTT
(``_own_layer``: own_bptt.py, own_lstm_layer.py), whose one reverse pass gives the per-step
totals and the gradients. Elsewhere the module's own fused kernels run forward and backward,
tapped, and the per-step gradients come from a reverse recursion beside the fused backward.

In that tapped form each layer runs PyTorch's fused op (``torch._VF``) with its weights, as the module's
own multi-layer call does internally (same ops, same order, dropout between layers drawn with
``F.dropout`` as ATen does), so outputs and parameter gradients are the unwatched ones. A tap
(an identity autograd Function over the layer's output and final states) receives, in one
backward call, every gradient that reaches the layer from outside: the direct parts. There the
reverse recursion carried_t = J_{t+1}^T total_{t+1} rebuilds the per-step totals from the saved
states (fast_adjoint.py), and the call record (accumulate.py) reduces them to norms, exactly as
on the exact route. Chained calls use the same links (links.py).
"""

import torch
from torch import _VF

from gradscope.capture.accumulate import CallRecord
from gradscope.capture.forward_nonfinite import note_nonfinite_rows
from gradscope.capture.fast_adjoint import LayerJob, run_layer
from gradscope.capture import own_bptt, own_lstm_layer
from gradscope.capture.module_call import ModuleCall
from gradscope.cells import module_weights

_FUSED = {"RNN_TANH": _VF.rnn_tanh, "RNN_RELU": _VF.rnn_relu, "GRU": _VF.gru, "LSTM": _VF.lstm}


class FastCallRecord(CallRecord):
    """A call on the fast route: its carried parts come from the recursion, not from probes, so
    a backward pass that computes only some gradients still measures every layer it reaches."""

    def gradient_arrived(self):
        self.probe_leaves = []  # only link probes of a next call live here; nothing to check
        super().gradient_arrived()
        self.restricted = False

    def finish(self):
        # the recursion runs layer by layer in backward order; keep the exact route's forward order
        def order(key):
            return key[0], self.directions.index(key[1])

        self.gate_stats.sort(key=lambda item: order(item[:2]))
        self.jacobian_inputs = dict(sorted(self.jacobian_inputs.items(), key=lambda item: order(item[0])))
        return super().finish()


class _Tap(torch.autograd.Function):
    """Identity on a layer's (output, h_n[, c_n]); its backward sees all their gradients at once
    and runs the layer's reverse recursion before passing them on unchanged."""

    @staticmethod
    def forward(ctx, job, *tensors):
        ctx.job = job
        ctx.set_materialize_grads(False)
        return tuple(t.clone() for t in tensors)

    @staticmethod
    def backward(ctx, *grads):
        job, ctx.job = ctx.job, None
        if job is not None and job.live():
            try:
                with torch.no_grad():
                    run_layer(job, *grads)
            except Exception as err:  # never break the user's backward pass
                job.failed(err)
            job.reached()
        return (None,) + grads


def fast_module_forward(ctx, name, module, input, hx=None):
    """Run ``module`` (nn.RNN, nn.GRU or nn.LSTM) on ``input`` with its own fused kernels, one
    layer at a time, recording into the capture context ``ctx``."""
    call = ModuleCall(ctx, name, module, input, hx)
    layout = call.layout
    record = FastCallRecord(name, call.kind, call.call_index, call.t_offset, layout.bs, call.layers, call.directions,
                            call.states, layout.seq.device, sorted_indices=layout.sorted_indices)
    ctx.add_call(record)
    note_nonfinite_rows(record, "input", 0, _rows(layout.seq))
    for layer in range(call.layers):
        for direction in call.directions:
            for state in call.states:
                record.add_series(layer, direction, state, pending=1)
    finals = {state: [] for state in call.states}
    layer_in = layout.seq
    for layer in range(call.layers):
        layer_out = _fused_layer(ctx, record, call, layer, layer_in, finals)
        layer_in = call.next_layer_input(layer, layer_out)
    user = []
    for state, pieces in finals.items():
        value = layout.user_order(torch.cat(pieces) if call.layers > 1 else pieces[0])
        if not layout.is_batched:
            value = value.squeeze(1)
        ctx.links.add(value, record, state)  # its gradient is the tap's: no hook of its own
        user.append(value)
    return layout.output(layer_in), (tuple(user) if call.is_lstm else user[0])


def _fused_layer(ctx, record, call, layer, layer_in, finals):
    """One layer, every direction, by the fused op, tapped; returns the layer's output and
    appends its final states to ``finals``."""
    module, layout, is_lstm = call.module, call.layout, call.is_lstm
    weights = [module_weights(module, layer, d) for d in call.directions]
    for direction, w in zip(call.directions, weights):
        record.weights[(layer, direction)] = {k: (v.detach() if v is not None else None) for k, v in w.items()}
    flat = [w[k] for w in weights for k in ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr") if w[k] is not None]
    rows = slice(layer * len(call.directions), (layer + 1) * len(call.directions))
    h0 = call.h0[rows]
    if own_bptt.applies(call, layer_in, h0, flat):
        return _own_layer(ctx, record, call, layer, layer_in, rows, weights, finals)
    state0 = (h0, call.c0[rows]) if is_lstm else h0
    args = (flat, module.bias, 1, 0.0, module.training, module.bidirectional)
    fused = _FUSED[call.kind]
    if layout.packed:
        result = fused(layer_in, layout.batch_sizes, state0, *args)
    else:
        result = fused(layer_in, state0, *args, False)
    job = LayerJob(ctx, record, call.kind, layer, call.directions, layout.bs, call.size_h, call.size_c,
                   inputs=_rows(layer_in), outputs=_rows(result[0]),
                   h0=h0, c0=call.c0[rows] if is_lstm else None,
                   weights=[record.weights[(layer, d)] for d in call.directions], jacobians=ctx.jacobians)
    tapped = _Tap.apply(job, *result)
    finals["h"].append(tapped[1])
    if is_lstm:
        finals["c"].append(tapped[2])
    layer_out = tapped[0]
    note_nonfinite_rows(record, "output", layer, _rows(layer_out))
    return layer_out


def _own_layer(ctx, record, call, layer, layer_in, rows, weights, finals):
    """One layer on the CPU by gradscope's own BPTT: an LSTM layer as one Function over its fused
    forward (own_lstm_layer.py), an RNN or GRU layer as one Function per direction (own_bptt.py)."""
    layout = call.layout
    rows_in = layer_in if layout.packed else layer_in.reshape(-1, layer_in.shape[-1])
    h0 = call.h0[rows]
    if call.is_lstm:
        job = own_lstm_layer.LayerJob(ctx, record, layer, call.directions, layout.packed, layout.batch_sizes,
                                      call.module.bias, call.module.training, ctx.jacobians,
                                      stepped=not layout.packed and own_lstm_layer.stepped(layer_in, weights))
        layer_out, hy, cy = own_lstm_layer.run_layer(job, layer_in, h0, call.c0[rows], weights)
        finals["h"].append(hy)
        finals["c"].append(cy)
        note_nonfinite_rows(record, "output", layer, _rows(layer_out))
        return layer_out
    outs, finals_h = [], []
    for d, direction in enumerate(call.directions):
        job = own_bptt.OwnLayerJob(ctx, record, call.kind, layer, direction, ctx.jacobians)
        w = weights[d]
        out, final_h = own_bptt.run_direction(job, rows_in, h0[d], w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"])
        finals_h.append(final_h)
        outs.append(out)
    layer_out = torch.cat(outs, 1) if len(outs) > 1 else outs[0]
    if not layout.packed:
        layer_out = layer_out.view(len(layout.bs), layout.batch, layer_out.shape[-1])
    finals["h"].append(torch.stack(finals_h))
    note_nonfinite_rows(record, "output", layer, _rows(layer_out))
    return layer_out


def _rows(value):
    """(T, B, F) time-major or packed (N, F) -> flat rows (N, F), detached."""
    value = value.detach()
    return value.reshape(-1, value.shape[-1]) if value.dim() == 3 else value
