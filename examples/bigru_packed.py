"""A bidirectional GRU encoder on packed, padded sequences of different lengths.

The task: read a sequence of tokens (lengths 5 to ``max_len``) and tell whether its first
token is even. The forward direction must carry that token to its last state; the reverse
direction reads it last. gradscope records both directions: ``t`` is always the input
position, ``batch`` counts the sequences still active at ``t`` (fewer at the tail of a packed
batch), and the reverse direction's carried gradient comes from ``t - 1``.

    python examples/bigru_packed.py            # ~10 seconds on 2 CPU cores
    python examples/bigru_packed.py --small    # seconds
"""

import argparse

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_sequence

import gradscope

VOCAB = 20


class Encoder(nn.Module):
    """Embedding -> bidirectional GRU over a PackedSequence -> both final states -> logits."""

    def __init__(self, hidden=32, classes=2):
        super().__init__()
        self.embed = nn.Embedding(VOCAB + 1, 16, padding_idx=0)
        self.gru = nn.GRU(16, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, classes)

    def forward(self, tokens, lengths):
        packed = pack_padded_sequence(self.embed(tokens), lengths, batch_first=True, enforce_sorted=False)
        _, h_n = self.gru(packed)               # (2, batch, hidden): forward last, reverse first
        return self.head(torch.cat([h_n[0], h_n[1]], dim=-1))


def make_batch(batch_size, max_len, generator):
    """Padded token ids (0 = padding), the true lengths, and the label (first token even)."""
    lengths = torch.randint(5, max_len + 1, (batch_size,), generator=generator)
    sequences = [torch.randint(1, VOCAB + 1, (int(n),), generator=generator) for n in lengths]
    labels = torch.tensor([int(s[0]) % 2 for s in sequences])
    return pad_sequence(sequences, batch_first=True), lengths, labels


def main(small=False):
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    steps, max_len = (6, 12) if small else (300, 40)
    model = Encoder(hidden=8 if small else 32)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    with gradscope.watch(model, every=3 if small else 25, name="bi-GRU encoder") as scope:
        for step in range(steps):
            tokens, lengths, labels = make_batch(32, max_len, generator)
            loss = nn.functional.cross_entropy(model(tokens, lengths), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step % 50 == 0 or step == steps - 1:
                print(f"step {step:4d}  loss {loss.item():.3f}")

    rows = scope.timesteps()
    last = rows[rows["step"] == rows["step"].max()]
    print("last recorded step, by direction and position (note batch shrinking at the tail):")
    print(last.groupby(["direction", "t"])[["batch", "grad_norm", "carried_norm"]].mean()
          .round(5).iloc[::max(1, max_len // 6)].to_string())
    diagnosis = gradscope.analyze(scope)
    print(diagnosis.summary()[["module", "direction", "gain", "horizon", "verdict"]].to_string(index=False))
    return scope, diagnosis


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a few seconds: tiny model and few steps")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(small=parse_args().small)
