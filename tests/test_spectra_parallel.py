"""Layer-directions on worker threads: the same rows as one after another, the thread count put
back, errors passed on, and no threads where they cannot pay."""

import threading
import time

import pytest
import torch

from gradscope.spectra import blocks as spectra, workers as spectra_parallel
from gradscope.cells import module_weights
from gradscope.spectra.workers import spectra_of_parts

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


def watch_calls(monkeypatch, name, note):
    """Wrap ``spectra.<name>`` so that every call (in whatever thread) appends ``note(matrix)``
    to the returned list, then runs as before."""
    seen, real = [], getattr(spectra, name)

    def spy(matrix, *args, **kwargs):
        seen.append(note(matrix))
        return real(matrix, *args, **kwargs)
    monkeypatch.setattr(spectra, name, spy)
    return seen


def orthogonal_gates(module, gates):
    """Each gate block of every ``weight_hh`` made orthogonal (a common init; a cluster of
    singular values that the fast route gives up on)."""
    size = module.hidden_size
    with torch.no_grad():
        for name, weight in module.named_parameters():
            if name.startswith("weight_hh"):
                for gate in range(gates):
                    torch.nn.init.orthogonal_(weight[gate * size:(gate + 1) * size])
    return module


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
    seen = watch_calls(monkeypatch, "block_summary", lambda matrix: (
        tuple(matrix.shape), threading.current_thread().name, torch.get_num_threads()))
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


@needs_openmp
def test_threads_started_during_the_computation_get_the_usual_count(two_threads, monkeypatch):
    # the workers' share is set through the process-wide start count: it is written back once
    # every worker holds its own, so other threads of the program never inherit it
    seen = watch_calls(monkeypatch, "block_summary",
                       lambda matrix: (torch.get_num_threads(), count_in_a_new_thread()))
    torch.manual_seed(4)
    spectra_of_parts(jobs_of(torch.nn.GRU(4, 260), "GRU"))
    assert seen and all(pair == (1, 2) for pair in seen)


@needs_openmp
def test_a_start_count_unlike_the_callers_is_left_as_it_was(two_threads):
    # another thread of the program set 1 for threads started from now on; this one keeps 2
    thread = threading.Thread(target=torch.set_num_threads, args=(1,))
    thread.start()
    thread.join()
    try:
        assert count_in_a_new_thread() == 1
        torch.manual_seed(5)
        spectra_of_parts(jobs_of(torch.nn.RNN(4, 260, bidirectional=True), "RNN_TANH"))
        assert count_in_a_new_thread() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(2)


@needs_openmp
def test_the_threads_are_all_handed_out(monkeypatch):
    before = torch.get_num_threads()
    seen = watch_calls(monkeypatch, "block_summary",
                       lambda matrix: (threading.current_thread().name, torch.get_num_threads()))
    torch.set_num_threads(3)
    try:
        torch.manual_seed(6)
        spectra_of_parts(jobs_of(torch.nn.RNN(4, 260, bidirectional=True), "RNN_TANH"))
    finally:
        torch.set_num_threads(before)
    assert sorted(count for _, count in seen) == [1, 2]  # two workers, 3 threads


@needs_openmp
def test_blocks_the_fast_route_gives_up_on_go_to_lapack_in_the_caller(two_threads, monkeypatch):
    # orthogonal weights (a common init) are a cluster no Krylov method resolves: LAPACK, whose
    # numpy thread pool a worker's share does not size, so it runs after the workers
    where = watch_calls(monkeypatch, "block_spectrum",
                        lambda matrix: threading.current_thread().name)
    torch.manual_seed(7)
    gru = orthogonal_gates(torch.nn.GRU(4, 260, bidirectional=True), gates=3)
    jobs = jobs_of(gru, "GRU")
    parallel = spectra_of_parts(jobs)
    assert where and set(where) == {threading.current_thread().name}
    serial = spectra_of_parts(jobs, parallel=False)
    for (rows, values), (rows_s, values_s) in zip(parallel, serial):
        for row, row_s in zip(rows, rows_s):
            for key in VALUES:
                assert row[key] == pytest.approx(row_s[key], rel=1e-7, nan_ok=True), key
        assert [v["gate"] for v in values] == [v["gate"] for v in values_s]
        assert "r" in [v["gate"] for v in values]  # the orthogonal gates kept full spectra


