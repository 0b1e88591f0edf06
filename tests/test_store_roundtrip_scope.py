"""load(run_dir) gives back exactly the tables of the live Scope that wrote run_dir."""

import numpy as np
import pandas.testing as pdt
import pytest

torch = pytest.importorskip("torch")
import gradscope  # noqa: E402

TABLES = ("timesteps", "spectra", "jacobians", "lyapunov", "gates")


class Seq2Seq(torch.nn.Module):
    """Nested, bidirectional, multi-layer and LSTM parts, one of them called once per token."""

    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.GRU(3, 5, num_layers=2, bidirectional=True)
        self.decoder = torch.nn.ModuleDict({"cell,1": torch.nn.LSTMCell(3, 4)})
        self.rnn = torch.nn.RNN(3, 4, nonlinearity="relu")

    def forward(self, x):
        out, _ = self.encoder(x)
        h = c = torch.zeros(x.shape[1], 4)
        for t in range(x.shape[0]):
            h, c = self.decoder["cell,1"](x[t], (h, c))
        y, _ = self.rnn(x)
        return out.sum() + h.pow(2).sum() + y.pow(2).sum()


def train(model, steps, **watch_kwargs):
    torch.manual_seed(0)
    with gradscope.watch(model, **watch_kwargs) as scope:
        for _ in range(steps):
            out = model(torch.randn(6, 2, 3))
            out = out[0] if isinstance(out, tuple) else out  # stock modules: (output, h)
            out.pow(2).sum().backward()
    return scope


@pytest.mark.parametrize("make, kwargs", [
    (lambda: torch.nn.LSTM(3, 4, num_layers=2), {}),
    (lambda: torch.nn.LSTM(3, 4, num_layers=2), {"jacobians": True}),
    (Seq2Seq, {"every": 2, "name": "<script>alert(1)</script>"}),
], ids=["lstm", "lstm-jacobians", "seq2seq"])
def test_loaded_run_equals_live_scope(tmp_path, make, kwargs):
    torch.manual_seed(1)
    scope = train(make(), 5, run_dir=tmp_path / "run", **kwargs)
    run = gradscope.load(tmp_path / "run")
    assert run.name == scope.name and run.meta == scope.meta
    assert len(scope.timesteps()) > 0
    for table in TABLES:
        pdt.assert_frame_equal(getattr(run, table)(), getattr(scope, table)(), obj=table)


def test_loaded_spectrum_equals_live_scope(tmp_path):
    torch.manual_seed(1)
    scope = train(torch.nn.GRU(3, 4, num_layers=2), 3, run_dir=tmp_path / "run")
    run = gradscope.load(tmp_path / "run")
    spectra = scope.spectra()
    assert len(spectra) > 0
    for row in spectra.drop_duplicates(["module", "layer", "direction", "gate"]).itertuples():
        for step in (-1, int(row.step)):
            live = scope.spectrum(row.module, row.layer, row.direction, row.gate, step=step)
            loaded = run.spectrum(row.module, row.layer, row.direction, row.gate, step=step)
            np.testing.assert_array_equal(loaded["singular_values"], live["singular_values"])
            np.testing.assert_array_equal(loaded["eigenvalues"], live["eigenvalues"])
    live, loaded = scope.spectrum("", layer=1), run.spectrum("", layer=1)
    np.testing.assert_array_equal(loaded["singular_values"], live["singular_values"])
