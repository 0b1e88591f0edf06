"""gate_statistics against a plain reference: counts of saturated activations at the margins
(NaN and values exactly on a threshold included), sums and counts, on each dtype's path (CPU
float32/float64 count through numpy, others through torch)."""

import math
import types

import pytest
import torch

from gradscope.capture.gate_stats import SATURATION_MARGIN, gate_statistics

DTYPES = [torch.float32, torch.float64, torch.bfloat16]


def _activations(kind, dtype):
    """(N, G, H) activations with values on, just below and just above every threshold, and NaN."""
    gen = torch.Generator().manual_seed(0)
    gates = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}[kind]
    values = torch.rand(40, gates, 6, generator=gen, dtype=torch.float64)
    if kind == "RNN_TANH":
        values = values * 2 - 1
    if kind == "RNN_RELU":
        values = (values - 0.5).clamp(min=0)
    values = values.to(dtype)
    edges = torch.tensor([SATURATION_MARGIN, 1 - SATURATION_MARGIN, -1 + SATURATION_MARGIN, 0.0], dtype=dtype)
    near = torch.cat([edges, torch.nextafter(edges, edges + 1), torch.nextafter(edges, edges - 1)])
    flat = values.view(-1)
    flat[:near.numel()] = near
    flat[-3:] = float("nan")
    return values


def _reference(values, activation):
    """Each gate's [count, sum, near low, near high] the plain way, in the values' dtype."""
    if activation == "relu":
        low, high = (values == 0).sum(), float("nan")
    else:
        low = (values < (SATURATION_MARGIN if activation == "sigmoid" else -1 + SATURATION_MARGIN)).sum()
        high = (values > 1 - SATURATION_MARGIN).sum()
    return [values.numel(), values.to(torch.float64).sum().item(), float(low), float(high)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"])
def test_counts_and_sums_equal_the_plain_reference(kind, dtype):
    from gradscope.cells import GATE_ACTIVATION, GATES

    values = _activations(kind, dtype)
    record = types.SimpleNamespace(gate_stats=[])
    gate_statistics(record, kind, 0, "forward", values)
    assert [row[2] for row in record.gate_stats] == list(GATES[kind])
    for index, (layer, direction, gate, activation, stats) in enumerate(record.gate_stats):
        assert (layer, direction) == (0, "forward") and activation == GATE_ACTIVATION[kind][gate]
        assert stats.dtype == torch.float64 and stats.shape == (4,)
        count, total, low, high = stats.tolist()
        want = _reference(values[:, index], activation)
        assert count == want[0]
        # a gate holding the NaN entries has a NaN sum; the counts never count a NaN
        assert math.isnan(total) == math.isnan(want[1])
        if not math.isnan(total):
            assert total == pytest.approx(want[1], rel=1e-2 if dtype == torch.bfloat16 else 1e-6)
        assert low == want[2]
        assert (high == want[3]) or (math.isnan(high) and math.isnan(want[3]))


def test_sums_of_finite_values_agree_with_float64():
    values = torch.rand(500, 4, 32, generator=torch.Generator().manual_seed(1))
    record = types.SimpleNamespace(gate_stats=[])
    gate_statistics(record, "LSTM", 1, "reverse", values)
    for index, (*_, stats) in enumerate(record.gate_stats):
        assert stats[1].item() == pytest.approx(values[:, index].double().sum().item(), rel=1e-6)
