"""Targets for `gradscope check`: each function returns (model, step).

    gradscope check examples/ci/gradient_targets.py:healthy_lstm     # exit 0
    gradscope check examples/ci/gradient_targets.py:vanishing_rnn    # exit 1: see what red looks like

In your project, build the real model (small sizes are fine: the check is about the shape of
the gradient through time, not about accuracy) and one batch of real or synthetic data.
"""

import torch
from torch import nn


class SequenceRegressor(nn.Module):
    """A recurrent layer and a linear read-out at every time step."""

    def __init__(self, recurrent, hidden_size, out_size=1):
        super().__init__()
        self.recurrent = recurrent
        self.head = nn.Linear(hidden_size, out_size)

    def forward(self, x):
        out, _ = self.recurrent(x)
        return self.head(out)


def _step(model, x, y):
    def step():
        model.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()

    return step


def healthy_lstm(seq_len=50, batch=8, input_size=4, hidden_size=16):
    """An LSTM with the forget-gate bias at 1 (Jozefowicz et al. 2015): gradients carry far back."""
    torch.manual_seed(0)
    lstm = nn.LSTM(input_size, hidden_size, batch_first=True)
    with torch.no_grad():
        for name, bias in lstm.named_parameters():
            if name.startswith("bias_ih"):
                bias[hidden_size:2 * hidden_size].fill_(1.0)  # i, f, g, o: the forget slice
    model = SequenceRegressor(lstm, hidden_size)
    x = torch.randn(batch, seq_len, input_size)
    y = torch.randn(batch, seq_len, 1)
    return model, _step(model, x, y)


def vanishing_rnn(seq_len=200, batch=4, input_size=4, hidden_size=8):
    """A tanh RNN whose recurrent weight is 0.3 x orthogonal: every step shrinks the gradient
    by at least 0.3, so after 200 steps nothing of the early inputs is learnable."""
    torch.manual_seed(0)
    rnn = nn.RNN(input_size, hidden_size, nonlinearity="tanh", batch_first=True)
    with torch.no_grad():
        rnn.weight_hh_l0.copy_(0.3 * nn.init.orthogonal_(torch.empty(hidden_size, hidden_size)))
    model = SequenceRegressor(rnn, hidden_size)
    x = torch.randn(batch, seq_len, input_size)
    y = torch.randn(batch, seq_len, 1)
    return model, _step(model, x, y)
