"""Weights replaced at every forward: parametrizations and weight-drop wrappers. The exact route
uses the weight actually used in that forward, for the gradients and for the spectra."""

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrizations

import gradscope
from tests.reference import aggregate, compare_tables, reference_module


def reference_table(module, kind, x, g_out):
    steps, batch, _ = x.shape
    n_dir = 2 if module.bidirectional else 1
    h0 = torch.zeros(module.num_layers * n_dir, batch, module.hidden_size)
    per_sample = reference_module(module, kind, [x[:, b] for b in range(batch)], h0, h0,
                                  [g_out[:, b] for b in range(batch)], torch.zeros_like(h0), torch.zeros_like(h0))
    return aggregate(per_sample, batch)


def test_orthogonal_parametrization():
    torch.manual_seed(0)
    rnn = nn.RNN(3, 5)
    parametrizations.orthogonal(rnn, "weight_hh_l0")
    x = torch.randn(6, 2, 3)
    g = torch.randn(6, 2, 5)
    plain, _ = rnn(x)
    with gradscope.watch(rnn) as scope:
        out, _ = rnn(x)
        (torch.sin(out) * g).sum().backward()
    torch.testing.assert_close(out, plain)
    compare_tables(scope.timesteps(), reference_table(rnn, "RNN_TANH", x, g), rtol=1e-4)
    spectra = scope.spectra().set_index("gate")
    assert abs(spectra.loc["hh", "sigma_max"] - 1) < 1e-5 and abs(spectra.loc["hh", "sigma_min"] - 1) < 1e-5


class WeightDrop(nn.Module):
    """AWD-LSTM style: the recurrent weight is a dropped copy of a raw Parameter, set anew on the
    wrapped module before every call."""

    def __init__(self, module, p):
        super().__init__()
        self.module, self.p = module, p
        raw = module.weight_hh_l0
        del module._parameters["weight_hh_l0"]
        self.weight_hh_raw = nn.Parameter(raw.detach().clone())
        self.used = []

    def forward(self, x):
        dropped = F.dropout(self.weight_hh_raw, self.p, self.training)
        setattr(self.module, "weight_hh_l0", dropped)
        self.used.append(dropped.detach().clone())
        return self.module(x)


def test_weight_drop_wrapper():
    torch.manual_seed(0)
    model = WeightDrop(nn.LSTM(3, 4), p=0.5)
    x = torch.randn(5, 2, 3)
    torch.manual_seed(1)
    plain, _ = model(x)
    plain.sum().backward()
    plain_grad = model.weight_hh_raw.grad.clone()
    model.zero_grad()
    with gradscope.watch(model) as scope:
        torch.manual_seed(1)
        out, _ = model(x)
        out.sum().backward()
    torch.testing.assert_close(out, plain)
    torch.testing.assert_close(model.weight_hh_raw.grad, plain_grad)
    used = model.used[-1].double().numpy()
    spectra = scope.spectra().set_index("gate")
    for index, gate in enumerate("ifgo"):
        block = used[index * 4:(index + 1) * 4]
        s = np.linalg.svd(block, compute_uv=False)
        np.testing.assert_allclose(spectra.loc[gate, "sigma_max"], s[0], rtol=1e-6)
    assert len(scope.timesteps()) == 2 * 5


def test_spectrum_of_a_large_block_is_computed_for_the_latest_step():
    torch.manual_seed(0)
    gru = nn.GRU(4, 300)  # blocks over 256 keep only their summary row when recorded
    with gradscope.watch(gru) as scope:
        out, _ = gru(torch.randn(3, 2, 4))
        out.sum().backward()
    got = scope.spectrum("", gate="z")
    block = gru.weight_hh_l0.detach()[300:600].double().numpy()
    np.testing.assert_allclose(got["singular_values"], np.linalg.svd(block, compute_uv=False), rtol=1e-8)
    np.testing.assert_allclose(np.sort(np.abs(got["eigenvalues"])), np.sort(np.abs(np.linalg.eigvals(block))),
                               rtol=1e-6)
    row = scope.spectra().set_index("gate").loc["z"]
    np.testing.assert_allclose(row["sigma_max"], got["singular_values"][0], rtol=1e-6)
