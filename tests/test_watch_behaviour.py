"""The Scope's promises: the model is exactly as before on exit (by exception too), steps and
``every``, no_grad passes through, clear errors, NaN counted without raising, no graph kept."""

import copy
import gc
import warnings
import weakref

import numpy as np
import pytest
import torch
import torch.nn as nn

import gradscope
from gradscope.errors import GradscopeWarning, NoRecurrentModuleError
from gradscope.scope import AlreadyWatchedError


class Seq2One(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(3, 6, num_layers=2, batch_first=True)
        self.head = nn.Linear(6, 1)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            {name: (dict(m.__dict__.get("_forward_hooks", {})), dict(m._forward_pre_hooks), dict(m._backward_hooks),
                    "forward" in m.__dict__) for name, m in model.named_modules()})


def assert_restored(model, before, x, expected_out):
    state, hooks = snapshot(model)
    for key, value in before[0].items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0)
    assert hooks == before[1]
    assert all("forward" not in m.__dict__ for m in model.modules())
    torch.testing.assert_close(model(x), expected_out, rtol=0, atol=0)


def test_exception_in_forward_restores_model():
    torch.manual_seed(0)
    model = Seq2One()
    x = torch.randn(4, 5, 3)
    before, expected = snapshot(model), model(x)
    with pytest.raises(RuntimeError, match="boom"):
        with gradscope.watch(model):
            model(x)
            raise RuntimeError("boom")
    assert_restored(model, before, x, expected)


def test_exception_in_backward_restores_model():
    torch.manual_seed(0)
    model = Seq2One()
    x = torch.randn(4, 5, 3)
    before, expected = snapshot(model), model(x)

    def bad_hook(grad):
        raise ValueError("bad backward")

    with pytest.raises(ValueError, match="bad backward"):
        with gradscope.watch(model):
            y = model(x)
            y.register_hook(bad_hook)
            y.sum().backward()
    assert_restored(model, before, x, expected)


def test_bad_input_raises_pytorchs_own_error_and_restores():
    model = nn.GRU(3, 4)
    x = torch.randn(5, 2, 7)  # wrong feature size
    with pytest.raises(RuntimeError) as watched_error:
        with gradscope.watch(model):
            model(x)
    with pytest.raises(RuntimeError) as plain_error:
        model(x)
    assert str(watched_error.value) == str(plain_error.value)
    assert "forward" not in model.__dict__


def test_steps_every_and_no_grad():
    torch.manual_seed(0)
    model = Seq2One()
    x = torch.randn(2, 4, 3)
    with gradscope.watch(model, every=3) as scope:
        for _ in range(7):
            model(x).sum().backward()
            with torch.no_grad():
                model(x)  # evaluation: not a step
            with torch.inference_mode():
                model(x)
    assert scope.steps_seen == 7
    assert scope.steps() == [0, 3, 6]


def test_unrecorded_steps_run_module_code_untouched():
    model = nn.LSTM(3, 4)
    x = torch.randn(5, 2, 3)
    calls = []
    original = type(model).forward

    with gradscope.watch(model, every=2, mode="exact"):  # fast: test_capture_fast
        for step in range(2):
            # step 1 is not recorded: the module's own forward runs
            out, _ = model(x)
            calls.append(out.grad_fn.name())
            out.sum().backward()
    assert "Cat" in calls[0] or "View" in calls[0]  # unrolled on the recorded step
    assert type(model).forward is original


def test_watching_twice_is_an_error():
    model = nn.RNN(3, 4)
    with gradscope.watch(model):
        with pytest.raises(AlreadyWatchedError, match="already watched"):
            gradscope.watch(model).start()
    with gradscope.watch(model):  # fine again once the first scope stopped
        pass


def test_nothing_recurrent_is_a_clear_error():
    with pytest.raises(NoRecurrentModuleError, match="cells=") as info:
        gradscope.watch(nn.Linear(3, 4))
    assert isinstance(info.value, ValueError) and "track" in str(info.value)


