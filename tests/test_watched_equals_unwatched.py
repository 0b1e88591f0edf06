"""What "the watched model computes what the unwatched one does" means, route by route
(README, docs/capture.md), held exactly:

- a step that is not recorded (every=N, no_grad) runs the module's own code: bitwise equal;
- a recorded step on the exact route replays the computation one time step at a time: nn.RNN's
  outputs are bitwise equal on the CPU; its gradients, and nn.GRU / nn.LSTM's outputs and
  gradients, agree within float rounding (one product per weight over all steps; the fused CPU
  kernels, oneDNN's LSTM among them, round differently): at most ROUNDING[dtype] of the largest
  entry;
- a recorded step on the fast route (the default) on the CPU runs gradscope's own BPTT: within
  ROUNDING[dtype] too (test_recorded_step_within_rounding); where it keeps the module's fused
  kernels (a GPU, autocast) bitwise (tests/test_capture_fast.py);
- (the exact route's step nodes' first and second derivatives: tests/test_exact_steps.py)
"""

import pytest
import torch

import gradscope

# The documented bound, relative to the largest entry of each output or gradient tensor.
# Measured (docs/capture.md): <= 3.7e-7 (outputs) and 2.7e-6 (gradients) in float32, <= 1e-15 in float64.
ROUNDING = {torch.float32: 1e-5, torch.float64: 1e-12}
KINDS = ("RNN", "GRU", "LSTM")
DTYPES = (torch.float32, torch.float64)


def make(kind, dtype):
    torch.manual_seed(0)
    module = getattr(torch.nn, kind)(8, 32, num_layers=2, bidirectional=True).to(dtype)
    x = torch.randn(40, 4, 8, dtype=dtype)
    return module, x


def one_step(module, x):
    module.zero_grad()
    out, _ = module(x)
    out.sin().sum().backward()
    return out.detach(), [p.grad.clone() for p in module.parameters()]


def largest_relative_gap(got, want):
    """The largest entry of |got - want| over the largest of |want| (0 where both are zero)."""
    return ((got - want).abs().max() / want.abs().max().clamp_min(torch.finfo(want.dtype).tiny)).item()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", KINDS)
def test_recorded_step_within_rounding(kind, dtype):
    module, x = make(kind, dtype)
    plain_out, plain_grads = one_step(module, x)
    with gradscope.watch(module) as scope:
        out, grads = one_step(module, x)
    assert scope.steps() == [0]
    assert largest_relative_gap(out, plain_out) <= ROUNDING[dtype]
    for got, want in zip(grads, plain_grads):
        assert largest_relative_gap(got, want) <= ROUNDING[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_recorded_rnn_step_on_the_exact_route_has_bitwise_outputs(dtype):
    """The same ATen ops in the same order forward; W_hh's gradient is one product over all
    steps, not a sum of per-step products: within rounding."""
    module, x = make("RNN", dtype)
    plain_out, plain_grads = one_step(module, x)
    with gradscope.watch(module, mode="exact"):
        out, grads = one_step(module, x)
    assert torch.equal(out, plain_out)
    for got, want in zip(grads, plain_grads):
        assert largest_relative_gap(got, want) <= ROUNDING[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", KINDS)
def test_unrecorded_steps_are_bitwise(kind, dtype):
    module, x = make(kind, dtype)
    plain_out, plain_grads = one_step(module, x)
    with torch.no_grad():
        plain_eval = module(x)[0]
    with gradscope.watch(module, every=2) as scope:
        one_step(module, x)  # step 0: recorded
        out, grads = one_step(module, x)  # step 1: not recorded
        with torch.no_grad():
            evaluated = module(x)[0]
    assert scope.steps() == [0] and scope.steps_seen == 2
    assert torch.equal(out, plain_out) and torch.equal(evaluated, plain_eval)
    assert all(torch.equal(got, want) for got, want in zip(grads, plain_grads))


@pytest.mark.parametrize("mode", ["exact", "fast"])
@pytest.mark.parametrize("kind", KINDS)
def test_double_backward_through_a_recorded_step(kind, mode):
    """A gradient penalty (create_graph=True) gives the same result watched and unwatched, and
    the first backward (a torch.autograd.grad) is recorded on both routes."""
    module, x = make(kind, torch.float64)
    x.requires_grad_(True)

    def penalty():
        module.zero_grad()
        out, _ = module(x)
        (grad_x,) = torch.autograd.grad(out.sin().sum(), x, create_graph=True)
        grad_x.pow(2).sum().backward()
        return [p.grad.clone() for p in module.parameters()]

    plain = penalty()
    with gradscope.watch(module, mode=mode) as scope:
        watched = penalty()
    assert len(scope.timesteps()) > 0
    for got, want in zip(watched, plain):
        assert largest_relative_gap(got, want) <= ROUNDING[torch.float64]
