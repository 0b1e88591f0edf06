"""A character-level language model on English text that ships with Python itself.

The text is read at run time from the installed standard library: the help topics of
``pydoc_data.topics`` (the text behind ``help('if')`` etc., ~460k characters), falling back to the
docstrings of common stdlib modules and then to the Zen of Python (``this``) where a trimmed
Python lacks ``pydoc_data``. Nothing is downloaded.

The baseline is the unigram entropy of the text: the loss of always predicting the character
frequencies, the best guess without context.
"""

import codecs
import importlib
import math
import string
from collections import Counter

import torch

from gradscope.tasks.base import Task

# typographic characters the topics use, written as ASCII so the vocabulary stays small
_ASCII_FOR = {"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u2014": "-", "\u2013": "-", "\u2026": "..."}
_KEEP = set(string.printable) - set("\r\x0b\x0c\t")
_DOCSTRING_MODULES = ("collections", "functools", "itertools", "json", "os", "pathlib", "re", "string",
                      "textwrap", "typing", "unittest", "argparse", "logging", "subprocess")


def stdlib_text():
    """English text from the installed standard library (ASCII, whitespace tidied)."""
    raw = _pydoc_topics() or _docstrings() or _zen()
    text = "".join(_ASCII_FOR.get(ch, ch) for ch in raw)
    text = "".join(ch if ch in _KEEP else " " for ch in text)
    return "\n".join(" ".join(line.split()) for line in text.splitlines() if line.strip())


def _pydoc_topics():
    try:
        topics = importlib.import_module("pydoc_data.topics").topics
    except ImportError:
        return ""
    return "\n".join(topics[key] for key in sorted(topics))


def _docstrings():
    parts = []
    for name in _DOCSTRING_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        parts.append(module.__doc__ or "")
        for attr in sorted(dir(module)):
            doc = getattr(getattr(module, attr, None), "__doc__", None)
            if isinstance(doc, str) and not attr.startswith("_"):
                parts.append(doc)
    return "\n".join(parts)


def _zen():
    module = importlib.import_module("this")  # prints the Zen once on first import; harmless
    return codecs.decode(module.s, "rot13")


class CharLMTask(Task):
    """Predict the next character at every step of a window of ``seq_len`` characters."""

    name = "charlm"
    loss_name = "cross-entropy (nats/char)"

    def __init__(self, seq_len=100, text=None, eval_share=0.1):
        self.seq_len = int(seq_len)
        text = stdlib_text() if text is None else text
        if len(text) < 2 * (self.seq_len + 1):
            raise ValueError(f"the text has {len(text)} characters, too few for windows of {self.seq_len}; "
                             "pass a shorter --seq-len")
        self.n_characters = len(text)
        self.vocab = sorted(set(text))
        index = {ch: i for i, ch in enumerate(self.vocab)}
        codes = torch.tensor([index[ch] for ch in text], dtype=torch.long)
        cut = max(self.seq_len + 1, int(len(codes) * (1 - eval_share)))
        self.codes = {"train": codes[:cut], "eval": codes[cut - self.seq_len - 1:]}
        self.input_size = self.output_size = len(self.vocab)
        self.baseline = _unigram_entropy(text)
        self.baseline_note = "predict the character frequencies (unigram entropy)"

    def batch(self, batch_size, generator, split="train"):
        codes = self.codes[split]
        starts = torch.randint(0, len(codes) - self.seq_len, (batch_size,), generator=generator)
        windows = torch.stack([codes[s:s + self.seq_len + 1] for s in starts.tolist()])
        x = torch.nn.functional.one_hot(windows[:, :-1], self.input_size).float()
        return x, windows[:, 1:]

    def loss(self, outputs, y):
        return torch.nn.functional.cross_entropy(outputs.reshape(-1, self.output_size), y.reshape(-1))

    def describe(self):
        return {**super().describe(), "vocab_size": len(self.vocab), "characters": self.n_characters}


def _unigram_entropy(text):
    counts = Counter(text)
    total = len(text)
    return -sum(n / total * math.log(n / total) for n in counts.values())
