"""The fast route (mode="fast") against the exact route over the whole module grid: the same
rows and numbers (timesteps and gates), and the unwatched module's outputs and parameter
gradients, bitwise."""

import numpy as np
import pandas as pd
import pytest
import torch

import gradscope
from tests.settings import setting_id, settings
from tests.test_capture_modules import Inputs, build

CASES = list(settings())
KEYS = ["module", "call", "layer", "direction", "state", "t"]


def _watched(kind, extra, mode, seed=1234):
    torch.manual_seed(0)
    module, dtype = build(kind, extra)
    inputs = Inputs(module, kind, extra, dtype, torch.Generator().manual_seed(1))
    with gradscope.watch(module, mode=mode) as scope:
        torch.manual_seed(seed)
        inputs.loss(inputs.call(module)).backward()
    return scope, dtype


def assert_same_tables(fast, exact, dtype):
    """Same rows; norms within 1e-10 (float64) or 1e-5 (float32) relative, with an absolute
    floor far below the table's scale for values near float32's underflow."""
    rtol = 1e-10 if dtype == torch.float64 else 1e-5
    a = fast.timesteps().sort_values(KEYS).reset_index(drop=True)
    b = exact.timesteps().sort_values(KEYS).reset_index(drop=True)
    assert len(a) == len(b) > 0
    pd.testing.assert_frame_equal(a[KEYS + ["step", "cell", "batch", "nonfinite"]],
                                  b[KEYS + ["step", "cell", "batch", "nonfinite"]])
    values = ["grad_norm", "carried_norm", "direct_norm"]
    scale = float(np.nanmax(b[values].to_numpy()))
    for column in values:
        np.testing.assert_allclose(a[column], b[column], rtol=rtol, atol=rtol * 1e-3 * scale, err_msg=column)
    gate_keys = ["module", "call", "layer", "direction", "gate"]
    ga = fast.gates().sort_values(gate_keys).reset_index(drop=True)
    gb = exact.gates().sort_values(gate_keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(ga[gate_keys + ["activation", "count"]], gb[gate_keys + ["activation", "count"]])
    for column in ("mean", "low", "high"):
        np.testing.assert_allclose(ga[column], gb[column], rtol=rtol, atol=1e-12, err_msg=column)


@pytest.mark.parametrize("kind,extra", CASES, ids=[setting_id(k, e) for k, e in CASES])
def test_fast_equals_exact(kind, extra):
    fast, dtype = _watched(kind, extra, "fast")
    exact, _ = _watched(kind, extra, "exact")
    assert_same_tables(fast, exact, dtype)


@pytest.mark.parametrize("kind,extra", CASES, ids=[setting_id(k, e) for k, e in CASES])
def test_fast_outputs_and_parameter_grads_bitwise(kind, extra):
    torch.manual_seed(0)
    module, dtype = build(kind, extra)
    inputs = Inputs(module, kind, extra, dtype, torch.Generator().manual_seed(1))

    def run():
        module.zero_grad()
        torch.manual_seed(7)
        result = inputs.call(module)
        inputs.loss(result).backward()
        out = result[0].data if extra.get("packed") else result[0]
        hidden = result[1] if kind == "LSTM" else (result[1],)
        return [out.detach()] + [h.detach() for h in hidden] + [p.grad.clone() for p in module.parameters()]

    plain = run()
    with gradscope.watch(module, mode="fast"):
        watched = run()
    for got, want in zip(watched, plain):
        assert got.shape == want.shape and torch.equal(got, want)
