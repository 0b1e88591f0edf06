"""The fast route (mode="fast") against the exact route over the whole module grid: the same
rows and numbers (timesteps and gates), both as it runs on the CPU (gradscope's own BPTT) and
where it keeps the module's fused kernels (tapped); the unwatched module's outputs and parameter
gradients within rounding (own BPTT) and bitwise (tapped)."""

import numpy as np
import pandas as pd
import pytest
import torch

import gradscope
from gradscope.capture import own_bptt, own_lstm, own_lstm_layer
from tests.reference import compare_tables
from tests.settings import setting_id, settings
from tests.test_watched_equals_unwatched import ROUNDING, largest_relative_gap
from tests.test_capture_modules import Inputs, build, outputs_and_grads

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
    # gate activations lie in [-1, 1]: a mean near 0 (tanh gates) carries an absolute rounding
    # error of the recomputed gates, not a relative one
    atol = 1e-12 if dtype == torch.float64 else 1e-6
    for column in ("mean", "low", "high"):
        np.testing.assert_allclose(ga[column], gb[column], rtol=rtol, atol=atol, err_msg=column)


@pytest.mark.parametrize("kind,extra", CASES, ids=[setting_id(k, e) for k, e in CASES])
def test_fast_equals_exact(kind, extra):
    fast, dtype = _watched(kind, extra, "fast")
    exact, _ = _watched(kind, extra, "exact")
    assert_same_tables(fast, exact, dtype)


LSTM_GRID = [(k, e) for k, e in CASES if k == "LSTM"]


@pytest.mark.parametrize("kind,extra", LSTM_GRID, ids=[setting_id(k, e) for k, e in LSTM_GRID])
def test_lstm_bptt_writes_every_row_it_reads(kind, extra, monkeypatch):
    """The LSTM's BPTT zeros only the rows no step carries into: with its buffers handed out
    full of NaN (as a reused block holds old numbers), the tables still equal exact's."""
    def poisoned(pool, shape, like):
        return torch.full(shape, float("nan"), dtype=like.dtype, device=like.device)

    monkeypatch.setattr(own_lstm, "pooled_empty", poisoned)
    fast, dtype = _watched(kind, extra, "fast")
    exact, _ = _watched(kind, extra, "exact")
    assert_same_tables(fast, exact, dtype)


@pytest.mark.parametrize("kind,extra", CASES, ids=[setting_id(k, e) for k, e in CASES])
def test_fast_matches_autograd_reference(kind, extra):
    torch.manual_seed(0)
    module, dtype = build(kind, extra)
    inputs = Inputs(module, kind, extra, dtype, torch.Generator().manual_seed(1))
    with gradscope.watch(module, mode="fast") as scope:
        torch.manual_seed(1234)
        inputs.loss(inputs.call(module)).backward()
    compare_tables(scope.timesteps(), inputs.reference(1234), rtol=1e-9 if dtype == torch.float64 else 1e-4)


def assert_within_rounding(watched, plain, dtype):
    """Each tensor within ROUNDING[dtype] of the largest entry of the unwatched one."""
    for got, want in zip(watched, plain):
        assert largest_relative_gap(got, want) <= ROUNDING[dtype]


@pytest.fixture
def tapped_route(monkeypatch):
    """The fast route as it runs where gradscope's own BPTT does not apply (a GPU, autocast):
    the module's fused kernels, tapped."""
    monkeypatch.setattr(own_bptt, "applies", lambda *args: False)


@pytest.mark.parametrize("kind,extra", CASES, ids=[setting_id(k, e) for k, e in CASES])
def test_tapped_route_equals_exact(kind, extra, tapped_route):
    fast, dtype = _watched(kind, extra, "fast")
    exact, _ = _watched(kind, extra, "exact")
    assert_same_tables(fast, exact, dtype)


LSTM_CASES = [(k, e) for k, e in CASES if k == "LSTM" and not e.get("packed")]


@pytest.fixture
def stepped_lstm(monkeypatch):
    """The CPU form's LSTM with its forward stepped by gradscope (what large layers get)."""
    monkeypatch.setattr(own_lstm_layer, "stepped", lambda layer_in, weights: True)


@pytest.mark.parametrize("kind,extra", LSTM_CASES, ids=[setting_id(k, e) for k, e in LSTM_CASES])
def test_stepped_lstm_equals_exact_and_unwatched(kind, extra, stepped_lstm):
    fast, dtype = _watched(kind, extra, "fast")
    exact, _ = _watched(kind, extra, "exact")
    assert_same_tables(fast, exact, dtype)
    watched, plain, dtype = outputs_and_grads(kind, extra, "fast")
    assert_within_rounding(watched, plain, dtype)


@pytest.mark.parametrize("kind,extra", CASES, ids=[setting_id(k, e) for k, e in CASES])
def test_tapped_route_outputs_and_parameter_grads_bitwise(kind, extra, tapped_route):
    watched, plain, _ = outputs_and_grads(kind, extra, "fast")
    for got, want in zip(watched, plain):
        assert got.shape == want.shape and torch.equal(got, want)


@pytest.mark.parametrize("kind,extra", CASES, ids=[setting_id(k, e) for k, e in CASES])
def test_own_bptt_outputs_and_parameter_grads_within_rounding(kind, extra):
    """On the CPU the fast route runs gradscope's own BPTT: the same values within float
    rounding of the largest entry (1e-5 float32, 1e-12 float64), other tensors than the grads'."""
    watched, plain, dtype = outputs_and_grads(kind, extra, "fast")
    assert all(got.shape == want.shape and got.dtype == want.dtype for got, want in zip(watched, plain))
    assert_within_rounding(watched, plain, dtype)


