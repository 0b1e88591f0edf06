"""Layer-directions on worker threads: the same rows as one after another, the thread count put
back, errors passed on, and no threads where they cannot pay."""

import threading

import pytest
import torch

from gradscope import spectra, spectra_parallel
from gradscope.cells import module_weights
from gradscope.spectra_parallel import spectra_of_parts

VALUES = ("sigma_max", "sigma_min", "spectral_radius", "stable_rank", "frobenius")


def jobs_of(module, kind):
    layers = module.num_layers
    directions = ("forward", "reverse") if module.bidirectional else ("forward",)
    return [{"step": 3, "module": "m", "layer": layer, "direction": direction, "kind": kind,
             "weights": module_weights(module, layer, direction)}
            for layer in range(layers) for direction in directions]


def count_in_a_new_thread():
    """The torch thread count a thread started now begins with (shared, unlike the calling
    thread's own)."""
    seen = []
    thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    return seen[0]


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_parallel_rows_match_serial_and_order_is_kept(two_threads):
    torch.manual_seed(0)
    big = torch.nn.GRU(4, 260, num_layers=1, bidirectional=True)  # 260 > FULL_SPECTRUM_MAX
    small = torch.nn.GRU(4, 16)
    jobs = jobs_of(big, "GRU")[:1] + jobs_of(small, "GRU") + jobs_of(big, "GRU")[1:]
    serial = spectra_of_parts(jobs, parallel=False)
    parallel = spectra_of_parts(jobs)
    assert len(parallel) == len(jobs)
    for job, (rows, values), (rows_s, values_s) in zip(jobs, parallel, serial):
        assert [(r["layer"], r["direction"], r["gate"]) for r in rows] == \
               [(r["layer"], r["direction"], r["gate"]) for r in rows_s]
        assert all(r["direction"] == job["direction"] and r["step"] == 3 for r in rows)
        for row, row_s in zip(rows, rows_s):
            for key in VALUES:
                assert row[key] == pytest.approx(row_s[key], rel=1e-7, nan_ok=True), key
        assert len(values) == len(values_s)
    assert len(parallel[1][1]) == 4  # the small GRU's blocks keep their full spectra


def test_workers_run_with_a_share_of_the_threads_and_the_count_is_restored(two_threads,
                                                                          monkeypatch):
    seen = []
    real = spectra.spectra_records

    def spy(*args, **kwargs):
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        return real(*args, **kwargs)
    monkeypatch.setattr(spectra, "spectra_records", spy)
    torch.manual_seed(1)
    jobs = jobs_of(torch.nn.RNN(4, 260, bidirectional=True), "RNN_TANH")
    spectra_of_parts(jobs)
    assert [count for _, count in seen] == [1, 1]
    assert all(name.startswith("gradscope-spectra") for name, _ in seen)
    assert torch.get_num_threads() == 2
    assert count_in_a_new_thread() == 2  # threads started later inherit the count again


def test_an_error_in_a_worker_reaches_the_caller_and_the_count_is_restored(two_threads,
                                                                          monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom in a worker")
    monkeypatch.setattr(spectra, "spectra_records", broken)
    jobs = jobs_of(torch.nn.RNN(4, 260, bidirectional=True), "RNN_TANH")
    with pytest.raises(RuntimeError, match="boom in a worker"):
        spectra_of_parts(jobs)
    assert torch.get_num_threads() == 2
    assert count_in_a_new_thread() == 2


@pytest.mark.parametrize("case", ["one thread", "one big part", "small parts", "full route",
                                  "parallel=False"])
def test_no_worker_threads_where_they_cannot_pay(two_threads, monkeypatch, case):
    monkeypatch.setattr(spectra_parallel, "ThreadPoolExecutor", None)  # any use would fail
    torch.manual_seed(2)
    big = jobs_of(torch.nn.RNN(4, 260, bidirectional=True), "RNN_TANH")
    kwargs = {}
    if case == "one thread":
        torch.set_num_threads(1)
        jobs = big
    elif case == "one big part":
        jobs = big[:1] + jobs_of(torch.nn.RNN(4, 8, num_layers=2), "RNN_TANH")
    elif case == "small parts":
        jobs = jobs_of(torch.nn.LSTM(4, 8, num_layers=2, bidirectional=True), "LSTM")
    elif case == "full route":
        jobs, kwargs = big, {"full": True}
    else:
        jobs, kwargs = big, {"parallel": False}
    results = spectra_of_parts(jobs, **kwargs)
    assert len(results) == len(jobs)


def test_projected_lstm_parts_are_sized_by_the_projection():
    torch.manual_seed(3)
    lstm = torch.nn.LSTM(4, 300, proj_size=8, bidirectional=True)
    assert not any(spectra_parallel._takes_fast_route(job, "auto")
                   for job in jobs_of(lstm, "LSTM"))  # 8 x 8 gate maps: the full route
    assert all(spectra_parallel._takes_fast_route(job, False) for job in jobs_of(lstm, "LSTM"))
