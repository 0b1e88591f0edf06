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
    the statistics themselves); counts are exact integers (int32 per unit: rows < 2**31).

    Args:
        record: the call record (accumulate.CallRecord).
        kind: "RNN_TANH", "RNN_RELU", "GRU" or "LSTM".
        layer, direction: which series.
        gates: the activations, (N rows, G gates, H units), gates in ``cells.GATES[kind]`` order.
    """
    activations = GATE_ACTIVATION[kind]
    rows, n_gates, size = gates.shape
    columns = gates.reshape(rows, n_gates * size)

    def per_gate_sum(value):
        return value.sum(0).view(n_gates, size).sum(1, dtype=torch.float64)

    def per_gate_count(mask):
        # a bool sum into int32 is one fast pass; count_nonzero(dim=0) measured ten times slower
        return mask.sum(0, dtype=torch.int32).view(n_gates, size).sum(1, dtype=torch.float64)

    sums = per_gate_sum(columns)
    high = per_gate_count(columns > 1 - SATURATION_MARGIN)
    low = {}
    for activation in sorted(set(activations.values())):
        if activation == "sigmoid":
            low[activation] = per_gate_count(columns < SATURATION_MARGIN)
        elif activation == "tanh":
            low[activation] = per_gate_count(columns < -1 + SATURATION_MARGIN)
        else:  # relu: "low" is a dead unit; there is no upper bound
            low[activation] = per_gate_count(columns == 0)
    nan = sums.new_tensor(float("nan"))
    count = sums.new_tensor(float(rows * size))
    for index, gate in enumerate(GATES[kind]):
        activation = activations[gate]
        stats = torch.stack([count, sums[index], low[activation][index],
                             high[index] if activation != "relu" else nan])
        record.gate_stats.append((layer, direction, gate, activation, stats))
