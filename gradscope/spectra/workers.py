"""Spectra of a step's weight blocks on CPU worker threads.

The fast route of ``gradscope.spectra`` alternates dense products, which keep every torch thread
busy, with many small Krylov operations, which leave all but one core idle. On two cores a
serial run loses 10 to 17 % to those idle stretches. Run as several blocks at once, each worker on
its share of the threads, one block's small operations overlap another's products
(``benchmarks/spectra_cost.py --serial`` shows the difference). The unit of work is a block,
not a layer-direction, so that a single LSTM layer keeps two cores busy too.

Thread counts: with torch's OpenMP backend every thread has its own count (OpenMP's and MKL's),
set up from a process-wide start count on the thread's first torch call; other backends share
one pool and get no workers. A worker sets its share, which also writes the start count, so
worker start-up runs under a lock, and the start count found before is written back once every
worker holds its own, before any block begins (from a short-lived thread: the caller's own count
is never touched). Only a thread of the program started in those milliseconds inherits a share.
Blocks the fast route cannot vouch for go to LAPACK after the workers are done: numpy's LAPACK
keeps its own thread pool, which a worker's share does not size.
"""

import queue
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

from gradscope.spectra import blocks as sp

# one pool start at a time: each changes the start count of new threads for a moment
_STARTUP = threading.Lock()
# how long a worker waits for the others to start before giving up
_START_TIMEOUT_S = 60


def _takes_fast_route(job, full):
    """Whether a part's gate blocks are large enough for the fast route (the only route whose
    small operations leave cores idle)."""
    w_hh, w_hr = job["weights"].get("w_hh"), job["weights"].get("w_hr")
    if w_hh is None or w_hh.device.type != "cpu":
        return False
    size = w_hr.shape[0] if w_hr is not None else w_hh.shape[1]  # gate maps are size x size
    return not sp._wants_full((size, size), full)


def _per_thread_counts():
    """Whether each thread can have its own torch thread count: torch's OpenMP backend (the
    native one has one shared pool, sized once)."""
    return "parallel backend: OpenMP" in torch.__config__.parallel_info()


def _in_new_thread(fn, *args):
    """``fn(*args)`` run on a short-lived thread: torch thread counts seen or set there are the
    process-wide start count, not the caller's own."""
    box = []
    thread = threading.Thread(target=lambda: box.append(fn(*args)))
    thread.start()
    thread.join()
    return box[0]


def _records(job, full):
    return sp.spectra_records(job["step"], job["module"], job["layer"], job["direction"],
                              job["kind"], job["weights"], full=full)


def spectra_of_parts(jobs, full="auto", parallel=True):
    """``spectra.spectra_records`` for each job, in order: a list of ``(rows, values)``.

    ``jobs``: dicts with the keys ``step, module, layer, direction, kind, weights`` (the
    arguments of ``spectra_records``). With ``parallel``, torch's OpenMP backend and two or more
    torch threads in the calling thread, the blocks of the parts that take the fast route on
    CPU run on worker threads (at most one per torch thread, the threads split between them),
    after the other parts have run here in turn; otherwise everything runs here. The values
    agree with a serial run to rounding, within ``spectra.TOLERANCE`` (relative) at worst.
    """
    threads = torch.get_num_threads()
    heavy = [i for i, job in enumerate(jobs) if _takes_fast_route(job, full)]
    if not parallel or threads < 2 or not heavy or not _per_thread_counts():
        return [_records(job, full) for job in jobs]
    parts = {i: sp.recurrent_blocks(jobs[i]["kind"], jobs[i]["weights"], dtype=torch.float64)
             for i in heavy}
    tasks = sum(len(blocks) - 1 for blocks in parts.values())  # a single-gate RNN's is one
    if tasks < 2:
        return [_records(job, full) for job in jobs]
    # the small parts first, on every thread, so that they compete with no worker
    results = [None if i in heavy else _records(job, full) for i, job in enumerate(jobs)]
    summaries = _run_blocks(parts, full, workers=min(threads, tasks), threads=threads)
    for i, by_gate in summaries.items():
        job = jobs[i]
        results[i] = sp.part_records(job["step"], job["module"], job["layer"], job["direction"],
                                     by_gate)
    return results


