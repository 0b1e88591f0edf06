"""The fast route's CPU form (gradscope's own BPTT, capture/own_bptt.py, own_lstm*.py) beyond the
grid of tests/test_capture_fast.py: which gradients it returns and when, and the pieces it
stands on (oneDNN products, float32 row norms, gate counts)."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import gradscope
from gradscope.capture import cpu_matmul, cpu_tanh, own_lstm_layer
from gradscope.capture.norms import nonfinite_rows, row_norms

KINDS = {"RNN": nn.RNN, "GRU": nn.GRU, "LSTM": nn.LSTM}


def make(kind, **kwargs):
    torch.manual_seed(0)
    return KINDS[kind](3, 5, **kwargs)


def grads_of(module, x, steps=1, retain=False):
    module.zero_grad(set_to_none=True)
    out, _ = module(x)
    loss = out.sin().sum()
    loss.backward(retain_graph=retain)
    if retain:
        loss.backward()
    return {n: p.grad for n, p in module.named_parameters()}


@pytest.mark.parametrize("kind", KINDS)
def test_the_cpu_form_is_the_one_that_runs(kind):
    module = make(kind)
    with gradscope.watch(module):
        out, _ = module(torch.randn(4, 2, 3))
    names = set()
    stack = [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node.name() in names:
            continue
        names.add(node.name())
        stack.extend(next_node for next_node, _ in node.next_functions)
    own = "_OwnLSTMLayerBackward" if kind == "LSTM" else "_OwnBPTTBackward"
    assert own in names and "_TapBackward" not in names


@pytest.mark.parametrize("kind", KINDS)
def test_two_biases_get_two_gradient_tensors(kind):
    """An RNN's (and LSTM's) two biases have the same gradient: returned as one tensor twice, an
    optimizer's in-place update of one .grad (weight decay) would change the other."""
    module = make(kind)
    with gradscope.watch(module):
        grads = grads_of(module, torch.randn(4, 2, 3))
    assert grads["bias_ih_l0"].data_ptr() != grads["bias_hh_l0"].data_ptr()
    if kind != "GRU":
        torch.testing.assert_close(grads["bias_ih_l0"], grads["bias_hh_l0"], rtol=0, atol=0)
    twin = make(kind)
    plain = grads_of(twin, torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(3)))
    opt_w = torch.optim.SGD(module.parameters(), lr=0.1, weight_decay=0.5)
    opt_p = torch.optim.SGD(twin.parameters(), lr=0.1, weight_decay=0.5)
    with gradscope.watch(module):
        grads_of(module, torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(3)))
        opt_w.step()
    opt_p.step()
    assert plain  # twin's step used its own plain gradients
    for (name, a), (_, b) in zip(module.named_parameters(), twin.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("kind", KINDS)
def test_frozen_weights_and_an_input_that_wants_its_gradient(kind):
    module, twin = make(kind, num_layers=2), make(kind, num_layers=2)
    for m in (module, twin):
        m.weight_hh_l0.requires_grad_(False)
    x = torch.randn(6, 2, 3, dtype=torch.float32, requires_grad=True)

    def run(m):
        x.grad = None
        m.zero_grad(set_to_none=True)
        out, _ = m(x)
        out.pow(2).sum().backward()
        return [x.grad.clone()] + [p.grad for p in m.parameters() if p.requires_grad]

    plain = run(twin)
    with gradscope.watch(module) as scope:
        watched = run(module)
    assert module.weight_hh_l0.grad is None
    assert len(scope.timesteps()) > 0
    for got, want in zip(watched, plain):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_a_second_backward_through_the_same_graph_computes_and_records_once(kind):
    module, twin = make(kind), make(kind)
    x = torch.randn(5, 2, 3)
    plain = grads_of(twin, x, retain=True)
    with gradscope.watch(module) as scope:
        watched = grads_of(module, x, retain=True)
    for name, want in plain.items():
        torch.testing.assert_close(watched[name], want, rtol=1e-5, atol=1e-6, msg=name)
    once = make(kind)
    with gradscope.watch(once) as single:
        grads_of(once, x)
    assert scope.timesteps()["grad_norm"].tolist() == pytest.approx(single.timesteps()["grad_norm"].tolist())


@pytest.mark.parametrize("stepped", [False, True], ids=["fused forward", "stepped forward"])
def test_lstm_second_backward_and_gradient_penalty_on_both_forwards(stepped, monkeypatch):
    """The stepped forward hands its gates to the first backward; a second one recomputes them."""
    monkeypatch.setattr(own_lstm_layer, "stepped", lambda layer_in, weights: stepped)
    module, twin = make("LSTM", num_layers=2, bidirectional=True), make("LSTM", num_layers=2, bidirectional=True)
    x = torch.randn(6, 2, 3)
    plain = grads_of(twin, x, retain=True)
    with gradscope.watch(module) as scope:
        watched = grads_of(module, x, retain=True)
    assert len(scope.timesteps()) > 0
    for name, want in plain.items():
        torch.testing.assert_close(watched[name], want, rtol=1e-5, atol=1e-6, msg=name)
    x64 = torch.randn(6, 2, 3, dtype=torch.float64, requires_grad=True)
    module64, twin64 = make("LSTM").double(), make("LSTM").double()

    def penalty(m):
        m.zero_grad()
        (gx,) = torch.autograd.grad(m(x64)[0].sin().sum(), x64, create_graph=True)
        gx.pow(2).sum().backward()
        return [p.grad.clone() for p in m.parameters()]

    want = penalty(twin64)
    with gradscope.watch(module64):
        got = penalty(module64)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_large_lstm_layers_step_their_forward_and_small_ones_keep_the_fused_op():
    from gradscope.capture.own_lstm_layer import stepped

    def weights(hidden):
        return [{"w_hh": torch.zeros(4 * hidden, hidden)}]

    assert stepped(torch.zeros(200, 32, 256), weights(256))  # 32 x 1024 x 256 per step
    assert not stepped(torch.zeros(100, 64, 128), weights(128))  # 64 x 512 x 128
    assert not stepped(torch.zeros(1000, 16, 64), weights(64))  # 16 x 256 x 64
    assert not stepped(torch.zeros(200, 32, 256, dtype=torch.float64), weights(256))


def test_lstm_outputs_are_the_fused_ones_bitwise():
    for kwargs in ({}, {"num_layers": 2, "bidirectional": True}, {"proj_size": 2}, {"bias": False}):
        module = make("LSTM", **kwargs)
        x = torch.randn(7, 3, 3)
        with torch.no_grad():
            plain = module(x)
        with gradscope.watch(module):
            watched = module(x)
        assert torch.equal(watched[0], plain[0]), kwargs
        assert all(torch.equal(a, b) for a, b in zip(watched[1], plain[1])), kwargs


# ---- the pieces --------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_row_norms_over_the_whole_range(dtype):
    big = 1e30 if dtype != torch.float64 else 1e300
    tiny = 1e-30 if dtype != torch.float64 else 1e-300
    rows = torch.randn(8, 16, generator=torch.Generator().manual_seed(0)).to(dtype)
    rows[1] = 0
    rows[2] = rows[2] * tiny
    rows[3] = rows[3] * big
    rows[4, 5] = float("nan")
    rows[5, 0] = float("inf")
    rows[6, 3] = tiny  # one tiny entry among zeros
    rows[6, [0, 1, 2, 4]] = 0
    rows[6, 5:] = 0
    want = [math.hypot(*row.double().tolist()) if torch.isfinite(row).all() else None
            for row in rows]
    got = row_norms(rows)
    assert got.dtype == torch.float64
    for i, (g, w) in enumerate(zip(got.tolist(), want)):
        if w is None:
            assert not math.isfinite(g), i
        else:
            assert g == pytest.approx(w, rel=1e-6, abs=0), i
    assert nonfinite_rows(rows, got).tolist() == [False, False, False, False, True, True, False, False]


@pytest.mark.parametrize("zero_rows", [3, 90], ids=["few-zero-rows", "mostly-zero-rows"])
def test_row_norms_widen_only_the_rows_that_need_it(zero_rows):
    """A few extreme rows among many are taken again one by one; where most rows are zero (a
    direct part the loss reads at a few steps) the zero rows are found first. Either way every
    norm is right, and a tiny row among zeros is not read as zero."""
    rows = torch.randn(100, 32, generator=torch.Generator().manual_seed(1))
    rows[:zero_rows] = 0
    rows[zero_rows] = rows[zero_rows] * 1e-30  # squares underflow in float32
    rows[zero_rows + 1] = rows[zero_rows + 1] * 1e30  # squares overflow in float32
    want = [math.hypot(*row.double().tolist()) for row in rows]
    got = row_norms(rows).tolist()
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == pytest.approx(w, rel=1e-6, abs=0), i


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_cpu_tanh_equals_torch_within_two_ulp_in_place_and_strided(dtype):
    """numpy's tanh for gradscope's own buffers: within 2 ulp of torch's, into ``out`` or in place
    over a strided gate block (the LSTM's g columns), NaN and Inf kept; other dtypes are torch's."""
    gen = torch.Generator().manual_seed(0)
    gates = (torch.randn(50, 4, 16, generator=gen) * 4).to(dtype)
    gates[0, 2, 0], gates[1, 2, 1], gates[2, 2, 2] = float("nan"), float("inf"), -float("inf")
    block = gates[:, 2]  # strided: every fourth run of 16
    want = torch.tanh(block.double())
    other = gates.clone()
    got = cpu_tanh.tanh(block)
    out = torch.empty_like(block)
    assert cpu_tanh.tanh(block, out=out) is out
    assert cpu_tanh.tanh_(block) is block
    tolerance = 2 * torch.finfo(dtype).eps
    for value in (got, out, block):
        assert value.dtype == dtype
        torch.testing.assert_close(value.double(), want, rtol=tolerance, atol=tolerance, equal_nan=True)
    other[:, 2] = gates[:, 2]
    torch.testing.assert_close(gates, other, rtol=0, atol=0, equal_nan=True)  # only the block was written


def test_oned_nn_products_equal_torch_and_fall_back(monkeypatch):
    monkeypatch.setattr(cpu_matmul, "ONEDNN_MIN_WORK", 1)  # oneDNN even for these small products
    gen = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(40, 24, generator=gen), torch.randn(12, 24, generator=gen), torch.randn(12, generator=gen)
    torch.testing.assert_close(cpu_matmul.linear(x, w, b), F.linear(x, w, b), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cpu_matmul.matmul(x.t(), x), x.t() @ x, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(cpu_matmul.column_sums(x), x.sum(0), rtol=1e-5, atol=1e-5)
    x64 = x.double()
    assert torch.equal(cpu_matmul.linear(x64, w.double()), F.linear(x64, w.double()))  # not oneDNN's
    monkeypatch.setattr(cpu_matmul, "_onednn_linear", lambda: None)
    assert torch.equal(cpu_matmul.linear(x, w, b), F.linear(x, w, b))


@pytest.mark.parametrize("rows", [7, 2500])  # one piece, several pieces of WEIGHT_GRADIENT_ROWS
def test_products_into_a_given_tensor_and_joint_weight_gradients(rows):
    gen = torch.Generator().manual_seed(1)
    grads, x, h = (torch.randn(rows, n, generator=gen) for n in (16, 5, 3))
    out, w = torch.empty(rows, 5), torch.randn(16, 5, generator=gen)
    assert cpu_matmul.matmul(grads, w, out=out) is out
    torch.testing.assert_close(out, grads @ w, rtol=1e-5, atol=1e-4)
    dw_x, dw_h = cpu_matmul.weight_gradients(grads, [x, h])
    assert dw_x.is_contiguous() and dw_h.is_contiguous() and dw_x.shape == (16, 5) and dw_h.shape == (16, 3)
    torch.testing.assert_close(dw_x, grads.t() @ x, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(dw_h, grads.t() @ h, rtol=1e-5, atol=1e-4)
    (alone,) = cpu_matmul.weight_gradients(grads, [h])
    torch.testing.assert_close(alone, grads.t() @ h, rtol=1e-5, atol=1e-4)
    none, only_h = cpu_matmul.weight_gradients(grads, [None, h])  # a weight that needs no gradient
    assert none is None
    torch.testing.assert_close(only_h, grads.t() @ h, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_a_failure_while_recording_leaves_training_intact_and_records_nothing_half(kind, monkeypatch):
    """Gate statistics that raise inside the backward: the gradients are still the module's,
    a warning says the layer's numbers are not recorded, and none of its series (h, nor c for
    an LSTM) appears with only some of its parts."""
    from gradscope.capture import own_bptt as ob, own_lstm_layer as ol
    from gradscope.errors import GradscopeWarning

    def broken(*args, **kwargs):
        raise RuntimeError("statistics broke")

    monkeypatch.setattr(ob, "gate_statistics", broken)
    monkeypatch.setattr(ol, "gate_statistics", broken)
    module, twin = make(kind), make(kind)
    x = torch.randn(5, 2, 3)
    plain = grads_of(twin, x)
    with pytest.warns(GradscopeWarning, match="statistics broke"), gradscope.watch(module) as scope:
        watched = grads_of(module, x)
    for name, want in plain.items():
        torch.testing.assert_close(watched[name], want, rtol=1e-5, atol=1e-6, msg=name)
    assert len(scope.timesteps()) == 0