# ---- beyond one call: chains, several calls, Jacobians, partial backward passes ----------------
def _both(make, scenario, modes=("fast", "exact"), **watch):
    """Run ``scenario(model, scope)`` under each mode on identical copies; return the scopes."""
    scopes = {}
    for mode in modes:
        torch.manual_seed(0)
        model = make()
        with gradscope.watch(model, mode=mode, **watch) as scope:
            torch.manual_seed(1)
            scenario(model, scope)
        scopes[mode] = scope
    return tuple(scopes[mode] for mode in modes)


def _decoder(model, scope):
    """One token per call, the returned state passed on: one sequence across calls; the final
    state is also used by the loss, so its gradient has a direct and a carried part."""
    x = torch.randn(7, 3, 4)
    hidden, loss = None, 0
    for t in range(7):
        out, hidden = model(x[t:t + 1], hidden) if hidden is not None else model(x[t:t + 1])
        loss = loss + torch.sin(out).sum()
        h_n = hidden[0] if isinstance(hidden, tuple) else hidden
        loss = loss + 0.3 * (h_n ** 2).sum()
    loss.backward()


CHAINED = {
    "RNN": lambda: torch.nn.RNN(4, 5, num_layers=2),
    "GRU": lambda: torch.nn.GRU(4, 5, bidirectional=True),
    "LSTM": lambda: torch.nn.LSTM(4, 5, num_layers=2),
    "LSTM-proj": lambda: torch.nn.LSTM(4, 5, proj_size=3),
}


@pytest.mark.parametrize("name", list(CHAINED))
def test_chained_calls_equal_exact(name):
    fast, exact = _both(CHAINED[name], _decoder)
    assert set(fast.timesteps()["call"]) == {0} and fast.timesteps()["t"].max() == 6
    assert_same_tables(fast, exact, torch.float32)


def _segments(model, scope):
    """Two sequences in one step: a detached state starts a new call; a third call continues."""
    x = torch.randn(9, 2, 4, dtype=torch.float64)
    out1, h = model(x[:3])
    out2, h2 = model(x[3:6], (h[0].detach(), h[1].detach()))
    out3, _ = model(x[6:], h2)
    (out1.sum() + torch.tanh(out2).sum() + (out3 ** 2).sum()).backward()


def test_detached_state_and_continued_calls_equal_exact():
    fast, exact = _both(lambda: torch.nn.LSTM(4, 3, num_layers=2).double(), _segments)
    assert sorted(set(fast.timesteps()["call"])) == [0, 1]
    assert_same_tables(fast, exact, torch.float64)


@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
def test_jacobians_and_spectra_equal_exact(kind):
    make = {"RNN": lambda: torch.nn.RNN(3, 4, bidirectional=True).double(),
            "GRU": lambda: torch.nn.GRU(3, 4, num_layers=2).double(),
            "LSTM": lambda: torch.nn.LSTM(3, 4, proj_size=2).double()}[kind]

    def scenario(model, scope):
        model(torch.randn(6, 2, 3, dtype=torch.float64))[0].pow(2).sum().backward()

    fast, exact = _both(make, scenario, jacobians=True)
    assert_same_tables(fast, exact, torch.float64)
    for table in ("jacobians", "lyapunov", "spectra"):
        a, b = getattr(fast, table)(), getattr(exact, table)()
        assert len(a) == len(b) > 0
        pd.testing.assert_frame_equal(a, b, rtol=1e-10, check_exact=False)


@pytest.mark.parametrize("how", ["autograd.grad", "backward(inputs=)"])
def test_partial_backward_is_measured_on_the_fast_route(how):
    """The recursion needs no probe: a pass that computes only the parameters' gradients still
    measures every layer it goes through, with the numbers of a full backward pass."""
    def make():
        return torch.nn.GRU(2, 3, num_layers=2)

    def full(model, scope):
        model(torch.randn(6, 2, 2))[0].pow(2).sum().backward()

    def partial(model, scope):
        loss = model(torch.randn(6, 2, 2))[0].pow(2).sum()
        params = list(model.parameters())
        if how == "autograd.grad":
            torch.autograd.grad(loss, params)
        else:
            loss.backward(inputs=params)

    fast_partial, = _both(make, partial, modes=("fast",))
    fast_full, exact_full = _both(make, full)
    assert fast_partial.steps_seen == 1
    assert_same_tables(fast_partial, exact_full, torch.float32)


def test_nonfinite_gradient_is_counted_as_on_exact():
    def scenario(model, scope):
        out, _ = model(torch.randn(6, 2, 3))
        weights = torch.ones_like(out)
        weights[3, 1] = float("nan")
        (out * weights).sum().backward()

    fast, exact = _both(lambda: torch.nn.LSTM(3, 4), scenario)
    a = fast.timesteps().sort_values(KEYS).reset_index(drop=True)
    b = exact.timesteps().sort_values(KEYS).reset_index(drop=True)
    assert (a["nonfinite"] == b["nonfinite"]).all() and a["nonfinite"].sum() > 0


def test_unrecorded_steps_run_module_code_untouched():
    model = torch.nn.LSTM(3, 4)
    x = torch.randn(5, 2, 3)
    plain = model(x)[0].grad_fn.name()
    calls = []
    with gradscope.watch(model, every=2) as scope:
        for step in range(2):
            out, _ = model(x)
            calls.append(out.grad_fn.name())
            out.sum().backward()
    assert calls[0] != plain and calls[1] == plain and scope.steps() == [0]
    assert "forward" not in model.__dict__
