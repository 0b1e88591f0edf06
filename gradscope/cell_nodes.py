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
    """``(gates, c, c_probe, acts) -> (h, new_c)`` where ``gates`` = W_hh h + b_hh + xw
    (pre-activation); ``c_probe`` (zeros, or None) is added where new_c enters h, so its gradient
    is the part of dL/dc_t that comes from h_t. The activations i, f, g, o are written side by
    side into ``acts`` ((B, 4H), e.g. one time step's rows of a buffer the gate statistics read
    once), or into a new tensor when ``acts`` is None."""

    @staticmethod
    def forward(ctx, gates, c, c_probe, acts=None):
        acts = _lstm_activations_into(gates, acts)
        i, f, g, o = acts.chunk(4, dim=-1)
        new_c = f * c + i * g
        tanh_c = torch.tanh(new_c if c_probe is None else new_c + c_probe)
        ctx.has_probe = c_probe is not None
        ctx.save_for_backward(gates, c, c_probe, tanh_c)
        ctx.acts = acts  # not saved: time steps' rows of one buffer share a version counter
        return o * tanh_c, new_c

    @staticmethod
    def backward(ctx, grad_h, grad_c):
        gates, c, c_probe, tanh_c = ctx.saved_tensors
        acts = ctx.acts
        if grad_h is None:
            grad_h = torch.zeros_like(tanh_c)
        if torch.is_grad_enabled():  # create_graph: activations as functions of the inputs
            i, f, g, o, _, tanh_c = _lstm_activations(gates, c, c_probe)
        else:
            i, f, g, o = acts.chunk(4, dim=-1)
        d_c_out = _aten.tanh_backward(grad_h * o, tanh_c)
        d_c = d_c_out if grad_c is None else grad_c + d_c_out
        if torch.is_grad_enabled():
            d_gates = torch.cat([
                _aten.sigmoid_backward(d_c * g, i),
                _aten.sigmoid_backward(d_c * c, f),
                _aten.tanh_backward(d_c * i, g),
                _aten.sigmoid_backward(grad_h * tanh_c, o),
            ], dim=-1)
        else:  # the same kernels, written in place into one tensor (no cat per time step)
            d_gates = torch.empty_like(acts)
            d_i, d_f, d_g, d_o = d_gates.chunk(4, dim=-1)
            _aten.sigmoid_backward.grad_input(torch.mul(d_c, g, out=d_i), i, grad_input=d_i)
            _aten.sigmoid_backward.grad_input(torch.mul(d_c, c, out=d_f), f, grad_input=d_f)
            _aten.tanh_backward.grad_input(torch.mul(d_c, i, out=d_g), g, grad_input=d_g)
            _aten.sigmoid_backward.grad_input(torch.mul(grad_h, tanh_c, out=d_o), o, grad_input=d_o)
        return d_gates, d_c * f, (d_c_out if ctx.has_probe else None), None


def _lstm_activations_into(gates, acts):
    """The same ops as ``_lstm_activations`` (gate by gate, so rounding is the same as ATen's
    cell), i, f, g, o written side by side into ``acts`` (B, 4H)."""
    if acts is None:
        acts = torch.empty_like(gates)
    for index, (pre, out) in enumerate(zip(gates.chunk(4, dim=-1), acts.chunk(4, dim=-1))):
        (torch.tanh if index == 2 else torch.sigmoid)(pre, out=out)
    return acts


def _gru_activations(xw, hh, h):
    xr, xz, xn = xw.chunk(3, dim=-1)
    hr, hz, hn = hh.chunk(3, dim=-1)
    r = torch.sigmoid(hr + xr)
    z = torch.sigmoid(hz + xz)
    n = torch.tanh(xn + hn * r)
    return r, z, n, hn


def _gru_activations_into(xw, hh, acts):
    """The same ops as ``_gru_activations``, r, z, n written side by side into ``acts``."""
    xr, xz, xn = xw.chunk(3, dim=-1)
    hr, hz, hn = hh.chunk(3, dim=-1)
    if acts is None:
        acts = torch.empty_like(xw)
    r, z, n = acts.chunk(3, dim=-1)
    torch.sigmoid(torch.add(hr, xr, out=r), out=r)
    torch.sigmoid(torch.add(hz, xz, out=z), out=z)
    torch.tanh(torch.add(xn, hn * r, out=n), out=n)
    return acts


class GRUGates(torch.autograd.Function):
    """``(xw, hh, h, acts) -> new_h`` where ``xw`` = W_ih x + b_ih and ``hh`` = W_hh h + b_hh;
    the activations r, z, n are written side by side into ``acts`` ((B, 3H)), or into a new
    tensor when ``acts`` is None."""

    @staticmethod
    def forward(ctx, xw, hh, h, acts=None):
        acts = _gru_activations_into(xw, hh, acts)
        r, z, n = acts.chunk(3, dim=-1)
        h_minus_n = h - n
        ctx.save_for_backward(xw, hh, h, h_minus_n)
        ctx.acts = acts  # not saved: see LSTMGates
        return h_minus_n * z + n

    @staticmethod
    def backward(ctx, grad):
        xw, hh, h, h_minus_n = ctx.saved_tensors
        acts = ctx.acts
        if torch.is_grad_enabled():  # create_graph: activations as functions of the inputs
            r, z, n, hn = _gru_activations(xw, hh, h)
            h_minus_n = h - n
            d_pre_n = _aten.tanh_backward(grad - grad * z, n)
            d_pre_r = _aten.sigmoid_backward(d_pre_n * hn, r)
            d_pre_z = _aten.sigmoid_backward(grad * h_minus_n, z)
            d_xw = torch.cat([d_pre_r, d_pre_z, d_pre_n], dim=-1)
            d_hh = torch.cat([d_pre_r, d_pre_z, d_pre_n * r], dim=-1)
            return d_xw, d_hh, grad * z, None
        # the same kernels, written in place into two tensors (no cat per time step)
        r, z, n = acts.chunk(3, dim=-1)
        hn = hh.chunk(3, dim=-1)[2]
        d_xw = torch.empty_like(acts)
        d_r, d_z, d_n = d_xw.chunk(3, dim=-1)
        _aten.tanh_backward.grad_input(grad - grad * z, n, grad_input=d_n)
        _aten.sigmoid_backward.grad_input(torch.mul(d_n, hn, out=d_r), r, grad_input=d_r)
        _aten.sigmoid_backward.grad_input(torch.mul(grad, h_minus_n, out=d_z), z, grad_input=d_z)
        d_hh = torch.empty_like(acts)
        d_hh[..., :2 * r.shape[-1]] = d_xw[..., :2 * r.shape[-1]]
        torch.mul(d_n, r, out=d_hh[..., 2 * r.shape[-1]:])
        return d_xw, d_hh, grad * z, None