@pytest.mark.parametrize("kwargs,match", [
    ({"every": 0}, "every"), ({"mode": "fastest"}, "mode"), ({"weights": [1]}, "weights"),
    ({"cells": ["nope"]}, "no submodule named"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        gradscope.watch(nn.RNN(3, 4), **kwargs)


def test_fast_is_the_default_mode_and_cells_say_they_use_exact(caplog):
    assert gradscope.watch(nn.RNN(3, 4)).meta["routes"] == {"": "fast"}
    model = nn.Module()
    model.rnn, model.cell = nn.GRU(3, 4), nn.LSTMCell(3, 4)
    with caplog.at_level("INFO", logger="gradscope"):
        scope = gradscope.watch(model)
    assert scope.meta["mode"] == "fast" and scope.meta["routes"] == {"rnn": "fast", "cell": "exact"}
    assert [r.getMessage() for r in caplog.records if "exact route" in r.getMessage()] != []
    assert gradscope.watch(model, mode="exact").meta["routes"] == {"rnn": "exact", "cell": "exact"}


def test_subclass_with_own_forward_is_left_alone_with_a_warning():
    class MyLSTM(nn.LSTM):
        def forward(self, x, hx=None):
            return super().forward(x * 2, hx)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.odd = MyLSTM(3, 4)
            self.gru = nn.GRU(3, 4)

    model = Model()
    with pytest.warns(GradscopeWarning, match="odd"):
        scope = gradscope.watch(model)
    with scope:
        out, _ = model.odd(torch.randn(5, 2, 3))
        out2, _ = model.gru(torch.randn(5, 2, 3))
        (out.sum() + out2.sum()).backward()
    assert set(scope.timesteps()["module"]) == {"gru"}


def test_nan_is_counted_not_raised():
    model = nn.GRU(3, 4)
    x = torch.randn(6, 2, 3)
    with gradscope.watch(model) as scope:
        out, _ = model(x)
        weights = torch.ones_like(out)
        weights[3, 1] = float("nan")
        (out * weights).sum().backward()
    table = scope.timesteps().set_index("t")
    assert table.loc[3, "nonfinite"] == 1 and table.loc[5, "nonfinite"] == 0
    assert (table.loc[[0, 1, 2], "nonfinite"] == 1).all()  # carried back to earlier steps


def test_no_graph_tensors_kept_after_backward():
    model = nn.LSTM(3, 4, num_layers=2)
    with gradscope.watch(model) as scope:
        out, (h, c) = model(torch.randn(5, 2, 3))
        ref = weakref.ref(out)
        out.sum().backward()
        del out, h, c
        gc.collect()
        assert ref() is None
    assert len(scope.timesteps()) == 2 * 2 * 5


def test_forward_without_backward_keeps_no_graph_alive():
    model = nn.GRU(3, 4)
    with gradscope.watch(model):
        x = torch.randn(5, 2, 3, requires_grad=True)  # saved by the graph for backward
        out, h = model(x)
        ref = weakref.ref(x)
        del out, h, x
        gc.collect()
        assert ref() is None


def test_name_and_repr():
    scope = gradscope.watch(nn.GRU(3, 4), name="encoder")
    assert scope.name == "encoder" and "encoder" in repr(scope)
    assert gradscope.watch(nn.GRU(3, 4)).name == "GRU"


def test_float64_and_deepcopy_after_watch():
    model = nn.RNN(3, 4).double()
    with gradscope.watch(model) as scope:
        out, _ = model(torch.randn(4, 2, 3, dtype=torch.float64))
        out.sum().backward()
    copy.deepcopy(model)  # nothing of the scope left on the module
    assert np.isfinite(scope.timesteps()["grad_norm"]).all()


def test_restarted_scope_continues_its_run_folder(tmp_path):
    model = nn.GRU(3, 4)
    x = torch.randn(5, 2, 3)
    scope = gradscope.watch(model, run_dir=tmp_path / "run")
    for _ in range(2):
        scope.start()
        model(x)[0].sum().backward()
        scope.stop()
    assert sorted(set(gradscope.load(tmp_path / "run").timesteps()["step"])) == [0, 1]
    assert sorted(set(scope.timesteps()["step"])) == [0, 1]


def test_track_label_reaches_run_meta(tmp_path):
    w = nn.Parameter(torch.eye(3) * 0.5)
    holder = nn.Module()
    holder.w = w
    with gradscope.watch(holder, weights={"W": w}, run_dir=tmp_path / "run") as scope:
        h = torch.ones(2, 3)
        for _ in range(4):
            h = scope.track(torch.tanh(h @ w), "loop")
        h.sum().backward()
    run = gradscope.load(tmp_path / "run")
    assert run.meta["modules"]["loop"]["kind"] == "track"
    assert len(run.timesteps()) == 4 and set(run.spectra()["gate"]) == {"W"}


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
@pytest.mark.parametrize("how", ["autograd.grad", "backward(inputs=)"])
def test_partial_backward_through_a_module_measures_the_step(how, kind):
    """A backward pass that computes only some gradients still runs every step node of the exact
    route, which computes the carried parts itself: the same numbers as a full backward."""
    torch.manual_seed(0)
    model = getattr(nn, kind)(2, 3)
    x = torch.randn(6, 2, 2)
    params = list(model.parameters())
    with gradscope.watch(model, mode="exact") as full:
        model(x)[0].pow(2).sum().backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with gradscope.watch(model, mode="exact") as scope:
            loss = model(x)[0].pow(2).sum()
            if how == "autograd.grad":
                torch.autograd.grad(loss, params)
            else:
                loss.backward(inputs=params)
    columns = ["state", "t", "grad_norm", "carried_norm", "direct_norm"]
    got, want = scope.timesteps()[columns], full.timesteps()[columns]
    assert len(got) == 6 * (2 if kind == "LSTM" else 1)
    np.testing.assert_allclose(got.drop(columns="state").to_numpy(), want.drop(columns="state").to_numpy(),
                               rtol=1e-6)


@pytest.mark.parametrize("case", ["projection", "upper layer"])
def test_partial_backward_that_misses_steps_records_nothing_wrong(case):
    """A pass restricted to some inputs can skip steps: LSTM proj_size with inputs=[weight_hr]
    never needs the first step; inputs=[an upper layer's weight] never reaches the lower layer,
    whose final state still gets a gradient. No incomplete numbers: nothing, and a warning."""
    torch.manual_seed(0)
    if case == "projection":
        model = nn.LSTM(2, 4, proj_size=3)
        wanted = [model.weight_hr_l0]
    else:
        model = nn.GRU(2, 3, num_layers=2)
        wanted = [model.weight_ih_l1]
    x = torch.randn(5, 2, 2)
    with pytest.warns(GradscopeWarning, match="computes only some gradients"):
        with gradscope.watch(model, mode="exact") as scope:
            out, h_n = model(x)
            h_n = h_n[0] if case == "projection" else h_n
            (out.pow(2).sum() + h_n.pow(2).sum()).backward(inputs=wanted)
    assert scope.steps_seen == 1 and len(scope.timesteps()) == 0


def assert_watched_equals_plain(model, run, **tolerance):
    """``run()``'s tensors unwatched, then on the exact route (its warnings ignored), equal."""
    want = run()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GradscopeWarning)
        with gradscope.watch(model, mode="exact"):
            got = run()
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **tolerance)


@pytest.mark.parametrize("steps", [1, 3])
def test_partial_backward_that_misses_a_layer_of_any_length_records_nothing_wrong(steps):
    """A one-step call has no carried part, and its nodes still must have reported."""
    torch.manual_seed(0)
    model = nn.GRU(2, 3, num_layers=2)
    x = torch.randn(steps, 2, 2)
    with pytest.warns(GradscopeWarning, match="computes only some gradients"):
        with gradscope.watch(model, mode="exact") as scope:
            out, h_n = model(x)
            (out.pow(2).sum() + h_n.pow(2).sum()).backward(inputs=[model.weight_ih_l1])
    assert len(scope.timesteps()) == 0


def test_a_module_with_one_incomplete_call_is_left_out_whole():
    torch.manual_seed(0)
    model = nn.GRU(2, 3, num_layers=2)
    with pytest.warns(GradscopeWarning, match="computes only some gradients"):
        with gradscope.watch(model, mode="exact") as scope:
            first, _ = model(torch.randn(4, 2, 2))
            second, _ = model(torch.randn(1, 2, 2))
            (first.pow(2).sum() + second.pow(2).sum()).backward(inputs=[model.weight_ih_l1])
    assert len(scope.timesteps()) == 0  # not the second call alone, renumbered as call 0


@pytest.mark.parametrize("cell", ["GRUCell", "LSTMCell"])
def test_a_second_pass_runs_a_users_hook_once(cell):
    """retain_graph: the second pass through a recorded cell applies a hook on the state the
    user passed in once, as unwatched."""
    torch.manual_seed(0)
    model = getattr(nn, cell)(3, 4)
    x = torch.randn(2, 3)

    def run():
        hx = torch.ones(2, 4).requires_grad_()
        hx.register_hook(lambda g: g * 2)
        state = (hx, torch.zeros(2, 4)) if cell == "LSTMCell" else hx
        out = model(x, state)
        loss = (out[0] if cell == "LSTMCell" else out).pow(2).sum()
        loss.backward(retain_graph=True)
        first, hx.grad = hx.grad.clone(), None
        loss.backward()
        return first, hx.grad

    assert_watched_equals_plain(model, run)


def test_a_restricted_pass_leaves_no_state_for_the_next_pass():
    """A pass that missed the first step is dropped; the next pass through the same graph
    (here a double backward) computes what the unwatched model computes."""
    torch.manual_seed(0)
    model = nn.LSTM(2, 4, proj_size=3)
    x = torch.randn(5, 2, 2)

    def run():
        loss = model(x)[0].pow(2).sum()
        loss.backward(inputs=[model.weight_hr_l0], retain_graph=True)
        return [g.detach() for g in torch.autograd.grad(loss, list(model.parameters()), create_graph=True)]

    assert_watched_equals_plain(model, run, rtol=1e-5, atol=1e-7)


def test_partial_backward_on_cells_records_nothing_wrong():
    cell = nn.GRUCell(2, 3)
    with pytest.warns(GradscopeWarning, match="autograd.grad"):
        with gradscope.watch(cell) as scope:
            h = None
            for _ in range(4):
                h = cell(torch.randn(2, 2), h) if h is not None else cell(torch.randn(2, 2))
            torch.autograd.grad(h.sum(), list(cell.parameters()))
    assert len(scope.timesteps()) == 0


def test_forwards_without_backward_leave_no_trace_in_the_step():
    model = nn.LSTM(3, 4)
    x = torch.randn(5, 2, 3)
    with gradscope.watch(model) as scope:
        for _ in range(20):  # evaluation forgot no_grad
            model(x)
        out, _ = model(x)
        out.sum().backward()
    table = scope.timesteps()
    assert set(table["call"]) == {0} and len(table) == 2 * 5


def test_empty_batch_passes_through_silently():
    model = nn.LSTM(2, 3)
    with gradscope.watch(model) as scope:
        out, _ = model(torch.randn(4, 0, 2, requires_grad=True))
    assert out.shape == (4, 0, 3) and len(scope.timesteps()) == 0


def test_a_failed_report_drops_its_layer_and_says_why(monkeypatch):
    """An error while the exact route's step nodes report their parts spoils that layer's
    numbers (none rather than wrong ones) with a warning that says a measurement failed, not
    that the backward pass was a partial one."""
    from gradscope.capture.accumulate import CallRecord
    real_add = CallRecord.add

    def failing_add(self, layer, direction, state, part, grad, rows=None, owned=False):
        if part == "carried" and layer == 0:
            raise RuntimeError("injected")
        return real_add(self, layer, direction, state, part, grad, rows, owned)

    monkeypatch.setattr(CallRecord, "add", failing_add)
    torch.manual_seed(0)
    model = nn.LSTM(2, 3, num_layers=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with gradscope.watch(model, mode="exact") as scope:
            model(torch.randn(4, 2, 2))[0].pow(2).sum().backward()
    messages = [str(w.message) for w in caught]
    assert any("a measurement failed" in m and "injected" in m for m in messages)
    assert not any("computes only some gradients" in m for m in messages)
    table = scope.timesteps()
    assert set(table["layer"]) == {1}  # layer 0 dropped, layer 1 kept
