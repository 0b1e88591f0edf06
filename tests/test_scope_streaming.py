"""A Scope that streams to run_dir holds bounded memory: a written step's rows live only in the
run folder, and the Scope's table methods read them back from there, equal to gradscope.load at
every step; rows that could not be written stay in memory."""

import gc
import tracemalloc

import pandas.testing as pdt
import pytest

torch = pytest.importorskip("torch")
import gradscope  # noqa: E402
from gradscope.errors import GradscopeWarning  # noqa: E402
from gradscope.metrics import metrics  # noqa: E402
from gradscope.records import TABLES  # noqa: E402
from gradscope.store import RunWriter  # noqa: E402


def gru_trainer(hidden=8):
    """(model, one training step: forward, backward, optimizer step)."""
    torch.manual_seed(0)
    model = torch.nn.GRU(3, hidden)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    x = torch.randn(6, 2, 3)

    def step():
        optimizer.zero_grad()
        out, _ = model(x)
        out.pow(2).mean().backward()
        optimizer.step()

    return model, step


def assert_scope_equals_folder(scope, run_dir):
    run = gradscope.load(run_dir)
    for table in TABLES:
        pdt.assert_frame_equal(scope.table(table), run.table(table), obj=table)
    assert scope.steps() == run.steps()
    last = run.steps()[-1]
    pdt.assert_frame_equal(scope.timesteps(steps=[last], columns=["t", "grad_norm"]),
                           run.timesteps(steps=[last], columns=["t", "grad_norm"]))


def traced_bytes():
    gc.collect()  # garbage awaiting the cycle collector is not held
    return tracemalloc.get_traced_memory()[0]


def test_memory_held_by_a_streaming_scope_does_not_grow_per_step(tmp_path):
    model, step = gru_trainer()
    tracemalloc.start()
    try:
        with gradscope.watch(model, run_dir=tmp_path / "run", spectra="inline", spectra_every=1):
            for _ in range(20):
                step()
            early = traced_bytes()
            for _ in range(100):
                step()
            late = traced_bytes()
    finally:
        tracemalloc.stop()
    # each step's tables as pandas frames held ~30 KiB (traced); on disk they are ~2 KiB a step
    assert (late - early) / 100 < 1024


@pytest.mark.parametrize("spectra", ["inline", "background"])
def test_a_streaming_scope_reads_what_its_folder_holds_at_every_step(tmp_path, spectra):
    model, step = gru_trainer()
    with gradscope.watch(model, run_dir=tmp_path / "run", spectra=spectra, spectra_every=1, jacobians=True) as scope:
        for _ in range(4):
            step()
            scope.spectra()  # waits for the background spectra, which then are in the folder
            assert_scope_equals_folder(scope, tmp_path / "run")
            assert scope.metrics() == metrics(gradscope.load(tmp_path / "run"))
        live = scope.spectrum("", step=-2)
    assert_scope_equals_folder(scope, tmp_path / "run")  # after stop too
    loaded = gradscope.load(tmp_path / "run").spectrum("", step=-2)
    for key in ("singular_values", "eigenvalues"):
        assert (live[key] == loaded[key]).all()


def test_a_step_that_could_not_be_written_stays_readable(tmp_path, monkeypatch):
    model, step = gru_trainer()
    original = RunWriter.write_step

    def disk_full_at_step_1(self, number, tables, values=()):
        if number == 1:
            raise OSError(28, "No space left on device")
        return original(self, number, tables, values)

    monkeypatch.setattr(RunWriter, "write_step", disk_full_at_step_1)
    with gradscope.watch(model, run_dir=tmp_path / "run", spectra="inline", spectra_every=1) as scope:
        step()
        with pytest.warns(GradscopeWarning, match="step 1 could not be written.*kept in memory"):
            step()
        step()
    assert gradscope.load(tmp_path / "run").steps() == [0, 2]
    assert scope.steps() == [0, 1, 2]
    rows = scope.timesteps()
    assert list(rows["step"]) == sorted(rows["step"]) and set(rows["step"]) == {0, 1, 2}
    assert list(scope.spectra(steps=1)["gate"]) == ["r", "z", "n", "all"]
    assert len(scope.timesteps(steps=1, columns="t")) == 6
    scope.spectrum("", step=1)


def test_a_scope_appending_to_a_run_shows_its_own_steps_and_keeps_them_when_restarted(tmp_path):
    model, step = gru_trainer()
    with gradscope.watch(model, run_dir=tmp_path / "run"):
        step()
    scope = gradscope.watch(model, run_dir=tmp_path / "run", append=True)
    with scope:
        step()
    with scope:  # started again: goes on with the same folder
        step()
    assert scope.steps() == [1, 2]
    assert sorted(set(scope.timesteps()["step"])) == [1, 2]
    assert gradscope.load(tmp_path / "run").steps() == [0, 1, 2]


def test_a_scope_without_run_dir_keeps_its_rows_in_memory():
    model, step = gru_trainer()
    with gradscope.watch(model) as scope:
        step()
        step()
    assert scope.steps() == [0, 1] and len(scope.timesteps()) == 12


def test_a_step_whose_write_failed_after_its_commit_is_not_read_twice(tmp_path, monkeypatch):
    model, step = gru_trainer()
    original = RunWriter.write_step

    def fails_after_writing_step_1(self, number, tables, values=()):
        original(self, number, tables, values)
        if number == 1:
            raise OSError(5, "Input/output error")  # e.g. the commit line's fsync

    monkeypatch.setattr(RunWriter, "write_step", fails_after_writing_step_1)
    with gradscope.watch(model, run_dir=tmp_path / "run", spectra="inline", spectra_every=1) as scope:
        step()
        with pytest.warns(GradscopeWarning, match="step 1 could not be written"):
            step()
        step()
    assert_scope_equals_folder(scope, tmp_path / "run")
