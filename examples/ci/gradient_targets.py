"""Targets for `gradscope check`: each function returns (model, step).

    gradscope check examples/ci/gradient_targets.py:healthy_lstm     # exit 0
    gradscope check examples/ci/gradient_targets.py:vanishing_rnn    # exit 1: see what red looks like

In your project, build the real model (small sizes are fine: the check is about the shape of
the gradient through time, not about accuracy) and one batch of real or synthetic data, with
the loss placed as in training.
"""

import torch
from torch import nn


class SequenceRegressor(nn.Module):
    """A recurrent layer read out at the last time step: the target depends on the whole sequence."""

    def __init__(self, recurrent, out_size=1):
        super().__init__()
        self.recurrent = recurrent
        self.head = nn.Linear(recurrent.hidden_size, out_size)

    def forward(self, x):
        out, _ = self.recurrent(x)
        return self.head(out[:, -1])


def _step(model, x, y):
    def step():
        model.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()

    return step


def chrono_init_(lstm, max_lag):
    """Chrono initialisation (Tallec & Ollivier 2018): forget-gate biases log(U(1, max_lag - 1)),
    input-gate biases their negative, so the cell state keeps memories for up to ``max_lag`` steps."""
    hidden = lstm.hidden_size
    with torch.no_grad():
        for layer in range(lstm.num_layers):
            forget = torch.log(torch.empty(hidden).uniform_(1, max_lag - 1))
            bias_ih, bias_hh = getattr(lstm, f"bias_ih_l{layer}"), getattr(lstm, f"bias_hh_l{layer}")
            bias_ih[hidden:2 * hidden].copy_(forget)  # gate rows: i, f, g, o
            bias_ih[:hidden].copy_(-forget)
            bias_hh[:2 * hidden].zero_()
    return lstm


def healthy_lstm(seq_len=40, batch=8, input_size=4, hidden_size=16):
    """An LSTM with chrono-initialised gates: gradients reach back over the whole sequence."""
    torch.manual_seed(0)
    lstm = chrono_init_(nn.LSTM(input_size, hidden_size, batch_first=True), max_lag=seq_len)
    model = SequenceRegressor(lstm)
    x, y = torch.randn(batch, seq_len, input_size), torch.randn(batch, 1)
    return model, _step(model, x, y)


def vanishing_rnn(seq_len=200, batch=4, input_size=4, hidden_size=8):
    """A tanh RNN whose recurrent weight is 0.3 x orthogonal: every step back shrinks the
    gradient by at least 0.3, so nothing of the early inputs is learnable."""
    torch.manual_seed(0)
    rnn = nn.RNN(input_size, hidden_size, nonlinearity="tanh", batch_first=True)
    with torch.no_grad():
        rnn.weight_hh_l0.copy_(0.3 * nn.init.orthogonal_(torch.empty(hidden_size, hidden_size)))
    model = SequenceRegressor(rnn)
    x, y = torch.randn(batch, seq_len, input_size), torch.randn(batch, 1)
    return model, _step(model, x, y)
