"""Cells stepped in user loops, modules called once per token, custom cells and ``track``.

Oracle: the same recurrence run by one nn.RNN/GRU/LSTM call over the whole sequence, whose
numbers are checked against the brute-force reference in test_capture_modules.py. A loop that
computes the same thing step by step must report the same per-timestep numbers.
"""

import numpy as np
import pytest
import torch
import torch.nn as nn

import gradscope

T, B, I, H = 7, 3, 4, 5
KIND_CLASSES = {"RNN_TANH": (nn.RNN, nn.RNNCell), "GRU": (nn.GRU, nn.GRUCell), "LSTM": (nn.LSTM, nn.LSTMCell)}


def make_pair(kind, seed=0):
    torch.manual_seed(seed)
    module_cls, cell_cls = KIND_CLASSES[kind]
    module = module_cls(I, H)
    cell = cell_cls(I, H)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(getattr(module, name + "_l0"))
    return module, cell


def data(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, B, I, generator=g), torch.randn(T, B, H, generator=g), torch.randn(B, H, generator=g)


def whole_sequence(kind, module, x, g, g_last):
    with gradscope.watch(module) as scope:
        out, hn = module(x)
        c_n = hn[1][0] if kind == "LSTM" else None
        loss = (torch.sin(out) * g).sum()
        if c_n is not None:
            loss = loss + (c_n * g_last).sum()
        loss.backward()
    return scope.timesteps()


def numbers(table):
    keep = table.sort_values(["state", "t"])
    return keep[["state", "t", "batch", "grad_norm", "carried_norm", "direct_norm"]].reset_index(drop=True)


def assert_same_numbers(got, want):
    got, want = numbers(got), numbers(want)
    assert list(got["state"]) == list(want["state"]) and list(got["t"]) == list(want["t"])
    for column in ("grad_norm", "carried_norm", "direct_norm"):
        np.testing.assert_allclose(got[column], want[column], rtol=1e-5, atol=1e-7, err_msg=column)


@pytest.mark.parametrize("kind", list(KIND_CLASSES))
def test_cell_loop_equals_whole_sequence(kind):
    module, cell = make_pair(kind)
    x, g, g_last = data()
    want = whole_sequence(kind, module, x, g, g_last)
    with gradscope.watch(cell) as scope:
        state = None
        loss = 0
        for t in range(T):
            state = cell(x[t], state) if state is not None else cell(x[t])
            h = state[0] if kind == "LSTM" else state
            loss = loss + (torch.sin(h) * g[t]).sum()
        if kind == "LSTM":
            loss = loss + (state[1] * g_last).sum()
        loss.backward()
    got = scope.timesteps()
    assert (got["call"] == 0).all() and sorted(set(got["t"])) == list(range(T))
    assert_same_numbers(got, want)


@pytest.mark.parametrize("kind", list(KIND_CLASSES))
def test_module_called_per_token_is_one_sequence(kind):
    module, _ = make_pair(kind)
    x, g, g_last = data()
    want = whole_sequence(kind, module, x, g, g_last)
    with gradscope.watch(module) as scope:
        hidden = None
        loss = 0
        for t in range(T):
            out, hidden = module(x[t:t + 1], hidden) if hidden is not None else module(x[t:t + 1])
            loss = loss + (torch.sin(out[0]) * g[t]).sum()
        if kind == "LSTM":
            loss = loss + (hidden[1][0] * g_last).sum()
        loss.backward()
    got = scope.timesteps()
    assert (got["call"] == 0).all(), "a decoder stepping one token at a time is one sequence"
    assert_same_numbers(got, want)


def test_detached_state_starts_a_new_call():
    module, _ = make_pair("GRU")
    x, _, _ = data()
    with gradscope.watch(module) as scope:
        out1, h = module(x[:3])
        out2, _ = module(x[3:], h.detach())
        (out1.sum() + out2.sum()).backward()
    table = scope.timesteps()
    assert sorted(set(table["call"])) == [0, 1]
    assert list(table[table["call"] == 1]["t"]) == list(range(T - 3))


class HandWrittenCell(nn.Module):
    """A user's own tanh cell: the previous state among its inputs, the new state out."""

    def __init__(self, rnn):
        super().__init__()
        self.w_ih = nn.Parameter(rnn.weight_ih_l0.detach().clone())
        self.w_hh = nn.Parameter(rnn.weight_hh_l0.detach().clone())
        self.b = nn.Parameter((rnn.bias_ih_l0 + rnn.bias_hh_l0).detach().clone())

    def forward(self, x, h):
        return torch.tanh(x @ self.w_ih.T + h @ self.w_hh.T + self.b)


