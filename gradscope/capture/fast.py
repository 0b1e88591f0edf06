"""The fast route for nn.RNN / nn.GRU / nn.LSTM: the module's own fused kernels forward and
backward, one layer at a time, and the per-step gradients by a reverse recursion afterwards.

Each layer runs PyTorch's fused op (``torch._VF``) with that layer's weights, as the module's
own multi-layer call does internally (same ops, same order, dropout between layers drawn with
``F.dropout`` as ATen does), so outputs and parameter gradients are the unwatched ones. A tap
(an identity autograd Function over the layer's output and final states) receives, in one
backward call, every gradient that reaches the layer from outside: the direct parts. There the
reverse recursion carried_t = J_{t+1}^T total_{t+1} rebuilds the per-step totals from the saved
states (fast_adjoint.py), and the call record (accumulate.py) reduces them to norms, exactly as
on the exact route. Chained calls use the same links (links.py).
"""

import logging

import torch
import torch.nn.functional as F
from torch import _VF
from torch.nn.utils.rnn import PackedSequence

from gradscope.capture.accumulate import CallRecord
from gradscope.capture.forward_nonfinite import note_nonfinite_rows
from gradscope.capture.fast_adjoint import LayerJob, run_layer
from gradscope.capture.unroll import NotSteppable
from gradscope.cells import cell_kind, module_weights

log = logging.getLogger("gradscope")

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


def part_routes(parts, mode):
    """``{part name: "fast" | "exact"}``: under ``mode="fast"`` nn.RNN/GRU/LSTM take the fast route,
    stock cells (``nn.*Cell``) and custom cells the exact one (a cell call is one time step: there
    is no fused sequence to keep). Parts that fall back are named once, as an INFO record of the
    ``gradscope`` logger (not a warning: nothing is lost, the numbers are the same)."""
    routes = {part.name: "fast" if mode == "fast" and part.kind == "module" else "exact" for part in parts}
    fallback = sorted(name or "<root>" for name, route in routes.items() if route != mode)
    if fallback:
        log.info("gradscope: mode='fast' takes nn.RNN/GRU/LSTM only; %s use the exact route (same numbers, "
                 "stepped one call per time step)", ", ".join(fallback))
    return routes


def fast_module_forward(ctx, name, module, input, hx=None):
    """Run ``module`` (nn.RNN, nn.GRU or nn.LSTM) on ``input`` with its own fused kernels, one
    layer at a time, recording into the capture context ``ctx``."""
    kind = cell_kind(module)
    is_lstm = kind == "LSTM"
    n_dir = 2 if module.bidirectional else 1
    directions = ("forward", "reverse")[:n_dir]
    layers = module.num_layers
    size_h = module.proj_size if module.proj_size > 0 else module.hidden_size

    # --- input layout, as RNNBase.forward handles it ---------------------------------------
    packed = isinstance(input, PackedSequence)
    if packed:
        data, batch_sizes, sorted_indices, unsorted_indices = input
        bs = batch_sizes.tolist()  # batch_sizes always live on the CPU: no device sync
        batch, is_batched, seq = bs[0], True, data
        checked_input = data
    else:
        if input.dim() not in (2, 3):
            raise ValueError(f"{type(module).__name__}: Expected input to be 2D or 3D, got {input.dim()}D instead")
        is_batched = input.dim() == 3
        batch_dim = 0 if module.batch_first else 1
        if not is_batched:
            input = input.unsqueeze(batch_dim)
        checked_input = input
        seq = input.transpose(0, 1) if module.batch_first else input  # time-major, as ATen does
        batch = seq.shape[1]
        bs = [batch] * seq.shape[0]
        batch_sizes = sorted_indices = unsorted_indices = None
    if sum(bs) == 0:
        raise NotSteppable("empty batch")

    # --- initial state ------------------------------------------------------------------------
    links = ctx.links.find(hx, name)
    dtype, device = seq.dtype, seq.device
    if hx is None:
        zeros_h = torch.zeros(layers * n_dir, batch, size_h, dtype=dtype, device=device)
        hx = (zeros_h, torch.zeros(layers * n_dir, batch, module.hidden_size, dtype=dtype,
                                   device=device)) if is_lstm else zeros_h
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

    # --- the call record ---------------------------------------------------------------------
    if links is not None:
        previous = links[0].record
        call_index, t_offset = previous.call, previous.t_offset + previous.T
    else:
        call_index, t_offset = ctx.step.new_call_index(name), 0
    states = {"h": size_h, "c": module.hidden_size} if is_lstm else {"h": size_h}
    record = FastCallRecord(name, kind, call_index, t_offset, bs, layers, directions, states,
                            device, sorted_indices=sorted_indices)
    ctx.add_call(record)
    note_nonfinite_rows(record, "input", 0, _rows(seq))
    for layer in range(layers):
        for direction in directions:
            for state in states:
                record.add_series(layer, direction, state, pending=1)

    # --- layers: the fused op, one layer at a time --------------------------------------------
    fused = _FUSED[kind]
    finals_h, finals_c = [], []
    layer_in = seq
    for layer in range(layers):
        weights = [module_weights(module, layer, d) for d in directions]
        for direction, w in zip(directions, weights):
            record.weights[(layer, direction)] = {k: (v.detach() if v is not None else None) for k, v in w.items()}
        flat = [w[k] for w in weights for k in ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr") if w[k] is not None]
        rows = slice(layer * n_dir, (layer + 1) * n_dir)
        h0 = h0_all[rows]
        state0 = (h0, c0_all[rows]) if is_lstm else h0
        args = (flat, module.bias, 1, 0.0, module.training, module.bidirectional)
        if packed:
            result = fused(layer_in, batch_sizes, state0, *args)
        else:
            result = fused(layer_in, state0, *args, False)
        job = LayerJob(ctx, record, kind, layer, directions, bs, size_h, module.hidden_size,
                       inputs=_rows(layer_in), outputs=_rows(result[0]),
                       h0=h0, c0=c0_all[rows] if is_lstm else None,
                       weights=[record.weights[(layer, d)] for d in directions], jacobians=ctx.jacobians)
        tapped = _Tap.apply(job, *result)
        finals_h.append(tapped[1])
        if is_lstm:
            finals_c.append(tapped[2])
        layer_out = tapped[0]
        note_nonfinite_rows(record, "output", layer, _rows(layer_out))
        if layer < layers - 1 and module.dropout > 0 and module.training:
            layer_in = F.dropout(layer_out, module.dropout, True)
        else:
            layer_in = layer_out

    # --- outputs as the module returns them --------------------------------------------------
    if packed:
        output = PackedSequence(layer_in, batch_sizes, sorted_indices, unsorted_indices)
    else:
        output = layer_in.transpose(0, 1) if module.batch_first else layer_in
        if not is_batched:
            output = output.squeeze(batch_dim)
    finals = {"h": torch.cat(finals_h) if layers > 1 else finals_h[0]}
    if is_lstm:
        finals["c"] = torch.cat(finals_c) if layers > 1 else finals_c[0]
    user = []
    for state, value in finals.items():
        if unsorted_indices is not None:
            value = value.index_select(1, unsorted_indices)
        if not is_batched:
            value = value.squeeze(1)
        ctx.links.add(value, record, state)  # its gradient is the tap's: no hook of its own
        user.append(value)
    return output, (tuple(user) if is_lstm else user[0])


def _rows(value):
    """(T, B, F) time-major or packed (N, F) -> flat rows (N, F), detached."""
    value = value.detach()
    return value.reshape(-1, value.shape[-1]) if value.dim() == 3 else value
