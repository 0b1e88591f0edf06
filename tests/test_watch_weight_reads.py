"""``weights=``: gradscope never changes training. A property with side effects is kept as the
forward read it (``(module, "name")``), never read again; a callable is called exactly once per
recorded step, at its close; a tensor is read at close (no user code runs)."""

import numpy as np
import pytest
import torch
import torch.nn as nn

import gradscope


class SideEffectOrthogonalRNN(nn.Module):
    """An orthogonal RNN in the style of research code: ``B`` is regenerated (Cayley map of a
    skew matrix) on every read, and each read advances a counter that scales the next one; so
    every extra read changes what training sees."""

    def __init__(self, size=4):
        super().__init__()
        self.skew = nn.Parameter(torch.randn(size, size) * 0.3)
        self.inp = nn.Linear(size, size)
        self.reads = 0
        self.used = []  # what each forward used, for the test

    @property
    def B(self):
        self.reads += 1
        a = self.skew - self.skew.T
        eye = torch.eye(a.shape[0])
        q = torch.linalg.solve(eye + a, eye - a)  # orthogonal
        return q * (1.0 - 0.05 * (self.reads % 3))  # the side effect reaches the numbers

    def forward(self, x, scope=None):
        B = self.B
        self.used.append(B.detach().clone())
        h = torch.zeros(x.shape[1], x.shape[2])
        for x_t in x:
            h = torch.tanh(self.inp(x_t) + h @ B.T)
            if scope is not None:
                h = scope.track(h, "B")
        return h


def train(watch_kwargs, steps=5):
    torch.manual_seed(0)
    model = SideEffectOrthogonalRNN()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    x = torch.randn(6, 3, 4, generator=torch.Generator().manual_seed(1))
    scope = gradscope.watch(model, **watch_kwargs(model)) if watch_kwargs else None
    if scope is not None:
        scope.start()
    try:
        for _ in range(steps):
            opt.zero_grad()
            model(x, scope).pow(2).sum().backward()
            opt.step()
    finally:
        if scope is not None:
            scope.stop()
    return model, scope


def test_a_property_with_side_effects_leaves_training_bitwise_equal():
    plain, _ = train(None)
    watched, scope = train(lambda m: {"weights": {"B": (m, "B")}, "every": 2, "spectra_every": 1})
    for (name, a), (_, b) in zip(plain.named_parameters(), watched.named_parameters()):
        assert torch.equal(a, b), name
    assert watched.reads == plain.reads == 5
    assert type(watched) is SideEffectOrthogonalRNN  # the class swap is undone
    # the spectra are those of the B each recorded forward used
    spectra = scope.spectra().set_index("step")
    assert list(spectra.index) == [0, 2, 4]
    for step in (0, 2, 4):
        used = watched.used[step].double().numpy()
        np.testing.assert_allclose(spectra.loc[step, "sigma_max"], np.linalg.svd(used, compute_uv=False)[0],
                                   rtol=1e-6)


def test_a_side_effecting_callable_is_called_once_per_recorded_step_at_its_close():
    calls = []

    def read_b(model):
        calls.append(model.reads)
        return model.B

    watched, scope = train(lambda m: {"weights": {"B": lambda: read_b(m)}, "every": 2})
    # steps 0, 2, 4 recorded: one call each, after that step's forward read; each call is one
    # read more (the forwards make reads 1, 3, 4, 6, 7), which is why a callable must be free of
    # side effects and a property is better given as (module, "name")
    assert scope.steps() == [0, 2, 4]
    assert calls == [1, 4, 7]


def test_a_plain_parameter_is_read_at_close_and_runs_no_user_code():
    torch.manual_seed(0)
    cell = nn.RNNCell(3, 3)
    with gradscope.watch(nn.Module(), weights={"W": (cell, "weight_hh")}) as scope:
        h = torch.zeros(2, 3)
        for x in torch.randn(4, 2, 3):
            h = scope.track(cell(x, h), "W")
        h.sum().backward()
    want = np.linalg.svd(cell.weight_hh.detach().double().numpy(), compute_uv=False)[0]
    np.testing.assert_allclose(scope.spectra()["sigma_max"].iloc[0], want, rtol=1e-6)


def test_property_not_read_in_a_recorded_step_is_skipped_with_a_warning():
    model = SideEffectOrthogonalRNN()
    with pytest.warns(gradscope.GradscopeWarning, match="was not read"):
        with gradscope.watch(model, weights={"B": (model, "B")}) as scope:
            with torch.no_grad():
                B = model.B  # a read under no_grad is not the forward's
            h = torch.zeros(2, 4)
            for x in torch.randn(3, 2, 4):
                h = scope.track(torch.tanh(x + h @ B.T + h.new_zeros(()).requires_grad_()), "B")
            h.sum().backward()
    assert scope.spectra().empty


def test_bad_weight_pair_is_a_clear_error():
    with pytest.raises(TypeError, match="neither a property nor a tensor"):
        gradscope.watch(nn.RNN(3, 3), weights={"W": (nn.RNN(3, 3), "hidden_size")})
