"""Spectra of several layer-directions at once, on CPU threads.

The fast route of ``gradscope.spectra`` alternates dense products, which keep every torch thread
busy, with many small Krylov operations, which leave all but one core idle. On two cores a
serial run loses 10-15 % to those idle stretches. Run as several parts at once, each worker on
its share of the threads, one part's small operations overlap another's products
(``benchmarks/spectra_cost.py --serial`` shows the difference).

Each worker sets its own thread count (OpenMP and MKL keep it per thread); the count that new
threads inherit is shared, so it is put back before returning, even after an error.
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


def spectra_of_parts(jobs, full="auto", parallel=True):
    """``spectra.spectra_records`` for each job, in order: a list of ``(rows, values)``.

    ``jobs``: dicts with the keys ``step, module, layer, direction, kind, weights`` (the
    arguments of ``spectra_records``). With ``parallel`` and two or more parts on the fast route
    on CPU, those run on worker threads (at most one per torch thread, the threads split between
    them), after the others have run here in turn; with a single torch thread all run here. Results
    do not depend on the split beyond rounding: every fast-route value is vouched for to
    ``spectra.TOLERANCE``.
    """
    def run(job):
        return sp.spectra_records(job["step"], job["module"], job["layer"], job["direction"],
                                  job["kind"], job["weights"], full=full)

    threads = torch.get_num_threads()
    heavy = [i for i, job in enumerate(jobs) if _takes_fast_route(job, full)]
    if not parallel or threads < 2 or len(heavy) < 2:
        return [run(job) for job in jobs]
    workers = min(len(heavy), threads)
    share = max(1, threads // workers)

    def start():
        torch.set_num_threads(share)

    # the small parts first, on every thread, so that they compete with no worker
    results = [None if i in heavy else run(job) for i, job in enumerate(jobs)]
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="gradscope-spectra",
                                initializer=start) as pool:
            futures = {i: pool.submit(run, jobs[i]) for i in heavy}
            for i, future in futures.items():
                results[i] = future.result()
    finally:
        # the workers changed the count that new threads start with: this thread's is unchanged
        torch.set_num_threads(threads)
    return results
