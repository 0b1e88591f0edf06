"""The recorded steps' buffer pool (gradscope/capture/buffers.py): a buffer goes out again only
once nothing holds it, the pool keeps no more than the last recorded step used, and a Scope
holds nothing across unrecorded steps or after it stops."""

import pytest
import torch

import gradscope
from gradscope.capture import buffers
from gradscope.capture.buffers import BufferPool


@pytest.fixture(autouse=True)
def pool_every_size(monkeypatch):
    """The tests' buffers are small: pool them all."""
    monkeypatch.setattr(buffers, "MIN_POOLED_BYTES", 0)


def test_a_buffer_goes_out_again_once_it_is_dropped():
    pool = BufferPool()
    like = torch.empty(0)
    first = pool.empty((64, 8), like)
    address = first.data_ptr()
    second = pool.empty((64, 8), like)
    assert second.data_ptr() != address  # the first is still held
    del first
    third = pool.empty((32, 8), like)  # smaller: a view of the free, larger block
    assert third.data_ptr() == address and third.shape == (32, 8)


def test_a_view_kept_elsewhere_keeps_its_buffer_out_of_the_pool():
    pool = BufferPool()
    like = torch.empty(0)
    buffer = pool.empty((16, 4), like)
    row = buffer[3]  # what a graph kept with retain_graph holds
    row.fill_(7.0)
    del buffer
    again = pool.empty((16, 4), like)
    again.fill_(1.0)
    assert (row == 7.0).all()
    del row, again
    pool.empty((16, 4), like)
    assert len(pool._blocks) == 2  # both free again: no third block


def test_small_buffers_are_plain_allocations(monkeypatch):
    monkeypatch.setattr(buffers, "MIN_POOLED_BYTES", 1 << 20)
    pool = BufferPool()
    pool.empty((16, 4), torch.empty(0))
    assert pool.held_bytes() == 0
    pool.empty((1024, 256), torch.empty(0))  # 1 MiB of float32
    assert pool.held_bytes() == 1 << 20


def test_dtype_and_release_of_unused_blocks():
    pool = BufferPool()
    like = torch.empty(0)
    pool.empty((10,), like)
    pool.empty((10,), like, dtype=torch.float64)
    assert pool.held_bytes() == 10 * 4 + 10 * 8
    pool.release_unused()  # both were used since the last release: kept
    assert pool.held_bytes() == 120
    pool.empty((5,), like, dtype=torch.float64)
    pool.release_unused()  # only the float64 block was used
    assert pool.held_bytes() == 80
    pool.clear()
    assert pool.held_bytes() == 0


ROUTES = [("GRU", "exact"), ("LSTM", "exact"), ("LSTM", "fast")]  # the fast LSTM's BPTT pools too


@pytest.mark.parametrize("kind,mode", ROUTES)
def test_scope_holds_buffers_between_recorded_steps_only(kind, mode):
    torch.manual_seed(0)
    model = getattr(torch.nn, kind)(3, 8)
    x = torch.randn(5, 2, 3)
    with gradscope.watch(model, mode=mode, every=2) as scope:
        model(x)[0].sum().backward()  # step 0: recorded
        held = scope._buffers.held_bytes()
        assert held > 0
        model(x)[0].sum().backward()  # step 1: not recorded
        assert scope._buffers.held_bytes() == 0
        model(x)[0].sum().backward()  # step 2: recorded again
        assert scope._buffers.held_bytes() == held
    assert scope._buffers.held_bytes() == 0
    assert scope.steps() == [0, 2]


@pytest.mark.parametrize("kind,mode", ROUTES)
def test_a_graph_kept_for_a_second_backward_keeps_its_buffers(kind, mode):
    """Step A is kept with retain_graph and backpropagated again after step B ran: the buffers
    A's nodes read must not have been handed to B."""
    torch.manual_seed(0)
    model = getattr(torch.nn, kind)(3, 8)
    xa, xb = torch.randn(6, 2, 3), torch.randn(6, 2, 3)

    def sequence():
        model.zero_grad()
        out_a = model(xa)[0]
        out_a.pow(2).sum().backward(retain_graph=True)
        model(xb)[0].sin().sum().backward()
        out_a.pow(2).sum().backward()
        return [p.grad.clone() for p in model.parameters()]

    plain = sequence()
    with gradscope.watch(model, mode=mode):
        watched = sequence()
    for got, want in zip(watched, plain):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind,mode", ROUTES)
def test_a_loss_kept_after_backward_holds_no_pooled_buffer(kind, mode):
    """A training loop keeps the last step's loss (and so its graph) while the next forward
    runs: once backward is through, that graph holds no pooled buffer, so the next step can take
    them all again."""
    torch.manual_seed(0)
    model = getattr(torch.nn, kind)(3, 8)
    x = torch.randn(5, 2, 3)
    with gradscope.watch(model, mode=mode) as scope:
        loss = model(x)[0].pow(2).sum()
        loss.backward()
        pool = scope._buffers
        assert pool.held_bytes() > 0
        assert all(buffers._holders(block) <= pool._idle for block in pool._blocks)
        del loss
