"""What every built-in task offers the demo: data batches, a loss, and the trivial baseline."""

import torch


class Task:
    """A sequence task that makes its own data.

    Subclasses set ``name``, ``input_size``, ``output_size``, ``seq_len``, ``loss_name``,
    ``baseline`` (the loss of the best guess that ignores the input sequence) and
    ``baseline_note`` (what that guess is), and define ``batch`` and ``loss``.
    """

    name = "task"
    loss_name = "loss"
    baseline = float("nan")
    baseline_note = ""

    def batch(self, batch_size, generator, split="train"):
        """``(x, y)``: ``x`` is a float tensor (batch, seq_len, input_size)."""
        raise NotImplementedError

    def loss(self, outputs, y):
        """Scalar loss from the model's per-step ``outputs`` (batch, seq_len, output_size)."""
        raise NotImplementedError

    def describe(self):
        """A JSON-able summary for run metadata and reports."""
        return {
            "task": self.name,
            "seq_len": self.seq_len,
            "input_size": self.input_size,
            "output_size": self.output_size,
            "loss_name": self.loss_name,
            "baseline": float(self.baseline),
            "baseline_note": self.baseline_note,
        }


def seeded_generator(seed):
    """A private CPU generator, so a task's data depend on ``seed`` only (not on global RNG use)."""
    return torch.Generator().manual_seed(int(seed))
