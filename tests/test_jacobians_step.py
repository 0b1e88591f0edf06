"""State Jacobians of one cell step against torch.autograd.functional.jacobian."""

import pytest
import torch

from gradscope.cells import module_weights, step_function
from gradscope.spectra.jacobians import spectral_norms, state_jacobians

CELLS = [
    ("RNN_TANH", lambda: torch.nn.RNN(3, 5), 5),
    ("RNN_RELU", lambda: torch.nn.RNN(3, 5, nonlinearity="relu"), 5),
    ("GRU", lambda: torch.nn.GRU(3, 5), 5),
    ("LSTM", lambda: torch.nn.LSTM(3, 5), 10),
    ("LSTM", lambda: torch.nn.LSTM(3, 5, proj_size=2), 7),
]
IDS = ["rnn-tanh", "rnn-relu", "gru", "lstm", "lstm-proj"]


def inputs(module, size, rows=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    weights = module_weights(module)
    dtype = weights["w_hh"].dtype
    x = torch.randn(rows, 3, generator=g, dtype=dtype)
    xw = x @ weights["w_ih"].detach().T + weights["b_ih"].detach()
    state = torch.randn(rows, size, generator=g, dtype=dtype)
    return weights, xw, state


@pytest.mark.parametrize("kind,make,size", CELLS, ids=IDS)
@pytest.mark.parametrize("chunk", [None, 1, 4])
def test_jacobian_rows_match_autograd(kind, make, size, chunk):
    torch.manual_seed(0)
    module = make().double()
    weights, xw, state = inputs(module, size)
    got = state_jacobians(kind, weights, xw, state, chunk=chunk)
    step = step_function(kind, {k: v.detach() if v is not None else None
                                for k, v in weights.items()})
    want = torch.stack([torch.autograd.functional.jacobian(lambda s: step(xw[i], s), state[i])
                        for i in range(len(state))])
    assert got.shape == (6, size, size)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_lstm_joint_state_has_the_forget_gate_on_the_cell_diagonal():
    lstm = torch.nn.LSTM(3, 4).double()
    weights, xw, state = inputs(lstm, 8, rows=2)
    jac = state_jacobians("LSTM", weights, xw, state)
    gates = state[:, :4] @ weights["w_hh"].detach().T + weights["b_hh"].detach() + xw
    forget = torch.sigmoid(gates[:, 4:8])
    torch.testing.assert_close(torch.diagonal(jac[:, 4:, 4:], dim1=1, dim2=2), forget)


def test_no_graph_is_kept_and_weights_get_no_gradient():
    gru = torch.nn.GRU(3, 5)
    weights, xw, state = inputs(gru, 5)
    jac = state_jacobians("GRU", weights, xw, state)
    assert not jac.requires_grad and jac.grad_fn is None
    assert all(p.grad is None for p in gru.parameters())
    assert jac.dtype == torch.float32


def test_spectral_norms_are_the_largest_singular_values():
    g = torch.Generator().manual_seed(1)
    jac = torch.randn(4, 6, 6, generator=g, dtype=torch.float64)
    want = torch.stack([torch.linalg.svdvals(j)[0] for j in jac])
    torch.testing.assert_close(spectral_norms(jac), want, rtol=1e-12, atol=0)
    torch.testing.assert_close(spectral_norms(jac.float()), want.float(), rtol=1e-6, atol=0)
    jac[2, 1, 1] = float("inf")
    norms = spectral_norms(jac)
    assert torch.isnan(norms[2]) and torch.isfinite(norms[[0, 1, 3]]).all()


def test_empty_batch_and_bad_shapes():
    rnn = torch.nn.RNN(3, 5)
    weights = module_weights(rnn)
    assert state_jacobians("RNN_TANH", weights, torch.zeros(0, 5), torch.zeros(0, 5)).shape == \
        (0, 5, 5)
    with pytest.raises(ValueError, match="same N"):
        state_jacobians("RNN_TANH", weights, torch.zeros(3, 5), torch.zeros(2, 5))
