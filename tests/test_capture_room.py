"""capture/ as one room: its front door works without a Scope, routes come from one table,
measuring takes its inputs as arguments, and the gate statistics (shared by both routes) are
right against a float64 reference."""

import types

import numpy as np
import pandas as pd
import pytest
import torch

import gradscope
from gradscope.capture import (Capture, LinkTable, StepClock, find_parts, route_for, spectra_job,
                               timestep_and_gate_tables)
from gradscope.capture.gate_stats import SATURATION_MARGIN, gate_statistics
from gradscope.capture.routes import KINDS, route_name
from gradscope.capture.steps import Step
from gradscope.cells import GATE_ACTIVATION, GATES


def _standalone(module, x, mode):
    """One recorded step through the route table with a Capture of plain functions: no Scope."""
    closed, warned = [], []
    clock = StepClock(lambda number: True, closed.append)

    def hook(step, tensor, fn):
        def on_grad(grad):
            fn(grad)
            clock.reached(step)

        tensor.register_hook(on_grad)

    step = clock.open()
    ctx = Capture(step, links=LinkTable(), jacobians=False, custom_layouts={}, warn=lambda key, m: warned.append(m),
                  hook=hook, active=lambda: True, reached=clock.reached)
    (part,) = find_parts(module)
    out, _ = route_for(part.kind, mode)(ctx, part, module.forward, (x,), {})
    out.pow(2).sum().backward()
    assert closed == [step] and not warned
    return timestep_and_gate_tables(step)


@pytest.mark.parametrize("mode", ["exact", "fast"])
@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
def test_a_route_runs_with_a_capture_context_and_no_scope(kind, mode):
    torch.manual_seed(0)
    module = getattr(torch.nn, kind)(3, 5, num_layers=2, bidirectional=True).double()
    x = torch.randn(7, 4, 3, dtype=torch.float64)
    timesteps, gates = _standalone(module, x, mode)
    with gradscope.watch(module, mode=mode) as scope:
        module(x)[0].pow(2).sum().backward()
    pd.testing.assert_frame_equal(timesteps.reset_index(drop=True), scope.timesteps())
    pd.testing.assert_frame_equal(gates.reset_index(drop=True), scope.gates())
    assert len(timesteps) == 2 * 2 * 7 * (2 if kind == "LSTM" else 1)


def test_every_part_kind_has_an_exact_route_and_a_description():
    model = torch.nn.ModuleDict({"rnn": torch.nn.GRU(2, 3), "cell": torch.nn.LSTMCell(2, 3),
                                 "mine": torch.nn.Linear(3, 3)})
    parts = find_parts(model, cells=["mine"]) + [types.SimpleNamespace(name="loop", module=None, kind="track")]
    for part in parts:
        entry = KINDS[part.kind]
        assert "exact" in entry.routes
        assert entry.describe(part)["kind"] == part.kind
    assert route_name("module", "fast") == "fast" and route_name("cell", "fast") == "exact"


def test_a_route_added_to_the_table_is_taken(monkeypatch):
    """Adding a route is adding an entry: a "fast" route for stock cells, taken under mode="fast"."""
    seen = []

    def spy(ctx, part, original, args, kwargs):
        seen.append((part.name, len(args)))
        return KINDS["cell"].routes["exact"](ctx, part, original, args, kwargs)

    monkeypatch.setitem(KINDS["cell"].routes, "fast", spy)
    cell = torch.nn.GRUCell(2, 3)
    x = torch.randn(4, 5, 2)
    with gradscope.watch(cell, mode="fast") as scope:
        h = None
        for t in range(4):
            h = cell(x[t], h)
        h.pow(2).sum().backward()
    assert seen == [("", 2)] * 4  # (input, hx)
    assert scope.meta["routes"] == {"": "fast"}
    assert sorted(scope.timesteps()["t"]) == [0, 1, 2, 3]


def test_spectra_job_takes_the_weights_and_returns_its_result():
    step = Step(3, recorded=True)
    assert step.closed_calls is None and step.close_calls() == [] and step.closed_calls == []
    matrix = torch.diag(torch.tensor([0.5, 0.25], dtype=torch.float64))
    table, values, latest = spectra_job(step, {"W": matrix}, parallel=False)()
    assert list(table["module"]) == ["W"] and list(table["step"]) == [3]
    assert sorted(values[0]["singular_values"]) == [0.25, 0.5]
    number, kind, kept = latest[("W", 0, "forward")]
    assert number == 3 and kind is None and torch.equal(kept, matrix)


def _reference_statistics(kind, gates):
    """[count, sum, near low, near high] per gate from float64 numpy, one gate at a time."""
    out = []
    for index, gate in enumerate(GATES[kind]):
        values = gates[:, index, :].double().numpy()
        activation = GATE_ACTIVATION[kind][gate]
        low = {"sigmoid": values < SATURATION_MARGIN, "tanh": values < -1 + SATURATION_MARGIN,
               "relu": values == 0}[activation]
        high = np.nan if activation == "relu" else float((values > 1 - SATURATION_MARGIN).sum())
        out.append((gate, activation, [values.size, values.sum(), float(low.sum()), high]))
    return out


@pytest.mark.parametrize("kind", list(GATES))
def test_gate_statistics_match_a_float64_reference(kind):
    torch.manual_seed(0)
    rows, size = 37, 5
    pre = torch.randn(rows, len(GATES[kind]), size, dtype=torch.float64) * 4
    gates = torch.stack([{"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}[
        GATE_ACTIVATION[kind][gate]](pre[:, i]) for i, gate in enumerate(GATES[kind])], dim=1)
    record = types.SimpleNamespace(gate_stats=[])
    gate_statistics(record, kind, 1, "reverse", gates)
    for (layer, direction, gate, activation, stats), (want_gate, want_activation, want) in zip(
            record.gate_stats, _reference_statistics(kind, gates), strict=True):
        assert (layer, direction, gate, activation) == (1, "reverse", want_gate, want_activation)
        np.testing.assert_allclose(stats.numpy(), want, rtol=1e-12)


def test_gate_counts_are_exact_in_bfloat16():
    """1001 saturated rows: a count summed in bfloat16 would round to 1000 per unit."""
    gates = torch.full((1001, 4, 3), 0.999, dtype=torch.bfloat16)
    record = types.SimpleNamespace(gate_stats=[])
    gate_statistics(record, "LSTM", 0, "forward", gates)
    for _, _, gate, _, stats in record.gate_stats:
        assert stats[0].item() == 3003 and stats[3].item() == 3003, gate  # count, near the upper bound


def test_spectra_that_fail_at_step_close_leave_backward_and_gradients_intact():
    """watch(spectra="inline"): a weights= entry whose spectra cannot be computed gives a warning;
    the user's backward returns and the step's gradients are recorded."""
    module = torch.nn.GRU(2, 3)
    with gradscope.watch(module, weights={"W": lambda: torch.zeros(2, 3, 4)}, spectra="inline") as scope:
        with pytest.warns(gradscope.GradscopeWarning, match="spectra/Jacobians could not be measured"):
            module(torch.randn(4, 1, 2))[0].sum().backward()
    assert len(scope.timesteps()) == 4 and scope.spectra().empty