@needs_openmp
def test_an_error_cancels_the_blocks_still_queued(two_threads, monkeypatch):
    calls = []
    real = spectra.block_summary

    def failing_first(matrix, *args, **kwargs):
        calls.append(matrix.shape)
        if len(calls) == 1:
            raise RuntimeError("first block failed")
        time.sleep(0.05)
        return real(matrix, *args, **kwargs)
    monkeypatch.setattr(spectra, "block_summary", failing_first)
    torch.manual_seed(8)
    jobs = jobs_of(torch.nn.GRU(4, 260, num_layers=2, bidirectional=True), "GRU")  # 16 blocks
    with pytest.raises(RuntimeError, match="first block failed"):
        spectra_of_parts(jobs)
    assert len(calls) < 8
    assert count_in_a_new_thread() == 2


def finishes_within(seconds, fn):
    """``fn()``'s outcome ("returned" or the exception) if it ends within ``seconds``, else
    "hung" (the call is left running on a daemon thread)."""
    outcome = []

    def run():
        try:
            fn()
            outcome.append("returned")
        except BaseException as error:  # noqa: B902 - whatever it was, it is the outcome
            outcome.append(error)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    return outcome[0] if outcome else "hung"


class LateWakingBarrier(threading.Barrier):
    """The start barrier as a worker the scheduler wakes late sees it: that worker passes with
    the others, then finds the barrier broken (the caller, done with an error by then, had
    aborted it). A worker's initializer that raised then made CPython's pool drain its queue,
    wake-up included: shutdown waited forever."""

    def wait(self, timeout=None):
        index = super().wait(timeout)
        if threading.current_thread().name.endswith("_1"):
            raise threading.BrokenBarrierError
        return index


@needs_openmp
@pytest.mark.parametrize("first_block_fails", [False, True])
def test_a_worker_woken_after_the_barrier_broke_neither_hangs_nor_loses_blocks(
        two_threads, monkeypatch, first_block_fails):
    monkeypatch.setattr(spectra_parallel.threading, "Barrier", LateWakingBarrier)
    real = spectra.block_summary
    calls = []

    def summary(matrix, *args, **kwargs):
        calls.append(1)
        if first_block_fails and len(calls) == 1:
            raise RuntimeError("first block failed")
        return real(matrix, *args, **kwargs)
    monkeypatch.setattr(spectra, "block_summary", summary)
    torch.manual_seed(9)
    jobs = jobs_of(torch.nn.RNN(4, 260, bidirectional=True), "RNN_TANH")
    outcome = finishes_within(60, lambda: spectra_of_parts(jobs))
    if first_block_fails:
        assert isinstance(outcome, RuntimeError) and "first block failed" in str(outcome)
    else:
        assert outcome == "returned"
    assert not [t for t in threading.enumerate() if t.name.startswith("gradscope-spectra")]


@needs_openmp
def test_an_error_before_the_workers_have_started_lets_them_go(two_threads, monkeypatch):
    real = spectra.shares_grams
    seen = []

    def failing_second(blocks, full):
        seen.append(1)
        if len(seen) == 2:
            raise RuntimeError("second part could not be queued")
        return real(blocks, full)
    monkeypatch.setattr(spectra, "shares_grams", failing_second)
    torch.manual_seed(10)
    jobs = jobs_of(torch.nn.GRU(4, 260, bidirectional=True), "GRU")
    start = time.perf_counter()
    outcome = finishes_within(60, lambda: spectra_of_parts(jobs))
    assert isinstance(outcome, RuntimeError) and "could not be queued" in str(outcome)
    assert time.perf_counter() - start < 30  # the workers were released, not timed out (60 s)
    assert not [t for t in threading.enumerate() if t.name.startswith("gradscope-spectra")]
    assert count_in_a_new_thread() == 2


@needs_openmp
def test_an_rnn_block_given_up_on_goes_to_lapack_once(two_threads, monkeypatch):
    calls = watch_calls(monkeypatch, "block_spectrum", lambda matrix: tuple(matrix.shape))
    torch.manual_seed(11)
    rnn = orthogonal_gates(torch.nn.RNN(4, 260, bidirectional=True), gates=1)
    results = spectra_of_parts(jobs_of(rnn, "RNN_TANH"))
    assert calls == [(260, 260)] * 2  # one per direction, for "hh" and "all" together
    for rows, values in results:
        assert [row["gate"] for row in rows] == ["hh", "all"]
        assert rows[0]["sigma_max"] == pytest.approx(1.0, rel=1e-6)
        assert [v["gate"] for v in values] == ["hh", "all"]
