"""Gate statistics of one layer and direction, the same on every route: per gate, the count of
activations, their sum, and the shares near the lower and the upper bound (saturation)."""

import numpy as np
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
            low, high = _count(values, "eq", 0.0), nan
        else:
            low = _count(values, "lt", SATURATION_MARGIN if activation == "sigmoid" else -1 + SATURATION_MARGIN)
            high = _count(values, "gt", 1 - SATURATION_MARGIN)
        stats = torch.stack([count, total, _as_float64(low, count), _as_float64(high, count)])
        record.gate_stats.append((layer, direction, gate, activation, stats))


_NUMPY_COMPARE = {"lt": np.less, "gt": np.greater, "eq": np.equal}
_TORCH_COMPARE = {"lt": torch.lt, "gt": torch.gt, "eq": torch.eq}


def _count(values, compare, threshold):
    """How many entries of ``values`` compare true against ``threshold`` (in the values' dtype).

    On the CPU, float32/float64 go through numpy: its compare-and-count measured 4-7x faster than
    torch's (whose comparison kernels write bools at ~4 ns an entry here), a Python int. Else a
    tensor on the values' device (no host sync)."""
    if values.device.type == "cpu" and values.dtype in (torch.float32, torch.float64):
        array = values.detach().numpy()
        return int(np.count_nonzero(_NUMPY_COMPARE[compare](array, array.dtype.type(threshold))))
    return torch.count_nonzero(_TORCH_COMPARE[compare](values, threshold))


def _as_float64(value, like):
    if isinstance(value, torch.Tensor):
        return value.to(torch.float64)
    return like.new_tensor(float(value))
