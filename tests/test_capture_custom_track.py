"""Custom cells (``cells=``) whatever they return, and ``scope.track`` with its carried and
direct parts, against the float64 reference loop (tests/reference.py: retain_grad on every
state, one clone for its recurrent use and one for the rest).
"""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import gradscope
from gradscope.errors import GradscopeWarning
from reference import assert_rows_match, reference_loop, row_means
from test_capture_loops import assert_same_numbers, data, make_pair, whole_sequence

T, B, I, H = 30, 3, 4, 6
GAIN = 0.9999


def orthogonal(size, gain, seed):
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(size, size, generator=g, dtype=torch.float64))
    return gain * q * torch.sign(torch.diagonal(r))


def inputs(dtype, scale=1.0, seed=1, T=T):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(T, B, I, generator=g, dtype=torch.float64)).to(dtype)


def loss_fn(every_step, seed=2, T=T):
    """sin(state) weighted at every step, or only the last state's sum."""
    weights = torch.randn(T, B, H, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    def loss(states):
        if every_step:
            return sum((torch.sin(s) * weights[t].to(s.dtype)).sum() for t, s in enumerate(states))
        return (torch.sin(states[-1]) * weights[-1].to(states[-1].dtype)).sum()
    return loss


# ---- custom cells ---------------------------------------------------------------------------

def test_the_issue_example_cell_returning_out_out():
    """Issue 12, item 1, verbatim: before, each step became its own call at t=0, carried 0."""
    torch.manual_seed(0)

    class Cell(nn.Module):
        def __init__(self):
            super().__init__(); self.lin = nn.Linear(4, 4)

        def forward(self, x, h):
            out = torch.tanh(self.lin(h) + x)
            return out, out

    cell = Cell()
    xs = torch.randn(5, 2, 4)
    with gradscope.watch(cell, cells=[cell]) as sc:
        state, outs = torch.zeros(2, 4), []
        for x in xs:
            out, state = cell(x, state); outs.append(out)
        torch.stack(outs).pow(2).sum().backward()
    W, b = cell.lin.weight.detach().double(), cell.lin.bias.detach().double()
    want = reference_loop(lambda x, h: torch.tanh(h @ W.T + b + x), xs, torch.zeros(2, 4),
                          lambda states: torch.stack(states).pow(2).sum())
    got = sc.timesteps()
    assert list(got["call"]) == [0] * 5 and list(got["t"]) == list(range(5))
    assert (got["carried_norm"].iloc[:-1] > 0).all()
    assert_rows_match(got, row_means(want), rtol=1e-5)


class OrthogonalCell(nn.Module):
    """tanh(x W_ih^T + h W_hh^T + b) with W_hh = 0.9999 * Q; ``form`` says what it returns."""

    def __init__(self, form, dtype=torch.float64):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.form = form
        self.w_ih = nn.Parameter(torch.randn(H, I, generator=g, dtype=torch.float64).to(dtype))
        self.w_hh = nn.Parameter(orthogonal(H, GAIN, seed=4).to(dtype))
        self.b = nn.Parameter(1e-4 * torch.randn(H, generator=g, dtype=torch.float64).to(dtype))
        self.head = nn.Linear(H, H).to(dtype)

    def step(self, x, h):
        return torch.tanh(x @ self.w_ih.T + h @ self.w_hh.T + self.b)

    def forward(self, x, hidden=None, state=None):
        if self.form == "pair":  # (h, h): the caller feeds back the second
            h = self.step(x, hidden)
            return h, h
        if self.form == "head":  # (head(h), h): a different tensor of the state's shape first
            h = self.step(x, hidden)
            return self.head(h), h
        if self.form == "dict":  # {"out": h, "state": h}, the state passed back by keyword
            h = self.step(x, state)
            return {"out": h, "state": h}
        h = self.step(x, hidden[0])  # "tuple": (h,) in, (h, (h,)) out
        return h, (h,)


def run_custom(form, xs, every_step, scope_kwargs=None):
    cell = OrthogonalCell(form)
    model = nn.Module()
    model.cell = cell
    loss = loss_fn(every_step)
    with gradscope.watch(model, cells=[cell], **(scope_kwargs or {})) as scope:
        h, outs = torch.zeros(B, H, dtype=torch.float64), []
        hidden = (h,)
        for x in xs:
            if form == "dict":
                result = cell(x, state=h)
                out, h = result["out"], result["state"]
            elif form == "tuple":
                out, hidden = cell(x, hidden)
            else:
                out, h = cell(x, h)
            outs.append(out)
        loss(outs).backward()
    return cell, scope


@pytest.mark.parametrize("every_step", [True, False], ids=["loss-every-step", "loss-at-end"])
@pytest.mark.parametrize("form", ["pair", "head", "dict", "tuple"])
def test_custom_cell_state_is_recognised_whatever_it_returns(form, every_step):
    xs = inputs(torch.float64, scale=1e-4)
    cell, scope = run_custom(form, xs, every_step)
    head = (lambda h: cell.head(h)) if form == "head" else (lambda h: h)
    loss = loss_fn(every_step)
    want = reference_loop(cell.step, xs, torch.zeros(B, H), lambda states: loss([head(s) for s in states]))
    got = scope.timesteps()
    assert set(got["module"]) == {"cell"} and set(got["call"]) == {0} and list(got["t"]) == list(range(T))
    assert_rows_match(got, row_means(want), rtol=1e-9)
    # near-linear regime: the measured per-step gain is the orthogonal matrix's 0.9999
    assert gradscope.analyze(scope).summary().iloc[0]["gain"] == pytest.approx(GAIN, abs=2e-5)


def test_custom_cell_returning_h_and_c_measures_both_states():
    """An LSTM written by hand returning (h, c), called with the tuple it returned, reads as
    nn.LSTM with the same weights (itself checked against the reference elsewhere)."""
    lstm, cell = make_pair("LSTM")
    x, g, g_last = data()
    want = whole_sequence("LSTM", lstm, x, g, g_last)

    class HandLSTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.params = nn.ParameterList(cell.parameters())

        def forward(self, x, state):
            h, c = state
            gates = x @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh
            i, f, gg, o = gates.chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
            return torch.sigmoid(o) * torch.tanh(c), c

    hand = HandLSTM()
    with gradscope.watch(hand, cells=[hand]) as scope:
        state, outs = (torch.zeros(x.shape[1], cell.hidden_size),) * 2, []
        for x_t in x:
            state = hand(x_t, state)
            outs.append(state[0])
        ((torch.sin(torch.stack(outs)) * g).sum() + (state[1] * g_last).sum()).backward()
    got = scope.timesteps()
    assert sorted(set(got["state"])) == ["c", "h"] and set(got["call"]) == {0}
    assert_same_numbers(got, want)


def test_a_lone_call_returning_two_tensors_warns_until_the_layout_is_known():
    xs = inputs(torch.float64, scale=1e-3, T=4)
    cell = OrthogonalCell("head")
    with gradscope.watch(cell, cells=[cell]) as scope:
        h = torch.zeros(B, H, dtype=torch.float64)
        out, h = cell(xs[0], h)
        with pytest.warns(GradscopeWarning, match="cannot tell which of the 2 tensors the custom cell OrthogonalCell"):
            (out.sum() + h.sum()).backward()
        assert scope.timesteps().empty
        h = torch.zeros(B, H, dtype=torch.float64)  # a step of 4 calls shows which one comes back
        for x in xs:
            out, h = cell(x, h)
        (out.sum() + h.sum()).backward()
        out, h = cell(xs[0], torch.zeros(B, H, dtype=torch.float64))  # now a lone call is known
        (out.sum() + h.sum()).backward()
    table = scope.timesteps()
    assert list(table.groupby("step").size()) == [4, 1]


@pytest.mark.parametrize("case", ["two-later-calls", "two-earlier-calls"])
def test_ambiguous_feedback_warns_and_records_nothing(case):
    cell = OrthogonalCell("pair")
    xs = inputs(torch.float64, T=3)
    with gradscope.watch(cell, cells=[cell]) as scope:
        zero = torch.zeros(B, H, dtype=torch.float64)
        _, a = cell(xs[0], zero)
        with pytest.warns(GradscopeWarning, match="OrthogonalCell.*(two later calls|2 different earlier calls)"):
            if case == "two-later-calls":  # a beam: one state continued twice
                _, b = cell(xs[1], a)
                _, c = cell(xs[2], a)
                out = b + c
            else:  # one call fed the states of two others
                _, b = cell(xs[1], zero)
                _, out = cell(xs[2], a, state=b)
        out.sum().backward()
    assert scope.timesteps().empty