class LoopModel(nn.Module):
    def __init__(self, cell):
        super().__init__()
        self.cell = cell

    def forward(self, x):
        h = torch.zeros(x.shape[1], H)
        outs = []
        for t in range(x.shape[0]):
            h = self.cell(x[t], h)
            outs.append(h)
        return torch.stack(outs)


@pytest.mark.parametrize("by_name", [False, True])
def test_custom_cell_equals_whole_sequence(by_name):
    module, _ = make_pair("RNN_TANH")
    x, g, _ = data()
    want = whole_sequence("RNN_TANH", module, x, g, None)
    model = LoopModel(HandWrittenCell(module))
    with gradscope.watch(model, cells=["cell"] if by_name else [model.cell]) as scope:
        (torch.sin(model(x)) * g).sum().backward()
    got = scope.timesteps()
    assert set(got["module"]) == {"cell"} and set(got["cell"]) == {"HandWrittenCell"}
    assert_same_numbers(got, want)


def test_track_gives_all_parts_of_a_textbook_loop():
    module, _ = make_pair("RNN_TANH")
    x, g, _ = data()
    want = whole_sequence("RNN_TANH", module, x, g, None)
    W_xh = nn.Parameter(module.weight_ih_l0.detach().T.clone())
    W_hh = nn.Parameter(module.weight_hh_l0.detach().T.clone())
    b_h = nn.Parameter((module.bias_ih_l0 + module.bias_hh_l0).detach().clone())
    holder = nn.Module()
    holder.W_hh = W_hh
    with gradscope.watch(holder, weights={"W_hh": W_hh}) as scope:
        Hs = torch.zeros(B, H)
        loss = 0
        for t in range(T):
            Hs = torch.tanh(x[t] @ W_xh + Hs @ W_hh + b_h)
            Hs = scope.track(Hs, "textbook")
            loss = loss + (torch.sin(Hs) * g[t]).sum()
        loss.backward()
    got = scope.timesteps()
    assert set(got["module"]) == {"textbook"}
    assert_same_numbers(got, want)


def test_track_marks_h_and_c():
    lstm, cell = make_pair("LSTM")
    x, _, _ = data()
    with gradscope.watch(cell) as scope:
        h = c = torch.zeros(B, H)
        for t in range(3):
            h, c = scope.track(cell(x[t], (h, c)), "manual")
        (h.sum() + c.sum()).backward()
    manual = scope.timesteps().query("module == 'manual'")
    assert sorted(set(manual["state"])) == ["c", "h"] and sorted(set(manual["t"])) == [0, 1, 2]


def test_stacked_cells_are_two_parts():
    torch.manual_seed(0)

    class Stacked(nn.Module):
        def __init__(self):
            super().__init__()
            self.lower, self.upper = nn.LSTMCell(I, H), nn.LSTMCell(H, H)

        def forward(self, x):
            s1 = s2 = None
            outs = []
            for t in range(x.shape[0]):
                s1 = self.lower(x[t], s1) if s1 is not None else self.lower(x[t])
                s2 = self.upper(s1[0], s2) if s2 is not None else self.upper(s1[0])
                outs.append(s2[0])
            return torch.stack(outs)

    model = Stacked()
    x, _, _ = data()
    with gradscope.watch(model) as scope:
        model(x).pow(2).sum().backward()
    table = scope.timesteps()
    assert set(table["module"]) == {"lower", "upper"}
    for name in ("lower", "upper"):
        part = table[table["module"] == name]
        assert len(part) == 2 * T and (part["call"] == 0).all()
        # the lower cell's direct part comes from the upper cell at the same step
        assert (part[part["state"] == "h"]["direct_norm"] > 0).all()


@pytest.mark.parametrize("cls", [nn.RNNCell, nn.GRUCell, nn.LSTMCell])
def test_cells_give_bitwise_the_same_outputs(cls):
    """The exact route runs ATen's cell ops in ATen's order: outputs are bitwise equal, and so
    are parameter gradients where the backward ops are the same too (RNN and LSTM cells)."""
    torch.manual_seed(0)
    cell = cls(I, H)
    x = torch.randn(T, B, I)

    def run():
        cell.zero_grad()
        state, outs = None, []
        for t in range(T):
            state = cell(x[t], state) if state is not None else cell(x[t])
            outs.append(state[0] if isinstance(state, tuple) else state)
        y = torch.stack(outs)
        y.pow(2).sum().backward()
        return y.detach(), [p.grad.clone() for p in cell.parameters()]

    plain_out, plain_grads = run()
    with gradscope.watch(cell):
        out, grads = run()
    assert torch.equal(out, plain_out)
    exact = cls is not nn.GRUCell
    for got, want in zip(grads, plain_grads):
        torch.testing.assert_close(got, want, rtol=0 if exact else 1e-5, atol=0 if exact else 1e-7)
