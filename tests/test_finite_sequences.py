"""One NaN sequence in a batch makes the batch mean of the gradient NaN; ``finite_grad_norm``
keeps the mean over the other sequences, and the time-step figures draw it (issue 15 item 6:
"plot the finite sequences too")."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

import gradscope
from gradscope.reporting.plots import timesteps
from gradscope.reporting.sources import collect

T, B, I, H = 6, 4, 3, 5
BAD = 2  # the sequence whose input holds a NaN


def batch():
    torch.manual_seed(3)
    x = torch.randn(T, B, I, dtype=torch.float64)
    x[2, BAD, 0] = math.nan
    return x


def watched(module, x, mode):
    with gradscope.watch(module, mode=mode) as scope:
        out, _ = module(x)
        out.pow(2).sum().backward()
    return scope.timesteps()


@pytest.mark.parametrize("mode", ["exact", "fast"])
@pytest.mark.parametrize("cls", [nn.RNN, nn.GRU, nn.LSTM])
def test_the_finite_sequences_keep_their_mean(cls, mode):
    torch.manual_seed(0)
    module = cls(I, H, num_layers=2).double()
    x = batch()
    rows = watched(module, x, mode).query("layer == 0 and state == 'h'").sort_values("t")
    # the same module on the finite sequences alone: each sequence's gradient is its own
    good = [b for b in range(B) if b != BAD]
    alone = watched(module, x[:, good], mode).query("layer == 0 and state == 'h'").sort_values("t")
    late = rows["t"] >= 2  # the NaN enters at t=2 and spoils that sequence's gradient before it
    assert rows["grad_norm"].isna().all()  # the loss is NaN: every t of the batch mean too
    assert (rows["nonfinite"] == 1).all()
    np.testing.assert_allclose(rows["finite_grad_norm"].to_numpy(), alone["grad_norm"].to_numpy(), rtol=1e-12)
    assert late.any()


def test_a_batch_without_nan_has_the_same_finite_mean():
    torch.manual_seed(0)
    module = nn.GRU(I, H).double()
    rows = watched(module, torch.randn(T, B, I, dtype=torch.float64), "exact")
    np.testing.assert_allclose(rows["finite_grad_norm"], rows["grad_norm"], rtol=0, atol=0)


def test_the_timestep_figures_draw_the_finite_sequences_where_the_total_is_nan():
    torch.manual_seed(0)
    module = nn.LSTM(I, H).double()
    scope_rows = None
    with gradscope.watch(module, mode="exact") as scope:
        out, _ = module(batch())
        out.pow(2).sum().backward()
    scope_rows = scope.timesteps()
    assert scope_rows["grad_norm"].isna().all()
    run = collect(scope)
    for plot in list(timesteps.figures(run)) + list(timesteps.compare_figures([run])):
        lines = [line for ax in plot.figure.axes for line in ax.lines
                 if "finite sequences" in str(line.get_label())]
        assert lines, plot.name
        drawn = np.concatenate([np.asarray(line.get_ydata(), dtype=float) for line in lines])
        assert np.isfinite(drawn).sum() >= T


def test_a_run_folder_from_before_the_column_loads_it_as_nan_and_refuses_an_append(tmp_path, monkeypatch):
    from gradscope.records import TIMESTEP_COLUMNS
    from gradscope.store import RunWriter
    from gradscope.store.errors import RunFormatError
    from gradscope.store.synthetic import synthetic_meta, synthetic_step

    with monkeypatch.context() as older:  # the schema as gradscope wrote it before the column
        older.setattr("gradscope.records.TIMESTEP_COLUMNS", TIMESTEP_COLUMNS)
        TIMESTEP_COLUMNS.remove("finite_grad_norm")
        try:
            writer = RunWriter(tmp_path / "old", synthetic_meta())
            writer.write_step(0, *synthetic_step(0))
            writer.close()
        finally:
            TIMESTEP_COLUMNS.append("finite_grad_norm")
    assert b"finite_grad_norm" not in (tmp_path / "old" / "timesteps.csv").read_bytes()
    rows = gradscope.load(tmp_path / "old").timesteps()
    assert list(rows.columns)[-1] == "finite_grad_norm" and rows["finite_grad_norm"].isna().all()
    assert rows["grad_norm"].notna().any()
    with pytest.raises(RunFormatError, match="finite_grad_norm"):
        RunWriter(tmp_path / "old", synthetic_meta(), append=True)
