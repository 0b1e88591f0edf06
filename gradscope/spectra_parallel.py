"""Spectra of a step's weight blocks on CPU worker threads.

The fast route of ``gradscope.spectra`` alternates dense products, which keep every torch thread
busy, with many small Krylov operations, which leave all but one core idle. On two cores a
serial run loses 10-15 % to those idle stretches. Run as several blocks at once, each worker on
its share of the threads, one block's small operations overlap another's products
(``benchmarks/spectra_cost.py --serial`` shows the difference). The unit of work is a block,
not a layer-direction, so that a single LSTM layer keeps two cores busy too.

Each worker sets its own thread count (with torch's OpenMP backend, OpenMP and MKL keep it per
thread; other backends share one pool, so they get no workers); the count that new threads
inherit is shared, so it is put back before returning, even after an error.
"""

from concurrent.futures import ThreadPoolExecutor

import torch

from gradscope import spectra as sp


def _takes_fast_route(job, full):
    """Whether a part's gate blocks are large enough for the fast route (the only route with
    idle cores to fill: LAPACK's full route keeps its own threads busy)."""
    w_hh, w_hr = job["weights"].get("w_hh"), job["weights"].get("w_hr")
    if w_hh is None or w_hh.device.type != "cpu":
        return False
    size = w_hr.shape[0] if w_hr is not None else w_hh.shape[1]  # gate maps are size x size
    return not sp._wants_full((size, size), full)


def _per_thread_counts():
    """Whether each thread can have its own torch thread count: torch's OpenMP backend (the
    native one has one shared pool, sized once)."""
    return "parallel backend: OpenMP" in torch.__config__.parallel_info()


def _records(job, full):
    return sp.spectra_records(job["step"], job["module"], job["layer"], job["direction"],
                              job["kind"], job["weights"], full=full)


def spectra_of_parts(jobs, full="auto", parallel=True):
    """``spectra.spectra_records`` for each job, in order: a list of ``(rows, values)``.

    ``jobs``: dicts with the keys ``step, module, layer, direction, kind, weights`` (the
    arguments of ``spectra_records``). With ``parallel``, the blocks of the parts that take the
    fast route on CPU run on worker threads (at most one per torch thread, the threads split
    between them), after the other parts have run here in turn; with a single torch thread
    everything runs here. Results do not depend on the split beyond rounding: every fast-route
    value is vouched for to ``spectra.TOLERANCE``.
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
    workers = min(threads, tasks)
    share = max(1, threads // workers)

    def start():
        torch.set_num_threads(share)

    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="gradscope-spectra",
                                initializer=start) as pool:
            pending = {i: _submit_part(pool, blocks, full) for i, blocks in parts.items()}
            for i, summaries in pending.items():
                job = jobs[i]
                results[i] = sp.part_records(job["step"], job["module"], job["layer"],
                                             job["direction"],
                                             {gate: f.result() for gate, f in summaries.items()})
    finally:
        # the workers changed the count that new threads start with: this thread's is unchanged
        torch.set_num_threads(threads)
    return results


def _submit_part(pool, blocks, full):
    """Queue the blocks of one part (``spectra.recurrent_blocks``): ``{gate: future of
    block_summary}``. The gates first, then ``all``, which sums their Grams
    (``spectra.shares_grams``): the queue is first in, first out, so a worker on ``all`` only
    ever waits for gates already taken up by the others."""
    if not sp.shares_grams(blocks, full):
        # a single-gate RNN: "hh" and "all" are the same matrix, summarised once
        first = pool.submit(sp.block_summary, blocks[0][1], full)
        return {gate: first for gate, _ in blocks}
    grams = {}  # gate -> its Gram, written by the gate's worker

    def gate_summary(gate, matrix):
        grams[gate] = sp.gram_matrix(matrix)
        return sp.block_summary(matrix, full=full, gram=grams[gate])

    summaries = {gate: pool.submit(gate_summary, gate, matrix) for gate, matrix in blocks[:-1]}
    gates = list(summaries.values())

    def stacked_summary(matrix):
        for future in gates:
            future.result()  # raises the gate's error, if any
        return sp.block_summary(matrix, full=full,
                                gram=sp.stacked_gram(grams[gate] for gate, _ in blocks[:-1]))

    name, stacked = blocks[-1]
    summaries[name] = pool.submit(stacked_summary, stacked)
    return summaries