def _run_blocks(parts, full, workers, threads):
    """``{part: {gate: block_summary}}`` for the parts' blocks, computed on ``workers`` threads
    that share ``threads``; blocks the fast route could not vouch for are then summarised here
    (LAPACK)."""
    shares = queue.SimpleQueue()
    for k in range(workers):  # the remainder goes to the first workers
        shares.put(threads // workers + (1 if k < threads % workers else 0))
    started = threading.Barrier(workers + 1)
    restored = threading.Event()  # the start count is back: blocks may begin

    def start():
        # must never raise: on an initializer error CPython's ThreadPoolExecutor drains its work
        # queue, the shutdown's wake-up for the other workers included, and they wait forever
        torch.get_num_threads()  # set this thread up now: a later first call would reset it
        torch.set_num_threads(shares.get())
        try:
            started.wait(_START_TIMEOUT_S)
        except threading.BrokenBarrierError:
            pass  # the caller gave up before every worker had started: it cancels the blocks
        restored.wait(_START_TIMEOUT_S)  # set by the caller whatever happens

    pool = ThreadPoolExecutor(workers, thread_name_prefix="gradscope-spectra", initializer=start)
    pending, passed = {}, False
    try:
        with _STARTUP:
            start_count = _in_new_thread(torch.get_num_threads)
            try:
                # one submit per worker at least (tasks >= workers): the pool starts them all
                stacked = {}
                for i, blocks in parts.items():
                    pending[i], stacked[i] = _submit_gates(pool, blocks, full)
                # the stacked blocks last: by the time a worker takes one up, the gates whose
                # Grams it sums have long been done, so it seldom waits
                for i, job in stacked.items():
                    if job is not None:
                        name, task = job
                        pending[i][name] = pool.submit(task)
                started.wait(_START_TIMEOUT_S)
                passed = True
            finally:
                try:
                    _in_new_thread(torch.set_num_threads, start_count)
                finally:
                    restored.set()  # even after Ctrl-C here: no worker waits out the timeout
        done = {i: {gate: future.result() for gate, future in by_gate.items()}
                for i, by_gate in pending.items()}
    except BaseException:
        # an error or Ctrl-C: the blocks not yet begun are dropped, the running ones finish
        for by_gate in pending.values():
            for future in by_gate.values():
                future.cancel()
        if not passed:
            # no worker stays waiting for the others; once the barrier has let everyone
            # through, aborting it would break a worker the scheduler had not yet woken
            started.abort()
        raise
    finally:
        pool.shutdown(wait=True)
    for i, by_gate in done.items():
        blocks, redone = dict(parts[i]), {}
        for gate, summary in by_gate.items():
            if summary is None:  # not vouched for on the fast route: LAPACK, on every thread
                matrix = blocks[gate]
                # an RNN's "hh" and "all" are the same matrix: LAPACK once
                key = (matrix.data_ptr(), tuple(matrix.shape), tuple(matrix.stride()))
                if key not in redone:
                    redone[key] = sp.block_summary(matrix, full)
                by_gate[gate] = redone[key]
    return done


def _submit_gates(pool, blocks, full):
    """Queue the gate blocks of one part (``spectra.recurrent_blocks``): returns ``({gate: future
    of block_summary, None where the fast route could not vouch}, stacked)``, where ``stacked``
    is ``(name, task)`` for the caller to queue once every part's gates are (``all`` sums their
    Grams, ``spectra.shares_grams``), or None. The queue is first in, first out, so a worker on
    ``all`` only ever waits for gates already taken up by the others."""
    if not sp.shares_grams(blocks, full):
        # a single-gate RNN: "hh" and "all" are the same matrix, summarised once
        first = pool.submit(sp.block_summary, blocks[0][1], full, fallback=False)
        return {gate: first for gate, _ in blocks}, None
    grams = {}  # gate -> its Gram, written by the gate's worker

    def gate_summary(gate, matrix):
        grams[gate] = sp.gram_matrix(matrix)
        return sp.block_summary(matrix, full=full, gram=grams[gate], fallback=False)

    summaries = {gate: pool.submit(gate_summary, gate, matrix) for gate, matrix in blocks[:-1]}
    gates = list(summaries.values())
    name, stacked = blocks[-1]

    def stacked_summary():
        for future in gates:
            future.result()  # raises the gate's error, if any
        gram = sp.stacked_gram(grams[gate] for gate, _ in blocks[:-1])
        return sp.block_summary(stacked, full=full, gram=gram, fallback=False)

    return summaries, (name, stacked_summary)
