"""The elementwise part of one GRU or LSTM step as a single autograd node.

Stepped with plain ops, one LSTM step records about a dozen autograd nodes (chunk, three
sigmoids, tanh, products, sums) and its backward joins the four gate gradients with a ``cat``;
per time step that bookkeeping costs more than the arithmetic. Here the forward runs the same
ops in the same order as ``gradscope.cells`` (so outputs are bitwise the same), and the backward
applies the same derivative kernels autograd would (``sigmoid_backward``, ``tanh_backward``,
products with the same operands), writing the gate gradients into one tensor.

Double backward (``create_graph=True``) recomputes the activations from the node's inputs with
differentiable ops, so higher derivatives stay right.
"""

import torch

_aten = torch.ops.aten


def _lstm_activations(gates, c, c_probe):
    i, f, g, o = gates.chunk(4, dim=-1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    new_c = f * c + i * g
    tanh_c = torch.tanh(new_c if c_probe is None else new_c + c_probe)
    return i, f, g, o, new_c, tanh_c


class LSTMGates(torch.autograd.Function):
    """``(gates, c, c_probe) -> (h, new_c)`` where ``gates`` = W_hh h + b_hh + xw (pre-activation);
    ``c_probe`` (zeros, or None) is added where new_c enters h, so its gradient is the part of
    dL/dc_t that comes from h_t."""

    @staticmethod
    def forward(ctx, gates, c, c_probe):
        i, f, g, o, new_c, tanh_c = _lstm_activations(gates, c, c_probe)
        ctx.has_probe = c_probe is not None
        ctx.save_for_backward(gates, c, c_probe, i, f, g, o, tanh_c)
        ctx.mark_non_differentiable(i, f, g, o)
        return o * tanh_c, new_c, i, f, g, o

    @staticmethod
    def backward(ctx, grad_h, grad_c, *unused):
        gates, c, c_probe, i, f, g, o, tanh_c = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: activations as functions of the inputs
            i, f, g, o, _, tanh_c = _lstm_activations(gates, c, c_probe)
        if grad_h is None:
            grad_h = torch.zeros_like(tanh_c)
        d_c_out = _aten.tanh_backward(grad_h * o, tanh_c)
        d_c = d_c_out if grad_c is None else grad_c + d_c_out
        d_gates = torch.cat([
            _aten.sigmoid_backward(d_c * g, i),
            _aten.sigmoid_backward(d_c * c, f),
            _aten.tanh_backward(d_c * i, g),
            _aten.sigmoid_backward(grad_h * tanh_c, o),
        ], dim=-1)
        return d_gates, d_c * f, (d_c_out if ctx.has_probe else None)


def _gru_activations(xw, hh, h):
    xr, xz, xn = xw.chunk(3, dim=-1)
    hr, hz, hn = hh.chunk(3, dim=-1)
    r = torch.sigmoid(hr + xr)
    z = torch.sigmoid(hz + xz)
    n = torch.tanh(xn + hn * r)
    return r, z, n, hn


class GRUGates(torch.autograd.Function):
    """``(xw, hh, h) -> new_h`` where ``xw`` = W_ih x + b_ih and ``hh`` = W_hh h + b_hh."""

    @staticmethod
    def forward(ctx, xw, hh, h):
        r, z, n, hn = _gru_activations(xw, hh, h)
        h_minus_n = h - n
        ctx.save_for_backward(xw, hh, h, r, z, n, hn, h_minus_n)
        ctx.mark_non_differentiable(r, z, n)
        return h_minus_n * z + n, r, z, n

    @staticmethod
    def backward(ctx, grad, *unused):
        xw, hh, h, r, z, n, hn, h_minus_n = ctx.saved_tensors
        if torch.is_grad_enabled():
            r, z, n, hn = _gru_activations(xw, hh, h)
            h_minus_n = h - n
        d_pre_n = _aten.tanh_backward(grad - grad * z, n)
        d_pre_r = _aten.sigmoid_backward(d_pre_n * hn, r)
        d_pre_z = _aten.sigmoid_backward(grad * h_minus_n, z)
        d_xw = torch.cat([d_pre_r, d_pre_z, d_pre_n], dim=-1)
        d_hh = torch.cat([d_pre_r, d_pre_z, d_pre_n * r], dim=-1)
        return d_xw, d_hh, grad * z
