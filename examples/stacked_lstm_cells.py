"""Two stacked ``nn.LSTMCell``s stepped in a Python loop, on the adding problem.

gradscope finds every ``nn.LSTMCell`` by itself: each call is one time step, the state passed
in links it to the previous one. Each cell is its own module (``cell1``, ``cell2``) with rows
for state ``h`` and the cell state ``c``. The lower cell's direct gradient comes from the cell
above, the upper cell's from the loss at the last step.

    python examples/stacked_lstm_cells.py            # ~20 seconds on 2 CPU cores
    python examples/stacked_lstm_cells.py --small    # seconds
"""

import argparse

import torch
from torch import nn

import gradscope
from gradscope.tasks import AddingTask, seeded_generator


class StackedCells(nn.Module):
    def __init__(self, input_size, hidden):
        super().__init__()
        self.cell1 = nn.LSTMCell(input_size, hidden)
        self.cell2 = nn.LSTMCell(hidden, hidden)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x):
        batch = x.shape[0]
        h1 = c1 = x.new_zeros(batch, self.cell1.hidden_size)
        h2 = c2 = x.new_zeros(batch, self.cell2.hidden_size)
        for t in range(x.shape[1]):
            h1, c1 = self.cell1(x[:, t], (h1, c1))
            h2, c2 = self.cell2(h1, (h2, c2))
        return self.head(h2)


def main(small=False):
    torch.manual_seed(0)
    seq_len, hidden, steps = (12, 8, 6) if small else (50, 32, 400)
    task = AddingTask(seq_len=seq_len)
    model = StackedCells(task.input_size, hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = seeded_generator(0)

    with gradscope.watch(model, every=3 if small else 50, name="stacked LSTMCells") as scope:
        for step in range(steps):
            x, y = task.batch(32, generator)
            loss = nn.functional.mse_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step % 50 == 0 or step == steps - 1:
                print(f"step {step:4d}  MSE {loss.item():.4f}  (baseline {task.baseline:.3f})")

    rows = scope.timesteps()
    print(rows.groupby(["module", "state"])["grad_norm"].agg(["min", "max"]).to_string())
    diagnosis = gradscope.analyze(scope)
    print(diagnosis.summary()[["module", "gain", "horizon", "verdict"]].to_string(index=False))
    return scope, diagnosis


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a few seconds: tiny model and few steps")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(small=parse_args().small)
