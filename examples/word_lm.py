"""Wrap an existing word-level language model in gradscope.watch, changing nothing else.

The model and loop are the classic PyTorch word LM (pytorch/examples word_language_model):
embedding, a 2-layer LSTM with dropout, a linear decoder; truncated BPTT over chunks of
``bptt`` words with the hidden state carried over and detached between batches, and
``clip_grad_norm_``. The words come from Python's own help text (pydoc_data), so nothing is
downloaded.

    python examples/word_lm.py            # ~1 minute on 2 CPU cores
    python examples/word_lm.py --small    # seconds

What to look at: the state carried across batches continues the sequence, but it is detached,
so the gradient only reaches back within a chunk: the horizon cannot exceed ``bptt``.
"""

import argparse
import re
from collections import Counter

import torch
from torch import nn

import gradscope
from gradscope.tasks import stdlib_text


class WordLM(nn.Module):
    """Embedding -> 2-layer LSTM (dropout between and around) -> decoder; seq-first tensors."""

    def __init__(self, vocab_size, emb=64, hidden=128, layers=2, dropout=0.2):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(vocab_size, emb)
        self.lstm = nn.LSTM(emb, hidden, layers, dropout=dropout)
        self.decoder = nn.Linear(hidden, vocab_size)

    def forward(self, tokens, hidden):
        output, hidden = self.lstm(self.drop(self.encoder(tokens)), hidden)
        return self.decoder(self.drop(output)), hidden

    def init_hidden(self, batch_size):
        weight = next(self.parameters())
        shape = (self.lstm.num_layers, batch_size, self.lstm.hidden_size)
        return weight.new_zeros(shape), weight.new_zeros(shape)


def word_ids(max_vocab):
    """The help text as word ids; words beyond the ``max_vocab - 1`` most common become <unk>."""
    words = re.findall(r"[a-z]+|[.,:;()]", stdlib_text().lower())
    vocab = ["<unk>"] + [w for w, _ in Counter(words).most_common(max_vocab - 1)]
    index = {w: i for i, w in enumerate(vocab)}
    return torch.tensor([index.get(w, 0) for w in words]), len(vocab)


def batchify(ids, batch_size):
    """(steps, batch): each column a contiguous stretch of the text, as in the PyTorch example."""
    steps = len(ids) // batch_size
    return ids[:steps * batch_size].view(batch_size, steps).t().contiguous()


def repackage_hidden(hidden):
    """Detach the state from the previous batch's graph (truncated BPTT)."""
    return tuple(h.detach() for h in hidden)


def main(small=False):
    torch.manual_seed(0)
    bptt, batch_size = (20, 8) if small else (35, 20)
    ids, vocab_size = word_ids(max_vocab=500 if small else 5000)
    data = batchify(ids, batch_size)
    model = WordLM(vocab_size, emb=32 if small else 64, hidden=32 if small else 128)
    optimizer = torch.optim.SGD(model.parameters(), lr=5.0)
    loss_fn = nn.CrossEntropyLoss()

    # The only gradscope line: watch the model while the usual loop runs. every=10 records
    # every 10th batch; the other batches run the model's own code untouched.
    with gradscope.watch(model, every=4 if small else 10, name="word LM") as scope:
        model.train()
        hidden = model.init_hidden(batch_size)
        starts = range(0, len(data) - 1, bptt)  # one pass over the text
        if small:
            starts = starts[:12]
        for batch, start in enumerate(starts):
            length = min(bptt, len(data) - 1 - start)  # the last chunk may be shorter
            tokens, targets = data[start:start + length], data[start + 1:start + 1 + length]
            hidden = repackage_hidden(hidden)
            optimizer.zero_grad()
            output, hidden = model(tokens, hidden)
            loss = loss_fn(output.view(-1, vocab_size), targets.reshape(-1))
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 0.25)
            optimizer.step()
            if batch % 50 == 0 or batch == len(starts) - 1:
                print(f"batch {batch:4d}  loss {loss.item():.3f}")

    diagnosis = gradscope.analyze(scope)
    print(diagnosis)
    print(diagnosis.summary()[["module", "layer", "gain", "horizon", "verdict"]].to_string(index=False))
    return scope, diagnosis


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a few seconds: tiny model and few batches")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(small=parse_args().small)
