"""Custom cells (``cells=``) whatever they return, and ``scope.track`` with its carried and
direct parts, against the float64 reference loop (tests/reference.py: retain_grad on every
state, one clone for its recurrent use and one for the rest).
"""

import types

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


def test_a_cell_returning_no_tensor_warns_and_runs_once():
    """Before, the route raised after the cell ran, and the fallback ran the cell a second time."""
    calls = []

    class Opaque(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(H, H)

        def forward(self, h):
            calls.append(1)
            return types.SimpleNamespace(h=torch.tanh(self.lin(h)))

    cell = Opaque()
    with gradscope.watch(cell, cells=[cell]) as scope:
        with pytest.warns(GradscopeWarning, match="custom cell Opaque returned SimpleNamespace"):
            out = cell(torch.zeros(B, H))
        out.h.sum().backward()
    assert len(calls) == 1 and scope.timesteps().empty


# ---- track ----------------------------------------------------------------------------------

class TextbookRNN(nn.Module):
    """H_t = tanh(X_t W_xh + H_{t-1} W_hh + b_h) over raw Parameters, as in d2l."""

    def __init__(self, dtype, w_hh_scale=None, seed=6):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        w_hh = orthogonal(H, 0.95, seed) if w_hh_scale is None else w_hh_scale * torch.randn(
            H, H, generator=g, dtype=torch.float64)
        self.W_xh = nn.Parameter(torch.randn(I, H, generator=g, dtype=torch.float64).to(dtype))
        self.W_hh = nn.Parameter(w_hh.to(dtype))
        self.b_h = nn.Parameter(0.1 * torch.randn(H, generator=g, dtype=torch.float64).to(dtype))

    def step(self, x, h):
        dtype = x.dtype
        return torch.tanh(x @ self.W_xh.to(dtype) + h @ self.W_hh.to(dtype) + self.b_h.to(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("every_step", [True, False], ids=["loss-every-step", "loss-at-end"])
def test_track_measures_carried_and_direct_parts(dtype, every_step):
    """Issue 12, item 2: carried and direct were NaN for tracked states."""
    model = TextbookRNN(dtype)
    xs = inputs(dtype)
    loss = loss_fn(every_step)
    with gradscope.watch(model, weights={"rnn": model.W_hh}) as scope:
        h, states = torch.zeros(B, H, dtype=dtype), []
        for x in xs:
            h = scope.track(model.step(x, h), "rnn")
            states.append(h)
        loss(states).backward()
    want = reference_loop(model.step, xs, torch.zeros(B, H), loss)
    got = scope.timesteps()
    assert set(got["module"]) == {"rnn"} and set(got["cell"]) == {"track"}
    if dtype == torch.float64:
        assert_rows_match(got, row_means(want), rtol=1e-10)
    else:  # direct = total - carried: float32 rounding of the total, relative to the largest norm
        assert_rows_match(got, row_means(want), rtol=1e-4, atol_scale=1e-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("every_step", [True, False], ids=["loss-every-step", "loss-at-end"])
def test_track_of_h_and_c_reads_as_the_stock_lstm(dtype, every_step):
    lstm, cell = make_pair("LSTM")
    lstm, cell = lstm.to(dtype), cell.to(dtype)
    x, g, g_last = (v.to(dtype) for v in data())
    if not every_step:
        g[:-1] = 0
    want = whole_sequence("LSTM", lstm, x, g, g_last)
    with gradscope.watch(cell) as scope:
        h = c = torch.zeros(x.shape[1], cell.hidden_size, dtype=dtype)
        outs = []
        for x_t in x:
            gates = x_t @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh
            i, f, gg, o = gates.chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
            h, c = scope.track((torch.sigmoid(o) * torch.tanh(c), c), "lstm")
            outs.append(h)
        ((torch.sin(torch.stack(outs)) * g).sum() + (c * g_last).sum()).backward()
    got = scope.timesteps()
    assert set(got["module"]) == {"lstm"} and sorted(set(got["state"])) == ["c", "h"]
    assert_same_numbers(got, want)


def test_track_leaves_retained_gradients_and_user_hooks_as_they_were():
    """The product through each step runs none of the graph's hooks (autograd.grad would)."""
    model = TextbookRNN(torch.float64)
    xs = inputs(torch.float64, T=5)

    def run(scope):
        h, kept, calls = torch.zeros(B, H, dtype=torch.float64), [], []
        for x in xs:
            h = model.step(x, h)
            h = scope.track(h, "rnn") if scope is not None else h
            h.retain_grad()
            h.register_hook(lambda g: calls.append(g.clone()))
            kept.append(h)
        sum(torch.sin(s).sum() for s in kept).backward()
        grads = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        return [s.grad for s in kept], calls, grads

    plain = run(None)
    with gradscope.watch(model, weights={"W_hh": model.W_hh}) as scope:
        watched = run(scope)
    for a, b in zip(plain[0] + plain[1] + plain[2], watched[0] + watched[1] + watched[2]):
        assert torch.equal(a, b)
    assert len(watched[1]) == len(plain[1]) == 5
    assert not scope.timesteps()["carried_norm"].isna().any()


def test_track_gives_the_stock_verdict_and_the_spectral_bound():
    """Issue 12, item 2: tanh RNN, W_hh ~ randn * 0.01, a language-model loss at every position.
    The stock nn.RNN route said vanishing; the same weights in a tracked loop said healthy."""
    torch.manual_seed(7)
    vocab, emb, hidden, steps, batch = 12, 8, 16, 20, 4
    embedding, decoder = nn.Embedding(vocab, emb), nn.Linear(hidden, vocab)
    rnn = nn.RNN(emb, hidden)
    with torch.no_grad():
        rnn.weight_hh_l0.copy_(torch.randn(hidden, hidden) * 0.01)
    tokens = torch.randint(vocab, (steps + 1, batch))

    def lm_loss(outputs):
        return F.cross_entropy(decoder(outputs).reshape(-1, vocab), tokens[1:].reshape(-1))

    with gradscope.watch(rnn) as stock:
        out, _ = rnn(embedding(tokens[:-1]))
        lm_loss(out).backward()
    holder = nn.Module()
    holder.W_hh = rnn.weight_hh_l0
    with gradscope.watch(holder, weights={"lm": rnn.weight_hh_l0}) as tracked:
        h, outs = torch.zeros(batch, hidden), []
        for x in embedding(tokens[:-1]):
            h = torch.tanh(x @ rnn.weight_ih_l0.T + rnn.bias_ih_l0 + h @ rnn.weight_hh_l0.T + rnn.bias_hh_l0)
            h = tracked.track(h, "lm")
            outs.append(h)
        lm_loss(torch.stack(outs)).backward()
    want = gradscope.analyze(stock).summary().iloc[0]
    got_diagnosis = gradscope.analyze(tracked)
    got = got_diagnosis.summary().iloc[0]
    assert want["verdict"] == "vanishing" and got["verdict"] == want["verdict"]
    assert got["gain"] == pytest.approx(want["gain"], rel=1e-4) and got["gain"] < 0.1
    assert got["sigma_max"] == pytest.approx(float(torch.linalg.matrix_norm(rnn.weight_hh_l0.detach(), 2)), rel=1e-5)
    bound = got_diagnosis.by_kind("spectral_bound")
    assert len(bound) == 1 and bound[0].module == "lm"


def test_a_failed_product_leaves_the_carried_part_unknown_and_the_verdict_unknown(monkeypatch):
    """Where the carried part cannot be measured, the numbers are NaN and the verdict is
    "unknown", never "healthy"."""
    import gradscope.capture.track as track_module

    def broken(*args, **kwargs):
        raise RuntimeError("this backward function cannot be called outside the engine")

    monkeypatch.setattr(track_module, "step_vjp", broken)
    model = TextbookRNN(torch.float64)
    xs = inputs(torch.float64, T=6)
    with gradscope.watch(model, weights={"rnn": model.W_hh}) as scope:
        h, states = torch.zeros(B, H, dtype=torch.float64), []
        for x in xs:
            h = scope.track(model.step(x, h), "rnn")
            states.append(h)
        with pytest.warns(GradscopeWarning, match="measurement failed"):
            loss_fn(True, T=6)(states).backward()
    rows = scope.timesteps().sort_values("t")
    assert rows["grad_norm"].notna().all()
    assert rows["carried_norm"].iloc[:-1].isna().all() and rows["direct_norm"].iloc[:-1].isna().all()
    diagnosis = gradscope.analyze(scope)
    assert diagnosis.summary().iloc[0]["verdict"] == "unknown" and diagnosis.ok
