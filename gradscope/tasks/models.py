"""Small sequence models for the demo: one recurrent layer and a linear read-out per step.

RNN, GRU and LSTM get the same hidden size, so the comparison is of the cell, not the width.
"""

import torch
from torch import nn

KINDS = ("RNN", "GRU", "LSTM")
_LAYERS = {"RNN": nn.RNN, "GRU": nn.GRU, "LSTM": nn.LSTM}


class SequenceModel(nn.Module):
    """``x`` (batch, T, input_size) -> per-step outputs (batch, T, output_size).

    The task's loss picks the steps it scores (the last one for the adding problem).
    """

    def __init__(self, kind, input_size, hidden_size, output_size, layers=1):
        super().__init__()
        if kind not in _LAYERS:
            raise ValueError(f"unknown model kind {kind!r}; choose one of {', '.join(KINDS)}")
        self.kind = kind
        self.rnn = _LAYERS[kind](input_size, hidden_size, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden_size, output_size)
        if kind == "LSTM":
            _open_forget_gates(self.rnn)

    def forward(self, x):
        outputs, _ = self.rnn(x)
        return self.head(outputs)


def _open_forget_gates(lstm, value=1.0):
    # Forget-gate bias 1 (Gers et al. 2000; Jozefowicz et al. 2015): the usual LSTM start, which
    # lets the cell path carry the gradient from the first step on. The two biases add up.
    hidden = lstm.hidden_size
    with torch.no_grad():
        for name, bias in lstm.named_parameters():
            if name.startswith("bias_ih"):
                bias[hidden:2 * hidden].fill_(value)
            elif name.startswith("bias_hh"):
                bias[hidden:2 * hidden].zero_()


def build_model(kind, task, hidden_size, seed=None):
    """A ``SequenceModel`` sized for ``task``; ``seed`` fixes its initial weights."""
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            return SequenceModel(kind, task.input_size, hidden_size, task.output_size)
    return SequenceModel(kind, task.input_size, hidden_size, task.output_size)
