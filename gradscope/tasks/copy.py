"""The copy task (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016), at a fixed total length.

Input: ``copy_len`` symbols from an alphabet of ``n_symbols``, then blanks, a delimiter
``copy_len + 1`` steps before the end, then blanks. Target: the same symbols, in order, at the
last ``copy_len`` steps. Guessing uniformly (the best one can do without memory, since the
symbols are uniform) costs ln(n_symbols) nats per symbol: the baseline.
"""

import math

import torch

from gradscope.tasks.base import Task


class CopyTask(Task):
    name = "copy"
    loss_name = "cross-entropy (nats/symbol)"

    def __init__(self, seq_len=100, copy_len=5, n_symbols=8):
        if seq_len < 2 * copy_len + 1:
            raise ValueError(
                f"the copy task needs seq_len >= 2 * copy_len + 1 = {2 * copy_len + 1}, got {seq_len}; "
                "pass a longer --seq-len"
            )
        self.seq_len, self.copy_len, self.n_symbols = int(seq_len), int(copy_len), int(n_symbols)
        self.blank, self.delimiter = n_symbols, n_symbols + 1
        self.input_size = n_symbols + 2
        self.output_size = n_symbols
        self.baseline = math.log(n_symbols)
        self.baseline_note = f"guess uniformly among {n_symbols} symbols (ln {n_symbols})"

    def batch(self, batch_size, generator, split="train"):
        T, K = self.seq_len, self.copy_len
        symbols = torch.randint(0, self.n_symbols, (batch_size, K), generator=generator)
        tokens = torch.full((batch_size, T), self.blank, dtype=torch.long)
        tokens[:, :K] = symbols
        tokens[:, T - K - 1] = self.delimiter
        x = torch.nn.functional.one_hot(tokens, self.input_size).float()
        return x, symbols

    def loss(self, outputs, y):
        tail = outputs[:, -self.copy_len:]
        return torch.nn.functional.cross_entropy(tail.reshape(-1, self.n_symbols), y.reshape(-1))
