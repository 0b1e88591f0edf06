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


MIXES = {
    # 260 > FULL_SPECTRUM_MAX: the fast route; the small module's blocks take the full one
    "GRU bidirectional + small GRU": lambda: (torch.nn.GRU(4, 260, bidirectional=True), "GRU",
                                              torch.nn.GRU(4, 16), "GRU"),
    "LSTM proj 2 layers + small LSTM": lambda: (torch.nn.LSTM(4, 300, num_layers=2,
                                                              proj_size=260), "LSTM",
                                                torch.nn.LSTM(4, 16), "LSTM"),
    "RNN relu 2 layers + small RNN": lambda: (torch.nn.RNN(4, 260, num_layers=2,
                                                           nonlinearity="relu"), "RNN_RELU",
                                              torch.nn.RNN(4, 16), "RNN_TANH"),
}


@pytest.mark.parametrize("mix", sorted(MIXES))
def test_parallel_rows_match_serial_and_order_is_kept(two_threads, mix):
    torch.manual_seed(0)
    big, big_kind, small, small_kind = MIXES[mix]()
    jobs = jobs_of(big, big_kind)[:1] + jobs_of(small, small_kind) + jobs_of(big, big_kind)[1:]
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
    assert len(parallel[1][1]) == len(parallel[1][0])  # small blocks keep their full spectra
    assert not parallel[0][1]


needs_openmp = pytest.mark.skipif(not spectra_parallel._per_thread_counts(),
                                  reason="worker threads need torch's OpenMP backend")


@needs_openmp
@pytest.mark.parametrize("kind", ["RNN_TANH", "LSTM"])
def test_blocks_run_on_workers_with_a_share_of_the_threads_and_the_count_is_restored(
        two_threads, monkeypatch, kind):
    seen = []
    real = spectra.block_summary

    def spy(matrix, *args, **kwargs):
        seen.append((tuple(matrix.shape), threading.current_thread().name,
                     torch.get_num_threads()))
        return real(matrix, *args, **kwargs)
    monkeypatch.setattr(spectra, "block_summary", spy)
    torch.manual_seed(1)
    if kind == "RNN_TANH":  # one block per direction ("hh" is "all")
        module, expected = torch.nn.RNN(4, 260, bidirectional=True), [(260, 260)] * 2
    else:  # a single layer-direction: four gates and the stacked block
        module, expected = torch.nn.LSTM(4, 260), [(260, 260)] * 4 + [(1040, 260)]
    results = spectra_of_parts(jobs_of(module, kind))
    assert sorted(shape for shape, _, _ in seen) == sorted(expected)
    assert all(name.startswith("gradscope-spectra") and count == 1 for _, name, count in seen)
    assert [row["gate"] for row in results[0][0]] == (
        ["hh", "all"] if kind == "RNN_TANH" else ["i", "f", "g", "o", "all"])
    assert torch.get_num_threads() == 2
    assert count_in_a_new_thread() == 2  # threads started later inherit the count again


@needs_openmp
@pytest.mark.parametrize("failing", ["gate", "all"])
def test_an_error_in_a_worker_reaches_the_caller_and_the_count_is_restored(
        two_threads, monkeypatch, failing):
    real = spectra.block_summary

    def broken(matrix, *args, **kwargs):
        if (matrix.shape[0] > matrix.shape[1]) == (failing == "all"):
            raise RuntimeError("boom in a worker")
        return real(matrix, *args, **kwargs)
    monkeypatch.setattr(spectra, "block_summary", broken)
    jobs = jobs_of(torch.nn.GRU(4, 260, bidirectional=True), "GRU")
    with pytest.raises(RuntimeError, match="boom in a worker"):
        spectra_of_parts(jobs)
    assert torch.get_num_threads() == 2
    assert count_in_a_new_thread() == 2


@pytest.mark.parametrize("case", ["one thread", "one block", "small parts", "full route",
                                  "parallel=False", "shared pool"])
def test_no_worker_threads_where_they_cannot_pay(two_threads, monkeypatch, case):
    monkeypatch.setattr(spectra_parallel, "ThreadPoolExecutor", None)  # any use would fail
    torch.manual_seed(2)
    big = jobs_of(torch.nn.RNN(4, 260, bidirectional=True), "RNN_TANH")
    kwargs = {}
    if case == "one thread":
        torch.set_num_threads(1)
        jobs = big
    elif case == "small parts":
        jobs = jobs_of(torch.nn.LSTM(4, 8, num_layers=2, bidirectional=True), "LSTM")
    elif case == "one block":  # a single-direction RNN: one block beside small parts
        jobs = big[:1] + jobs_of(torch.nn.RNN(4, 8, num_layers=2), "RNN_TANH")
    elif case == "shared pool":  # torch's native backend: one pool for all threads
        monkeypatch.setattr(spectra_parallel, "_per_thread_counts", lambda: False)
        jobs = big
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
