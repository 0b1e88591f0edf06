"""Weight spectra off the training thread: computed from a copy of the weights each recorded step
used, the same numbers as at step close, every step's kept (nothing skipped while the worker is
busy), errors reported, and the run folder gets every step's spectra as rows added to it."""

import re
import threading
import time
import warnings

import pandas.testing as pdt
import pytest
import torch
import torch.nn as nn

import gradscope
from gradscope.spectra import workers as spectra_parallel
from gradscope.store import RunWriter, load
from gradscope.store import format as fmt
from gradscope.store.synthetic import synthetic_meta, synthetic_step


def train(spectra, steps=4, run_dir=None, lr=0.5):
    torch.manual_seed(0)
    model = nn.LSTM(3, 8, num_layers=2)
    opt = torch.optim.SGD(model.parameters(), lr=lr)  # big steps: the weights change a lot
    x = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(1))
    with gradscope.watch(model, spectra=spectra, spectra_every=1, run_dir=run_dir) as scope:
        for _ in range(steps):
            opt.zero_grad()
            model(x)[0].pow(2).sum().backward()
            opt.step()  # changes the weights in place while the background thread may run
    return scope


def test_background_spectra_equal_those_computed_at_step_close():
    inline, background = train("inline"), train("background")
    pdt.assert_frame_equal(background.spectra(), inline.spectra())
    assert sorted(background.spectra()["step"].unique()) == [0, 1, 2, 3]
    for step in range(4):
        a = background.spectrum("", layer=1, gate="f", step=step)
        b = inline.spectrum("", layer=1, gate="f", step=step)
        assert (a["singular_values"] == b["singular_values"]).all()


def slow_spectra(monkeypatch, delay):
    original = spectra_parallel.spectra_of_parts
    threads = []

    def slow(jobs, *args, **kwargs):
        threads.append(threading.current_thread().name)
        time.sleep(delay)
        return original(jobs, *args, **kwargs)

    monkeypatch.setattr(spectra_parallel, "spectra_of_parts", slow)
    return threads


def test_a_busy_worker_skips_nothing_and_a_read_waits(monkeypatch):
    threads = slow_spectra(monkeypatch, 0.2)
    model = nn.GRU(3, 4)
    x = torch.randn(5, 2, 3)
    with gradscope.watch(model, spectra="background", spectra_every=1) as scope:
        started = time.perf_counter()
        for _ in range(5):
            model(x)[0].sum().backward()
        closing = time.perf_counter() - started
        assert sorted(scope.spectra()["step"].unique()) == [0, 1, 2, 3, 4]  # waits for the pending ones
        for _ in range(3):
            model(x)[0].sum().backward()
    assert sorted(scope.spectra()["step"].unique()) == list(range(8))  # stop() waited for the rest
    assert set(threads) == {"gradscope-spectra-background"}
    assert closing < 5 * 0.2  # the steps did not wait for their spectra


def test_a_worker_far_behind_makes_the_step_wait_rather_than_queue_without_bound(monkeypatch):
    from gradscope.spectra import background as spectra_background

    slow_spectra(monkeypatch, 0.1)
    monkeypatch.setattr(spectra_background, "MAX_PENDING", 1)
    model = nn.GRU(3, 4)
    x = torch.randn(5, 2, 3)
    with gradscope.watch(model, spectra="background", spectra_every=1) as scope:
        pending = []
        for _ in range(4):
            model(x)[0].sum().backward()
            pending.append(scope._background.pending())
    assert max(pending) <= 2  # one queued, one running
    assert sorted(scope.spectra()["step"].unique()) == [0, 1, 2, 3]


def test_the_run_folder_holds_every_steps_spectra(tmp_path, monkeypatch):
    slow_spectra(monkeypatch, 0.05)
    scope = train("background", steps=5, run_dir=tmp_path / "run")
    run = load(tmp_path / "run")
    pdt.assert_frame_equal(run.spectra(), scope.spectra())
    pdt.assert_frame_equal(run.timesteps(), scope.timesteps())
    assert run.spectrum("", layer=0, gate="i", step=3)["singular_values"].shape == (8,)
    lines = (tmp_path / "run" / "steps.jsonl").read_text().splitlines()
    assert sum('"adds": true' in line for line in lines) == 5


