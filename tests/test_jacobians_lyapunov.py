"""Lyapunov spectrum by the QR method: oracles with known exponents, packed batches, chaining."""

import math

import pytest
import torch

from gradscope.cells import rnn_step
from gradscope.spectra.jacobians import (lyapunov_accumulate, lyapunov_finish, lyapunov_finish_many,
                                 lyapunov_spectrum, state_jacobians)


def trajectory_jacobians(kind, w_hh, b_hh, h0, steps):
    """Jacobians along a hand-run trajectory of an RNN with W_ih = 0 (so xw = b_ih = 0)."""
    weights = {"w_hh": w_hh, "b_hh": b_hh}
    xw = torch.zeros_like(h0)
    h, out = h0, []
    for _ in range(steps):
        out.append(state_jacobians(kind, weights, xw, h))
        h = rnn_step(xw, h, w_hh, b_hh, relu=kind == "RNN_RELU")[0]
    return out, h


def test_relu_rnn_in_its_linear_regime_has_exponents_log_lambda():
    lam = torch.tensor([0.9, 0.3, 0.6, 0.95, 0.1], dtype=torch.float64)
    h0 = torch.rand(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    jac, h = trajectory_jacobians("RNN_RELU", torch.diag(lam), torch.full((5,), 0.5,
                                  dtype=torch.float64), h0, steps=30)
    assert bool((h > 0).all())  # positive bias and W_ih = 0 keep every unit in the linear part
    exponents = lyapunov_spectrum(jac)
    torch.testing.assert_close(exponents, torch.sort(torch.log(lam), descending=True).values,
                               rtol=0, atol=1e-12)


def test_orthogonal_map_in_a_linear_regime_has_exponents_zero():
    # a permutation is orthogonal and maps positive states to positive states: exactly linear
    perm = torch.eye(6, dtype=torch.float64)[torch.tensor([3, 0, 5, 1, 2, 4])]
    jac, _ = trajectory_jacobians("RNN_RELU", perm, torch.ones(6, dtype=torch.float64),
                                  torch.rand(3, 6, dtype=torch.float64), steps=20)
    torch.testing.assert_close(lyapunov_spectrum(jac), torch.zeros(6, dtype=torch.float64),
                               rtol=0, atol=1e-12)
    # tanh near its fixed point 0 is linear up to h^2 ~ 1e-8
    q = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64,
                                    generator=torch.Generator().manual_seed(2))).Q
    h0 = 1e-4 * torch.randn(5, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    jac, _ = trajectory_jacobians("RNN_TANH", q, torch.zeros(8, dtype=torch.float64), h0,
                                  steps=25)
    exponents = lyapunov_spectrum(jac)
    assert exponents.abs().max().item() < 1e-6
    assert exponents.shape == (8,)


def random_steps(batches, size=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, size, size, generator=g, dtype=torch.float64) / 2 for b in batches]


@pytest.mark.parametrize("batches", [[3, 3, 2, 2, 1], [1, 2, 2, 3, 3]],
                         ids=["packed-forward", "packed-reverse"])
def test_active_prefix_rows_equal_separate_sequences_pooled(batches):
    steps = random_steps(batches)
    pooled = lyapunov_spectrum(steps)
    per_sequence = [lyapunov_accumulate([s[i:i + 1] for s in steps if s.shape[0] > i])
                    for i in range(max(batches))]
    torch.testing.assert_close(pooled, lyapunov_finish_many(per_sequence))
    state = lyapunov_accumulate(steps)
    assert state.pairs == sum(batches)
    assert state.frames.shape == (3, 4, 4)


def test_hand_computed_qr_method_for_one_sequence():
    steps = random_steps([1, 1, 1], size=3, seed=4)
    q = torch.eye(3, dtype=torch.float64)
    logs = torch.zeros(3, dtype=torch.float64)
    for j in steps:
        q, r = torch.linalg.qr(j[0] @ q)
        logs += torch.log(torch.diagonal(r).abs())
    torch.testing.assert_close(lyapunov_spectrum(steps),
                               torch.sort(logs / 3, descending=True).values)


def test_chained_calls_continue_the_trajectory_and_leave_the_state_alone():
    steps = random_steps([3, 3, 3, 2, 2, 1], seed=5)
    whole = lyapunov_spectrum(steps)
    first = lyapunov_accumulate(steps[:2])
    frames = first.frames.clone()
    second = lyapunov_accumulate(steps[2:], first)
    torch.testing.assert_close(lyapunov_finish(second), whole)
    assert torch.equal(first.frames, frames) and first.pairs == 6
    again = lyapunov_accumulate([], first)
    assert again.pairs == first.pairs and torch.equal(again.frames, first.frames)


def test_empty_and_mismatched_inputs():
    assert lyapunov_finish(None) is None and lyapunov_accumulate([]) is None
    assert lyapunov_finish_many([None]) is None
    empty = lyapunov_accumulate([torch.zeros(0, 3, 3)])
    assert empty is None or all(math.isnan(v) for v in lyapunov_finish(empty).tolist())
    state = lyapunov_accumulate(random_steps([2]))
    with pytest.raises(ValueError, match="state size"):
        lyapunov_accumulate(random_steps([2], size=5), state)
    with pytest.raises(ValueError, match=r"\(B, S, S\)"):
        lyapunov_accumulate([torch.zeros(2, 3)])
