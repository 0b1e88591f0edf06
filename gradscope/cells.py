"""Per-cell math shared by the capture routes, the Jacobians and the spectra.

Each step function takes ``xw``, the input projection ``x_t @ W_ih^T + b_ih`` of this time step
(computed for all steps at once, as PyTorch's own CPU kernels do), the previous state and the
recurrent weights, and returns the new state plus the gate activations. The op order follows
ATen's cells (aten/src/ATen/native/RNN.cpp) so outputs match PyTorch to float rounding.
"""

import torch
import torch.nn.functional as F

# gate layout of weight_hh rows, as PyTorch stacks them
GATES = {
    "RNN_TANH": ("hh",),
    "RNN_RELU": ("hh",),
    "GRU": ("r", "z", "n"),
    "LSTM": ("i", "f", "g", "o"),
}
# activation applied to each gate: used by the saturation statistics
GATE_ACTIVATION = {
    "RNN_TANH": {"hh": "tanh"},
    "RNN_RELU": {"hh": "relu"},
    "GRU": {"r": "sigmoid", "z": "sigmoid", "n": "tanh"},
    "LSTM": {"i": "sigmoid", "f": "sigmoid", "g": "tanh", "o": "sigmoid"},
}
STATES = {"RNN_TANH": ("h",), "RNN_RELU": ("h",), "GRU": ("h",), "LSTM": ("h", "c")}


def cell_kind(module):
    """``RNN_TANH``, ``RNN_RELU``, ``GRU`` or ``LSTM`` for a stock module or cell."""
    name = type(module).__name__
    mode = getattr(module, "mode", None)
    if mode in GATES:
        return mode
    if isinstance(module, (torch.nn.GRU, torch.nn.GRUCell)):
        return "GRU"
    if isinstance(module, (torch.nn.LSTM, torch.nn.LSTMCell)):
        return "LSTM"
    if isinstance(module, torch.nn.RNNCell):
        return "RNN_RELU" if module.nonlinearity == "relu" else "RNN_TANH"
    raise TypeError(f"{name} is not a stock recurrent module")


def rnn_step(xw, h, w_hh, b_hh, relu=False):
    pre = xw + F.linear(h, w_hh, b_hh)
    new_h = torch.relu(pre) if relu else torch.tanh(pre)
    return new_h, (new_h,)


def gru_step(xw, h, w_hh, b_hh):
    xr, xz, xn = xw.chunk(3, dim=-1)
    hr, hz, hn = F.linear(h, w_hh, b_hh).chunk(3, dim=-1)
    r = torch.sigmoid(hr + xr)
    z = torch.sigmoid(hz + xz)
    n = torch.tanh(xn + hn * r)
    new_h = (h - n) * z + n
    return new_h, (r, z, n)


def lstm_step(xw, h, c, w_hh, b_hh, w_hr=None, c_probe=None):
    """One LSTM step. ``c_probe`` (zeros) is added to the new cell state where it enters the
    output ``h``, so its gradient is exactly the part of dL/dc_t that comes from h_t."""
    gates = F.linear(h, w_hh, b_hh) + xw
    i, f, g, o = gates.chunk(4, dim=-1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    new_c = f * c + i * g
    c_out = new_c if c_probe is None else new_c + c_probe
    new_h = o * torch.tanh(c_out)
    if w_hr is not None:
        new_h = F.linear(new_h, w_hr)
    return new_h, new_c, (i, f, g, o)


def step_function(kind, weights):
    """A pure function ``state -> new state`` for one step given ``xw``: ``f(xw, state)``, where
    state is ``h`` or, for LSTM, ``torch.cat([h, c], -1)`` (the joint state). Used by the
    Jacobian measurements (torch.func) and the reference tests."""
    w_hh, b_hh, w_hr = weights.get("w_hh"), weights.get("b_hh"), weights.get("w_hr")
    if kind in ("RNN_TANH", "RNN_RELU"):
        return lambda xw, h: rnn_step(xw, h, w_hh, b_hh, relu=kind == "RNN_RELU")[0]
    if kind == "GRU":
        return lambda xw, h: gru_step(xw, h, w_hh, b_hh)[0]
    if kind == "LSTM":
        size_h = w_hh.shape[1]

        def lstm_joint(xw, state):
            h, c = state[..., :size_h], state[..., size_h:]
            new_h, new_c, _ = lstm_step(xw, h, c, w_hh, b_hh, w_hr)
            return torch.cat([new_h, new_c], dim=-1)

        return lstm_joint
    raise ValueError(f"unknown cell kind {kind!r}")


def module_weights(module, layer=0, direction="forward"):
    """The weights a stock module uses in this forward, fetched by name with ``getattr`` so that
    parametrizations and weight-drop wrappers (which set a new tensor per forward) are honoured.
    Keys: w_ih, w_hh, b_ih, b_hh, w_hr (missing ones are None)."""
    if isinstance(module, torch.nn.RNNCellBase):
        names = {"w_ih": "weight_ih", "w_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh",
                 "w_hr": "weight_hr"}  # cells have no projection: w_hr is None
    else:
        sfx = f"_l{layer}" + ("_reverse" if direction == "reverse" else "")
        names = {k: v + sfx for k, v in
                 {"w_ih": "weight_ih", "w_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh",
                  "w_hr": "weight_hr"}.items()}
    return {key: getattr(module, name, None) for key, name in names.items()}
