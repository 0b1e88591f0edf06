"""Gate statistics of one layer and direction, the same on every route: per gate, the count of
activations, their sum, and the shares near the lower and the upper bound (saturation)."""

import torch

from gradscope.cells import GATE_ACTIVATION, GATES

SATURATION_MARGIN = 0.05


def gate_statistics(record, kind, layer, direction, gates):
    """Append ``(layer, direction, gate, activation, [count, sum, near low, near high])`` per gate
    to ``record.gate_stats``.

    Sums run over the rows in the gates' own dtype first and in float64 only over the units:
    a few fast passes instead of a float64 copy of every activation (that copy cost more than
    the statistics themselves); counts are exact integers (``count_nonzero``).

    Args:
        record: the call record (accumulate.CallRecord).
        kind: "RNN_TANH", "RNN_RELU", "GRU" or "LSTM".
        layer, direction: which series.
        gates: the activations, (N rows, G gates, H units), gates in ``cells.GATES[kind]`` order.
    """
    activations = GATE_ACTIVATION[kind]
    rows, n_gates, size = gates.shape
    nan = gates.new_tensor(float("nan"), dtype=torch.float64)
    count = gates.new_tensor(float(rows * size), dtype=torch.float64)
    for index, gate in enumerate(GATES[kind]):
        # one gate at a time, each threshold counted once over that gate's own columns only:
        # a comparison and a full count_nonzero per bound (a per-column count measured slower)
        values = gates[:, index]
        activation = activations[gate]
        total = values.sum(0).sum(dtype=torch.float64)
        if activation == "relu":  # "low" is a dead unit; there is no upper bound
            low, high = torch.count_nonzero(values == 0), nan
        else:
            low = torch.count_nonzero(values < (SATURATION_MARGIN if activation == "sigmoid" else -1 + SATURATION_MARGIN))
            high = torch.count_nonzero(values > 1 - SATURATION_MARGIN)
        stats = torch.stack([count, total, low.to(torch.float64), high.to(torch.float64)])
        record.gate_stats.append((layer, direction, gate, activation, stats))
