"""One table source: a live Scope and its reloaded Run answer the same table methods with the
same signatures, and give the same spectra (infinite and NaN eigenvalue parts included)."""

import inspect
import math

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

torch = pytest.importorskip("torch")
import gradscope  # noqa: E402
from gradscope.metrics import metrics  # noqa: E402
from gradscope.records import TABLES, TableSource, pick_spectrum  # noqa: E402
from gradscope.spectra import blocks  # noqa: E402

METHODS = ("timesteps", "spectra", "jacobians", "lyapunov", "gates", "forward_nonfinite", "spectrum",
           "steps", "table")


def circulant(first_row):
    n = len(first_row)
    return np.array([[first_row[(j - i) % n] for j in range(n)] for i in range(n)], dtype=np.float64)


def train(model, weights, run_dir, steps=3):
    torch.manual_seed(0)
    with gradscope.watch(model, weights=weights, run_dir=run_dir, spectra="inline") as scope:
        for _ in range(steps):
            out, _ = model(torch.randn(5, 2, 3))
            out.pow(2).sum().backward()
    return scope, gradscope.load(run_dir)


def assert_same_spectrum(live, loaded):
    for key in ("singular_values", "eigenvalues"):
        assert live[key].dtype == loaded[key].dtype
        np.testing.assert_array_equal(live[key].real, loaded[key].real)
        np.testing.assert_array_equal(np.imag(live[key]), np.imag(loaded[key]))


def parameters(method):
    return [(p.name, p.default, p.kind) for p in inspect.signature(method).parameters.values()]


def test_scope_and_run_have_the_same_table_methods():
    for name in METHODS:
        assert parameters(getattr(gradscope.Scope, name)) == parameters(getattr(gradscope.Run, name)), name
    assert list(inspect.signature(gradscope.Scope.timesteps).parameters) == ["self", "steps", "columns"]


def test_scope_reads_steps_and_columns_as_its_run_does(tmp_path):
    scope, run = train(torch.nn.GRU(3, 4), None, tmp_path / "run", steps=4)
    assert scope.steps() == run.steps() == [0, 1, 2, 3]
    for table in TABLES:
        for steps, columns in ((None, None), ([1, 3], None), (2, ["step", TABLES[table][-1]]), ([], "step")):
            pdt.assert_frame_equal(scope.table(table, steps, columns), run.table(table, steps, columns),
                                   obj=f"{table} steps={steps} columns={columns}")
    with pytest.raises(ValueError, match="no column"):
        scope.timesteps(columns=["grad"])


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_live_and_reloaded_spectrum_agree_on_an_infinite_imaginary_part(tmp_path):
    # an antisymmetric circulant with entries near the float64 limit: its eigenvalues are
    # purely imaginary and the largest overflows to -inf j, the real part staying finite
    b = 5e307
    w = circulant([0.0, -b, -b, -b, 0.0, b, b, b])
    scope, run = train(torch.nn.RNN(3, 4), {"W": torch.tensor(w)}, tmp_path / "run")
    live, loaded = scope.spectrum("W"), run.spectrum("W")
    assert_same_spectrum(live, loaded)
    eig = live["eigenvalues"]
    assert np.isinf(eig.imag).any() and np.isfinite(eig.real).all()
    for step in (0, 2, -2):
        assert_same_spectrum(scope.spectrum("W", step=step), run.spectrum("W", step=step))


def test_live_and_reloaded_spectrum_agree_on_nan_and_infinite_parts(tmp_path, monkeypatch):
    crafted = np.array([complex(math.inf, -1.0), complex(0.5, math.inf), complex(math.nan, 2.0),
                        complex(-3.0, math.nan), complex(math.nan, -math.inf)])
    original = blocks.block_spectrum

    def with_crafted_eigenvalues(matrix):
        spectrum = original(matrix)
        eigenvalues = np.empty(crafted.shape, dtype=np.complex128)
        eigenvalues.real, eigenvalues.imag = crafted.real, crafted.imag
        return {**spectrum, "eigenvalues": eigenvalues}

    monkeypatch.setattr(blocks, "block_spectrum", with_crafted_eigenvalues)
    scope, run = train(torch.nn.RNN(3, 4), {"W": torch.eye(5)}, tmp_path / "run")
    live, loaded = scope.spectrum("W"), run.spectrum("W")
    assert_same_spectrum(live, loaded)
    np.testing.assert_array_equal(live["eigenvalues"].real, crafted.real)
    np.testing.assert_array_equal(live["eigenvalues"].imag, crafted.imag)


def test_pick_spectrum_walks_back_only_as_far_as_needed():
    def record(step, gate):
        return {"step": step, "module": "m", "layer": 0, "direction": "forward", "gate": gate,
                "singular_values": [float(step)], "eigenvalues_real": [float(step)],
                "eigenvalues_imag": [math.inf]}

    values = {0: [record(0, "hh"), record(0, "all")], 1: [], 2: [record(2, "all")]}
    read = []

    def values_at(step):
        read.append(step)
        return values[step]

    got = pick_spectrum([0, 1, 2], values_at, "m")
    assert read == [2] and got["eigenvalues"][0] == complex(2.0, math.inf)
    assert pick_spectrum([0, 1, 2], values_at, "m", step=-2)["singular_values"][0] == 0.0
    assert pick_spectrum([0, 1, 2], values_at, "m", gate="hh")["singular_values"][0] == 0.0
    with pytest.raises(KeyError, match="no spectrum .* recorded .*'m', 0, 'forward', 'all'"):
        pick_spectrum([0, 1, 2], values_at, "m", layer=1)


class FrameSource(TableSource):
    """A minimal in-memory source: the base class gives every table method."""

    def __init__(self, rows):
        self.name, self.meta, self._rows = "frames", {"modules": {}}, rows

    def table(self, table, steps=None, columns=None):
        from gradscope.records import frame, select_rows

        return select_rows(frame(table, self._rows.get(table)), table, steps, columns)

    def steps(self):
        return sorted(set(self._rows["timesteps"]["step"]))


def test_a_subclass_of_table_source_is_read_by_analyze_and_metrics():
    torch.manual_seed(0)
    model = torch.nn.RNN(3, 4)
    with gradscope.watch(model) as scope:
        for _ in range(2):
            model(torch.randn(5, 2, 3))[0].pow(2).sum().backward()
    source = FrameSource({table: scope.table(table) for table in TABLES})
    assert gradscope.analyze(source).summary().equals(gradscope.analyze(scope).summary())
    pdt.assert_series_equal(pd.Series(metrics(source)), pd.Series(scope.metrics()))
