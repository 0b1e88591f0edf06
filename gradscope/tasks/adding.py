"""The adding problem (Hochreiter & Schmidhuber 1997; the variant of Le et al. 2015).

Input: two channels of length T. Channel 0 holds values drawn from U(0, 1); channel 1 is a
marker that is 1 at exactly two positions, one in the first half and one in the second half.
Target: the sum of the two marked values, read from the model's output at the last step.
Predicting the mean 1.0 without looking gives MSE = Var(U1 + U2) = 2/12 ~ 0.167: the baseline
a model must beat to show it carried information across the sequence.
"""

import torch

from gradscope.tasks.base import Task

MEAN_GUESS_MSE = 2.0 / 12.0


class AddingTask(Task):
    name = "adding"
    input_size = 2
    output_size = 1
    loss_name = "MSE"
    baseline = MEAN_GUESS_MSE
    baseline_note = "predict the mean sum 1.0 (MSE = 1/6)"

    def __init__(self, seq_len=100):
        if seq_len < 2:
            raise ValueError(f"the adding problem needs seq_len >= 2, got {seq_len}")
        self.seq_len = int(seq_len)

    def batch(self, batch_size, generator, split="train"):
        T, half = self.seq_len, self.seq_len // 2
        values = torch.rand(batch_size, T, generator=generator)
        first = torch.randint(0, half, (batch_size,), generator=generator)
        second = torch.randint(half, T, (batch_size,), generator=generator)
        rows = torch.arange(batch_size)
        markers = torch.zeros(batch_size, T)
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        x = torch.stack([values, markers], dim=-1)
        y = (values[rows, first] + values[rows, second]).unsqueeze(-1)
        return x, y

    def loss(self, outputs, y):
        return torch.nn.functional.mse_loss(outputs[:, -1], y)
