"""A textbook RNN written from scratch (raw Parameters, a Python loop), watched with ``track``.

    h_t = tanh(x_t W_xh + h_(t-1) W_hh + b_h),   y = h_T W_hq + b_q

There is no nn.RNN inside, so gradscope cannot find the recurrence by itself. Two lines tell it:
``h = scope.track(h, "rnn")`` marks each new state as the next time step of the label "rnn", and
``weights={"rnn": ...}`` adds the recurrent weight to the spectra under the same label, which
links it to the tracked state (the spectral bound then applies to it).

For tracked states gradscope measures the carried part (what comes back through h_(t+1), by a
vector-Jacobian product through each step) and the direct part, as for an nn.RNN, so the gain
reads the same wherever the loss enters (here at the last step only: the adding problem).

The weights start as in the textbook (normal, std 0.01): sigma_max(W_hh) is far below 1, so
by Pascanu et al. (2013) the gradient must vanish, and the measured gain agrees.

    python examples/rnn_from_scratch.py            # ~10 seconds on 2 CPU cores
    python examples/rnn_from_scratch.py --small    # seconds
"""

import argparse

import torch
from torch import nn

import gradscope
from gradscope.tasks import AddingTask, seeded_generator


class ScratchRNN(nn.Module):
    def __init__(self, input_size, hidden, output_size=1, scale=0.01):
        super().__init__()
        self.W_xh = nn.Parameter(torch.randn(input_size, hidden) * scale)
        self.W_hh = nn.Parameter(torch.randn(hidden, hidden) * scale)
        self.b_h = nn.Parameter(torch.zeros(hidden))
        self.W_hq = nn.Parameter(torch.randn(hidden, output_size) * scale)
        self.b_q = nn.Parameter(torch.zeros(output_size))
        self.hidden = hidden

    def forward(self, x, scope=None):
        """x: (batch, T, input_size) -> prediction from the last state (batch, output_size)."""
        h = x.new_zeros(x.shape[0], self.hidden)
        for t in range(x.shape[1]):
            h = torch.tanh(x[:, t] @ self.W_xh + h @ self.W_hh + self.b_h)
            if scope is not None:
                h = scope.track(h, "rnn")   # mark h_t; returns h unchanged
        return h @ self.W_hq + self.b_q


def main(small=False):
    torch.manual_seed(0)
    seq_len, hidden, steps = (12, 8, 6) if small else (50, 64, 300)
    task = AddingTask(seq_len=seq_len)
    model = ScratchRNN(task.input_size, hidden)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    generator = seeded_generator(0)

    with gradscope.watch(model, weights={"rnn": model.W_hh}, every=3 if small else 25,
                         name="RNN from scratch") as scope:
        for step in range(steps):
            x, y = task.batch(32, generator)
            loss = nn.functional.mse_loss(model(x, scope), y)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            if step % 50 == 0 or step == steps - 1:
                print(f"step {step:4d}  MSE {loss.item():.4f}  (baseline {task.baseline:.3f})")

    print(scope.spectra()[["step", "gate", "sigma_max", "spectral_radius"]].tail(3).to_string(index=False))
    diagnosis = gradscope.analyze(scope)
    print(diagnosis.summary()[["module", "gain", "horizon", "verdict"]].to_string(index=False))
    return scope, diagnosis


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a few seconds: tiny model and few steps")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(small=parse_args().small)
