"""The training steps ``gradscope bench`` times, and how it times them and measures their memory.

One training step is forward, loss, backward and ``optimizer.step()``. Each case gets its own copy
of the model (same initial weights) and optimizer, so a scope left open for one case never
touches another's model.
"""

import contextlib
import copy
import os
import sys
import time

import torch
import torch.nn as nn

CELLS = {"RNN": nn.RNN, "GRU": nn.GRU, "LSTM": nn.LSTM}
_VF_CELLS = {"RNN": "rnn_tanh_cell", "GRU": "gru_cell", "LSTM": "lstm_cell"}


def make_model(cell, hidden, layers, device, seed):
    """A stock module with input size = hidden (as in a stacked layer), seeded."""
    torch.manual_seed(seed)
    return CELLS[cell](hidden, hidden, num_layers=layers).to(device)


class TrainingStep:
    """``step()`` runs one training step of its own copy of ``model`` on ``x``; ``forward`` is
    the model's own call or, for the hand-written baseline, a cell loop with ``retain_grad()``."""

    def __init__(self, model, x, hand_written=False):
        self.model = copy.deepcopy(model)
        self.x = x
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-4)
        self.forward = self._cell_loop if hand_written else (lambda: self.model(self.x)[0])

    def step(self):
        self.optimizer.zero_grad(set_to_none=True)
        self.forward().pow(2).mean().backward()
        self.optimizer.step()

    def _cell_loop(self):
        """What users write today to see dL/dh_t: the stock cell op per time step, every state
        kept with ``retain_grad()`` (its ``.grad`` is the total gradient)."""
        m = self.model
        kind = type(m).__name__
        cell = getattr(torch._VF, _VF_CELLS[kind])
        layer_in = self.x.unbind(0)
        for layer in range(m.num_layers):
            weights = [getattr(m, f"{n}_l{layer}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            h = self.x.new_zeros(self.x.shape[1], m.hidden_size)
            c = torch.zeros_like(h)
            outs = []
            for x_t in layer_in:
                if kind == "LSTM":
                    h, c = cell(x_t, (h, c), *weights)
                    c.retain_grad()
                else:
                    h = cell(x_t, h, *weights)
                h.retain_grad()
                outs.append(h)
            layer_in = outs
        return torch.stack(layer_in)


def minor_faults():
    """Minor page faults of this process so far (first writes to fresh pages), or None where the
    platform does not count them (no ``resource`` module)."""
    try:
        import resource
    except ImportError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class Timer:
    """Seconds of one call: ``perf_counter`` on the CPU, CUDA events (no host sync inside the
    step; one synchronize after it) on a GPU."""

    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"

    def __call__(self, fn):
        if not self.cuda:
            start = time.perf_counter()
            fn()
            return time.perf_counter() - start
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        fn()
        end.record()
        end.synchronize()
        return begin.elapsed_time(end) / 1e3


def peak_bytes(fn, device, method=None):
    """Peak memory allocated while ``fn`` runs, above what was allocated before it.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU on Linux: the process's peak resident set
    (``VmHWM``) reset just before (``/proc/self/clear_refs``), after returning freed heap to the
    system (``malloc_trim``), so it counts every allocation, the ones made inside custom
    autograd Functions' backward included. Elsewhere: the torch profiler's memory records
    (``profile_memory=True``), which miss allocations freed by Python code inside an op (a custom
    Function's backward): read that number as a lower bound. ``method="profiler"`` forces the
    latter (the resident peak cannot see a step smaller than a few pages)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    peak = _resident_peak(fn) if method != "profiler" else None
    return peak if peak is not None else _profiled_peak(fn)


def memory_method(device, method=None):
    """How ``peak_bytes`` measures on ``device``, in words for the table's footnote."""
    if torch.device(device).type == "cuda":
        return "torch.cuda.max_memory_allocated"
    if method != "profiler" and _can_reset_resident_peak():
        return "peak resident set (VmHWM) of the process, reset before the step"
    return "torch profiler memory records (tensors only; a lower bound)"


def _can_reset_resident_peak():
    return sys.platform.startswith("linux") and os.access("/proc/self/clear_refs", os.W_OK)


def _status_bytes(key):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    return None


def _resident_peak(fn):
    if not _can_reset_resident_peak():
        return None
    import ctypes
    import gc

    try:
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # reset VmHWM to the current resident set
        before = _status_bytes("VmRSS:")
    except OSError:
        return None
    fn()
    return max(0, _status_bytes("VmHWM:") - before)


def _profiled_peak(fn):
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    running = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        running += event.self_cpu_memory_usage
        peak = max(peak, running)
    return peak


@contextlib.contextmanager
def _quiet_stderr():
    """The profiler's C++ side prints start/stop lines to file descriptor 2: send them nowhere
    (exceptions still reach the caller; they are printed after this)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def spectra_seconds(model, device, repeat=3):
    """Seconds (median of ``repeat``) that the weight spectra of one recorded step of ``model``
    take: the same function a scope calls at step close, on a copy of the recurrent weights."""
    from gradscope.cells import cell_kind, module_weights
    from gradscope.spectra.workers import spectra_of_parts

    kind = cell_kind(model)
    directions = ("forward", "reverse")[:2 if model.bidirectional else 1]
    jobs = [{"step": 0, "module": "", "layer": layer, "direction": direction, "kind": kind,
             "weights": {k: v.detach().clone() for k, v in module_weights(model, layer, direction).items()
                         if k in ("w_hh", "w_hr") and v is not None}}
            for layer in range(model.num_layers) for direction in directions]
    timer = Timer(device)
    return sorted(timer(lambda: spectra_of_parts(jobs)) for _ in range(repeat))[repeat // 2]
