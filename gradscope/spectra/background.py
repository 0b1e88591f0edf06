"""Weight spectra off the training thread: one background thread, jobs in step order.

A recorded step hands over a copy of the weights it used (``capture.measure.spectra_job``);
this thread computes the spectra from that copy, one job after another, and hands each result
to ``deliver`` in submission order. It runs ``spectra_of_parts`` serially with one torch thread
of its own, so it never starts the worker threads of ``gradscope.spectra.workers`` and never changes the
thread counts of the training threads (a thread's count is its own under torch's OpenMP backend;
setting it also writes the process-wide start count, which is read first and written back, under
the same lock ``gradscope.spectra.workers`` uses).

Nothing is skipped: ``wait()`` returns once every job submitted so far is delivered. At most
``MAX_PENDING`` jobs wait (each holds a copy of a step's weights): when the thread falls that far
behind, ``submit`` waits for it rather than drop a step or let memory grow without bound. An
error in a job (or in ``deliver``) is kept, and ``take_errors()`` hands it over to be reported.
"""

import queue
import threading

import torch

from gradscope.spectra import workers as spectra_parallel

_STOP = object()
MAX_PENDING = 4


class BackgroundSpectra:
    """One daemon thread computing submitted jobs in order (started on the first submit)."""

    def __init__(self, deliver):
        """``deliver(number, result)`` is called on the background thread, in submission order,
        with what ``job()`` returned."""
        self._deliver = deliver
        self._queue = queue.Queue(maxsize=MAX_PENDING)
        self._thread = None
        self._errors = []
        self._lock = threading.Lock()

    def submit(self, number, job):
        """Queue ``job`` (a function of no arguments) for step ``number`` (waits while
        ``MAX_PENDING`` jobs are queued)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="gradscope-spectra-background", daemon=True)
            self._thread.start()
        self._queue.put((number, job))

    def pending(self):
        """How many jobs are queued or running."""
        return self._queue.unfinished_tasks

    def wait(self):
        """Return once every job submitted so far has been delivered (or has failed)."""
        if self._thread is not None:
            self._queue.join()

    def take_errors(self):
        """``[(step number, exception), ...]`` of the jobs that failed since the last call."""
        with self._lock:
            errors, self._errors = self._errors, []
        return errors

    def close(self):
        """Finish every job, then end the thread."""
        if self._thread is None:
            return
        self._queue.put((None, _STOP))
        self._thread.join()
        self._thread = None

    def _run(self):
        _one_torch_thread()
        while True:
            number, job = self._queue.get()
            try:
                if job is _STOP:
                    return
                self._deliver(number, job())
            except BaseException as err:  # kept and reported at the next table read or stop
                with self._lock:
                    self._errors.append((number, err))
            finally:
                self._queue.task_done()


def _one_torch_thread():
    """This thread computes with one torch thread, leaving the cores to training, without
    changing the count new threads start with (nor any other thread's)."""
    if not spectra_parallel._per_thread_counts():
        return  # torch's native pool is shared by all threads: leave it alone
    with spectra_parallel._STARTUP:
        start_count = spectra_parallel._in_new_thread(torch.get_num_threads)
        torch.get_num_threads()  # set this thread up now: a later first call would reset it
        torch.set_num_threads(1)
        spectra_parallel._in_new_thread(torch.set_num_threads, start_count)