def test_a_worker_error_is_reported_at_the_next_read_and_at_stop(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no LAPACK today")

    monkeypatch.setattr(spectra_parallel, "spectra_of_parts", broken)
    model = nn.RNN(3, 4)
    scope = gradscope.watch(model, spectra="background", spectra_every=1).start()
    model(torch.randn(5, 2, 3))[0].sum().backward()
    with pytest.warns(gradscope.GradscopeWarning, match=r"step\(s\) 0 .*no LAPACK today"):
        scope.spectra()
    model(torch.randn(5, 2, 3))[0].sum().backward()
    with pytest.warns(gradscope.GradscopeWarning, match=r"step\(s\) 1 "):
        scope.stop()
    assert len(scope.timesteps()) == 2 * 5  # the gradients are kept


def test_spectra_every_gives_spectra_of_every_nth_step_only():
    model = nn.GRU(3, 4)
    x = torch.randn(5, 2, 3)
    with gradscope.watch(model, every=2, spectra_every=3) as scope:
        for _ in range(13):
            model(x)[0].sum().backward()
    assert scope.steps() == [0, 2, 4, 6, 8, 10, 12]
    assert sorted(scope.spectra()["step"].unique()) == [0, 6, 12]  # recorded and a multiple of 3
    with pytest.raises(ValueError, match="spectra_every"):
        gradscope.watch(model, spectra_every=0)


def test_auto_computes_spectra_at_step_close_for_weights_on_the_cpu():
    assert gradscope.watch(nn.GRU(3, 4))._spectra_in_background() is False
    assert gradscope.watch(nn.GRU(3, 4), spectra="background")._spectra_in_background() is True


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_auto_computes_spectra_in_the_background_for_weights_on_a_gpu():
    assert gradscope.watch(nn.GRU(3, 4).cuda())._spectra_in_background() is True


def test_thread_counts_of_training_threads_are_left_alone():
    before = torch.get_num_threads()
    start_count = spectra_parallel._in_new_thread(torch.get_num_threads)
    train("background", steps=2)
    assert torch.get_num_threads() == before
    assert spectra_parallel._in_new_thread(torch.get_num_threads) == start_count


def test_rows_added_to_a_written_step_load_with_it(tmp_path):
    with RunWriter(tmp_path / "run", synthetic_meta("x", ("a",))) as writer:
        for step in (0, 1):
            tables, values = synthetic_step(step, modules=("a",))
            writer.write_step(step, {k: v for k, v in tables.items() if k != "spectra"})
        tables, values = synthetic_step(0, modules=("a",))
        writer.add_to_step(0, {"spectra": tables["spectra"]}, values)
        with pytest.raises(ValueError, match="written before"):
            writer.add_to_step(2, {"spectra": tables["spectra"]})
    run = load(tmp_path / "run")
    assert run.steps() == [0, 1]
    pdt.assert_frame_equal(run.spectra(), run.spectra(steps=[0]))
    assert len(run.spectra()) == len(tables["spectra"]) and set(run.spectra()["step"]) == {0}
    assert run.spectrum("a", step=0)["singular_values"].size


def test_a_crash_before_the_added_rows_commit_loses_only_them(tmp_path):
    path = tmp_path / "run"
    steps = {step: synthetic_step(step, modules=("a",)) for step in (0, 1)}
    with RunWriter(path, synthetic_meta("x", ("a",))) as writer:
        for step, (tables, _) in steps.items():
            writer.write_step(step, {k: v for k, v in tables.items() if k != "spectra"})
        writer.add_to_step(0, {"spectra": steps[0][0]["spectra"]})
    with open(path / "spectra.csv", "ab") as handle:  # step 1's spectra rows, then the process died
        handle.write(fmt.encode_rows("spectra", steps[1][0]["spectra"], 1))
    with pytest.warns(gradscope.GradscopeWarning, match="no whole commit names"):
        run = load(path)
    assert run.steps() == [0, 1]
    assert set(run.spectra()["step"]) == {0}
    assert len(run.timesteps()) == sum(len(tables["timesteps"]) for tables, _ in steps.values())


def test_an_added_commit_for_an_unknown_step_is_dropped(tmp_path):
    path = tmp_path / "run"
    with RunWriter(path, synthetic_meta("x", ("a",))) as writer:
        tables, values = synthetic_step(0, modules=("a",))
        writer.write_step(0, {"timesteps": tables["timesteps"]})
        writer.add_to_step(0, {"spectra": tables["spectra"]})
    text = (path / "steps.jsonl").read_text().replace('"step": 0, "files": {"spectra', '"step": 7, "files": {"spectra')
    # without their own "crc" (as older runs wrote them) the lines are read as they say: the
    # edited step number is not caught as damage but as an unknown step
    text = re.sub(r', "crc": \d+\}', "}", text)
    (path / "steps.jsonl").write_text(text)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = load(path)
    assert any("has not committed before" in str(w.message) for w in caught)
    assert run.spectra().empty
