"""The exact route's step nodes (gradscope/capture/exact_steps.py) on their own: first and second
derivatives of a whole chain (gradcheck, gradgradcheck), the parts they report against plain
autograd with zero probes, and the side-effect-free backward that graph walks use."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from gradscope.capture.exact_chain import StepChain
from gradscope.capture.exact_steps import GRUStep, LSTMStep, RNNStep
from gradscope.cells import lstm_step

KINDS = ("RNN_TANH", "RNN_RELU", "GRU", "LSTM")
GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "GRU": 3, "LSTM": 4}
B, H, T = 3, 2, 4


def tensors(kind, seed=0, bias=True):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)

    n = GATES[kind] * H
    return [rand(T * B, n), rand(B, H), rand(B, H), rand(n, H), rand(n) if bias else None]


def run_chain(kind, xw, h0, c0, w_hh, b_hh, reverse=False, report=None):
    """Every step of one direction through the step nodes: (outputs in time order, final h, c)."""
    chain = StepChain(kind, xw, [B] * T, reverse, report=report)
    h, c = h0, c0
    outs = [None] * T
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        if kind == "LSTM":
            h, c = LSTMStep.apply(chain, t, xw, h, c, w_hh, b_hh, None)
        else:
            h = (GRUStep if kind == "GRU" else RNNStep).apply(chain, t, xw, h, w_hh, b_hh, None)
        outs[t] = h
    return torch.cat(outs), h, c


@pytest.mark.parametrize("kind,reverse,bias", list(itertools.product(KINDS, (False, True), (True, False))))
def test_first_and_second_derivatives(kind, reverse, bias):
    xw, h0, c0, w_hh, b_hh = tensors(kind, bias=bias)
    if kind == "RNN_RELU":  # away from relu's kink, where finite differences are meaningless
        with torch.no_grad():
            xw.add_(xw.sign() * 0.5)

    def whole(xw, h0, c0, w_hh, *b):
        out, h, c = run_chain(kind, xw, h0, c0, w_hh, b[0] if b else None, reverse)
        return (out, h) + ((c,) if kind == "LSTM" else ())

    inputs = (xw, h0, c0, w_hh) + ((b_hh,) if bias else ())
    assert torch.autograd.gradcheck(whole, inputs)
    assert torch.autograd.gradgradcheck(whole, inputs)


def plain_step(kind, xw_t, h, c, w_hh, b_hh, c_probe):
    if kind == "LSTM":
        new_h, new_c, _ = lstm_step(xw_t, h, c, w_hh, b_hh, c_probe=c_probe)
        return new_h, new_c
    pre = F.linear(h, w_hh, b_hh)
    if kind == "GRU":
        r = torch.sigmoid(pre[:, :H] + xw_t[:, :H])
        z = torch.sigmoid(pre[:, H:2 * H] + xw_t[:, H:2 * H])
        n = torch.tanh(xw_t[:, 2 * H:] + pre[:, 2 * H:] * r)
        return (h - n) * z + n, None
    pre = pre + xw_t
    return (torch.relu(pre) if kind == "RNN_RELU" else torch.tanh(pre)), None


@pytest.mark.parametrize("kind,reverse", list(itertools.product(KINDS, (False, True))))
def test_reported_parts_equal_plain_autograd_with_probes(kind, reverse):
    """The carried part of each state (and an LSTM's direct part of c) as the nodes report them,
    against plain ops with a zero probe on every use (the old exact route)."""
    xw, h0, c0, w_hh, b_hh = tensors(kind, seed=1)
    g = torch.Generator().manual_seed(2)
    g_out = torch.randn(T * B, H, generator=g, dtype=torch.float64)
    reports = []
    out, _, _ = run_chain(kind, xw, h0, c0, w_hh, b_hh, reverse, report=reports.append)
    (out * g_out).sum().backward()
    assert len(reports) == 1
    got = reports[0]

    order = range(T - 1, -1, -1) if reverse else range(T)
    probes_h = [torch.zeros(B, H, dtype=torch.float64, requires_grad=True) for _ in range(T)]
    probes_c = [torch.zeros(B, H, dtype=torch.float64, requires_grad=True) for _ in range(T)]
    probes_c_out = [torch.zeros(B, H, dtype=torch.float64, requires_grad=True) for _ in range(T)]
    h, c, outs = h0, c0, [None] * T
    for s, t in enumerate(order):
        rows = slice(t * B, (t + 1) * B)
        h, c = plain_step(kind, xw[rows], h, c, w_hh, b_hh, probes_c_out[t] if kind == "LSTM" else None)
        outs[t] = h
        h = h + probes_h[t]
        if kind == "LSTM":
            c = c + probes_c[t]
    (torch.cat(outs) * g_out).sum().backward()
    # the carry buffer: piece k is the state made at step k (forward) or k + 1 (reverse)
    made = range(1, T) if reverse else range(T - 1)
    want_h = torch.cat([probes_h[t].grad for t in made])
    torch.testing.assert_close(got["carried_h"], want_h, rtol=1e-12, atol=1e-14)
    if kind == "LSTM":
        torch.testing.assert_close(got["carried_c"], torch.cat([probes_c[t].grad for t in made]), rtol=1e-12,
                                   atol=1e-14)
        torch.testing.assert_close(got["direct_c"], torch.cat([p.grad for p in probes_c_out]), rtol=1e-12,
                                   atol=1e-14)


@pytest.mark.parametrize("kind", KINDS)
def test_pure_backward_equals_the_engine_and_records_nothing(kind):
    xw, h0, c0, w_hh, b_hh = tensors(kind, seed=3)
    reports = []
    chain = StepChain(kind, xw, [B] * T, False, report=reports.append)
    h, c = h0, c0
    for t in range(2):  # step 1's node has a step before it: the middle of a chain
        if kind == "LSTM":
            h, c = LSTMStep.apply(chain, t, xw, h, c, w_hh, b_hh, None)
        else:
            h = (GRUStep if kind == "GRU" else RNNStep).apply(chain, t, xw, h, w_hh, b_hh, None)
    node = h.grad_fn
    grads = [torch.randn_like(h)] + ([torch.randn_like(c)] if kind == "LSTM" else [])
    pure = type(node)._forward_cls.pure_backward(node, *grads)
    assert reports == [] and chain.current is None
    # the engine's gradients of the step's inputs (the whole step, as autograd sees it)
    h_start, c_start = node.saved_tensors[1:3]
    inputs = [xw, h_start] + ([c_start] if kind == "LSTM" else []) + [w_hh, b_hh]
    with torch.enable_grad():
        probe = [x.detach().requires_grad_() for x in inputs]
        xw_p, h_p = probe[0], probe[1]
        c_p = probe[2] if kind == "LSTM" else None
        w_p, b_p = probe[-2], probe[-1]
        new = plain_step(kind, xw_p[B:2 * B], h_p, c_p, w_p, b_p, None)
        want = torch.autograd.grad([o for o in new if o is not None], probe, grads, allow_unused=True)
    assert len(pure) == len(inputs)  # one gradient per tensor input, as the engine sees the node
    for got, expected in zip(pure, want):
        torch.testing.assert_close(got, expected if expected is not None else torch.zeros_like(got), rtol=1e-12,
                                   atol=1e-14)


@pytest.mark.parametrize("kind", KINDS)
def test_nodes_keep_no_graph_tensor_as_an_attribute(kind):
    """Inputs are saved with save_for_backward: an attribute holding a tensor of the graph lets
    Python's garbage collector walk the whole graph through it at every collection (a watched
    GRU cell loop spent ~50 ms a step in collections)."""
    xw, h0, c0, w_hh, b_hh = tensors(kind)
    out, _, _ = run_chain(kind, xw, h0, c0, w_hh, b_hh)
    node = out.grad_fn.next_functions[-1][0]  # the last step's node, through the cat
    seen = 0
    while node is not None and type(node).__name__.endswith("StepBackward"):
        seen += 1
        for name, value in vars(node).items():
            assert not (isinstance(value, torch.Tensor) and value.requires_grad), name
        node = next((n for n, _ in node.next_functions if n is not None and type(n).__name__.endswith("StepBackward")),
                    None)
    assert seen == T
