"""The grid of module settings every gradient number is checked on (BackPACK style)."""

import itertools

KINDS = ("RNN_TANH", "RNN_RELU", "GRU", "LSTM")

# Each option on its own, then pairs that interact (packed x bidirectional, dropout x layers, ...).
SINGLE = [
    {},
    {"num_layers": 2},
    {"num_layers": 3},
    {"bidirectional": True},
    {"batch_first": True},
    {"bias": False},
    {"hx": True},
    {"unbatched": True},
    {"packed": "sorted"},
    {"packed": "unsorted"},
    {"dtype": "float64"},
    {"num_layers": 2, "dropout": 0.5, "train": True},
    {"num_layers": 2, "dropout": 0.5, "train": False},
]
COMBOS = [
    {"num_layers": 2, "bidirectional": True, "packed": "unsorted", "hx": True},
    {"num_layers": 3, "bidirectional": True, "dropout": 0.3, "train": True, "batch_first": True},
    {"bidirectional": True, "unbatched": True, "hx": True},
    {"num_layers": 2, "bidirectional": True, "packed": "sorted", "dropout": 0.4, "train": True},
    {"batch_first": True, "hx": True, "bias": False, "dtype": "float64"},
]
LSTM_ONLY = [
    {"proj_size": 3},
    {"proj_size": 2, "num_layers": 2, "bidirectional": True, "hx": True},
    {"proj_size": 3, "packed": "unsorted", "batch_first": True},
]


def settings():
    for kind, extra in itertools.product(KINDS, SINGLE + COMBOS):
        yield kind, extra
    for extra in LSTM_ONLY:
        yield "LSTM", extra


def setting_id(kind, extra):
    return kind + ("-" + "-".join(f"{k}={v}" for k, v in sorted(extra.items())) if extra else "")
