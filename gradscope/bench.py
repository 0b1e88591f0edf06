"""Overhead of watching, as ratios against the unwatched training step measured in the same run.

Machines are shared and noisy, so only ratios are printed, never absolute speed claims, and
nothing here is asserted in tests. Per round every case runs one training step (forward, loss,
backward, ``optimizer.step()``), in an order shuffled anew each round (seeded); a case's ratio in a
round is its time over the plain step's time in the same round, and the printed ratio is the
median over rounds. Rounds continue past the minimum until the median of every ratio is known to
within the tolerance (a distribution-free 95% interval of the median), or the time budget is spent.
"""

import math
import random
import statistics
import time

import torch

from gradscope.bench_steps import (CELLS, Timer, TrainingStep, make_model, memory_method, minor_faults, peak_bytes,
                                   spectra_seconds)
from gradscope.scope import watch
from gradscope.spectra.cadence import AUTO_INTERVAL

SIZES = {  # (batch, hidden, seq_len)
    "default": [(32, 256, 200), (64, 128, 100), (16, 64, 1000)],
    "small": [(4, 8, 12)],
}
EVERY = 16
TIMED = ("exact", "fast", "off", "loop")
__all__ = ["CELLS", "SIZES", "measure", "run", "parse_sizes", "median_interval"]  # plus "plain", the reference of every ratio
NOT_AVAILABLE = "n/a (mode not available)"
# the resident peak of a step varies with what the allocator kept: the median of 5 (the least of 3
# read the plain RNN step at 16x64x1000 as 31.5 MB once and 36-39 MB the other times)
MEMORY_REPEAT = 5
RESOLUTION = 1 << 20  # below a MiB the resident peak says little (pages already held)


def parse_sizes(text):
    """``default``, ``small`` or ``BxHxT[,BxHxT...]`` -> list of (batch, hidden, seq_len).
    Raises ValueError with what to write instead."""
    if text in SIZES:
        return list(SIZES[text])
    sizes = []
    for part in text.split(","):
        pieces = part.strip().lower().split("x")
        try:
            values = tuple(int(p) for p in pieces)
        except ValueError:
            values = ()
        if len(values) != 3 or min(values) < 1:
            raise ValueError(f"--sizes: {part.strip()!r} is not BxHxT with whole numbers >= 1 "
                             f"(e.g. 32x256x200), nor one of {', '.join(SIZES)}")
        sizes.append(values)
    return sizes


def median_interval(values, z=1.96):
    """(median, relative half-width of its ~95% interval), from order statistics (no normality
    assumed); the half-width is inf while there are too few values to bound it."""
    ordered = sorted(values)
    n = len(ordered)
    mid = statistics.median(ordered)
    spread = z * math.sqrt(n) / 2
    low, high = math.floor(n / 2 - spread), math.ceil(n / 2 + spread) - 1
    if low < 0 or high > n - 1 or mid <= 0:
        return mid, math.inf
    return mid, (ordered[high] - ordered[low]) / (2 * mid)


def _never(step):
    """``spectra_every`` of the timed cases: no step's spectra (timed apart, then amortised)."""
    return False


class _Cases:
    """The copies of one model, each with its scope, that one configuration times."""

    def __init__(self, model, x):
        self.steps = {"plain": TrainingStep(model, x), "loop": TrainingStep(model, x, hand_written=True)}
        self.scopes = []
        self.scope_of = {}
        self.fast_error = None
        # spectra left out of the timed steps (they are timed apart: spectra_seconds)
        never = {"spectra_every": _never}
        for name, kwargs in (("exact", {"mode": "exact", **never}), ("fast", {"mode": "fast", **never}),
                             ("off", {"every": EVERY, **never})):
            step = TrainingStep(model, x)
            try:
                scope = watch(step.model, **kwargs)
                scope.start()
            except (TypeError, ValueError, NotImplementedError) as error:  # no such mode here
                if name != "fast":
                    raise
                self.fast_error = f"{type(error).__name__}: {error}"
                continue
            self.steps[name] = step
            self.scopes.append(scope)
            self.scope_of[name] = scope
        self.off_scope = self.scopes[-1]

    def pooled_bytes(self, name):
        """What the case's scope holds in its buffer pool between recorded steps (buffers.py):
        memory its next recorded step uses that is already resident before the step starts, so
        a peak measured from the step's start would leave it out."""
        scope = self.scope_of.get(name)
        return scope._buffers.held_bytes() if scope is not None else 0

    def close(self):
        for scope in self.scopes:
            scope.stop()


def measure(cell, batch, hidden, seq_len, layers=1, device="cpu", repeat=7, max_repeat=30,
            tolerance=0.03, budget_s=60.0, seed=0):
    """Ratios for one cell and size. Returns a dict: the plain step's seconds (median), per case
    the median ratio and its relative 95% half-width, the number of rounds, peak-memory ratios."""
    model = make_model(cell, hidden, layers, device, seed)
    x = torch.randn(seq_len, batch, hidden, device=device)
    cases = _Cases(model, x)
    timer = Timer(device)
    try:
        for step in cases.steps.values():  # warm up; the off-schedule copy's step 0 is recorded
            step.step()
        names = list(cases.steps)
        times = {name: [] for name in names}
        ratios = {name: [] for name in names if name != "plain"}
        ratios["every16"] = []
        # fresh pages touched by the plain and the fast step: the plain step's time depends on them
        # (PyTorch's LSTM at 16x64x1000: ~11,000 a step and 36-56 ms, or none and 24-32 ms, by what
        # the allocator kept from earlier work in the process)
        faults = {name: [] for name in ("plain", "fast") if name in names}
        started = time.perf_counter()
        shuffler = random.Random(seed)
        rounds = 0
        while True:
            # shuffled, not rotated: a rotation keeps every case right after the same other case,
            # whose after-effects (memory it freed, caches it filled) it then always inherits (the
            # off-schedule LSTM step, always after the fast one, read 1.02x-1.05x; shuffled 1.00x)
            order = list(names)
            shuffler.shuffle(order)
            seconds = {}
            for name in order:
                if name == "off" and cases.off_scope.steps_seen % EVERY == 0:
                    cases.steps["off"].step()  # a recorded step of every=16: keep "off" off-schedule
                before = minor_faults()
                seconds[name] = timer(cases.steps[name].step)
                if before is not None and name in faults:
                    faults[name].append(minor_faults() - before)
            rounds += 1
            for name, value in seconds.items():
                times[name].append(value)
                if name != "plain":
                    ratios[name].append(value / seconds["plain"])
            recorded = "fast" if "fast" in seconds else "exact"  # the default route
            if recorded in seconds and "off" in seconds:  # one recorded step in 16, the rest off-schedule
                ratios["every16"].append((seconds[recorded] + (EVERY - 1) * seconds["off"]) / EVERY / seconds["plain"])
            widths = [median_interval(r)[1] for r in ratios.values()]
            if rounds >= repeat and (max(widths) <= tolerance or rounds >= max_repeat
                                     or time.perf_counter() - started > budget_s):
                break
        memory, memory_how = _peak_memory(cases, names, device)
        spectra_s = spectra_seconds(model, device)
    finally:
        cases.close()
    row = {"memory_method": memory_how, "cell": cell, "batch": batch, "hidden": hidden, "seq_len": seq_len, "layers": layers,
           "device": device, "rounds": rounds, "plain_s": statistics.median(times["plain"]),
           "fast_available": cases.fast_error is None, "fast_error": cases.fast_error}
    for name, values in ratios.items():
        row[name], row[f"{name}_halfwidth"] = median_interval(values)
    # spectra_every="auto": one recorded step in AUTO_INTERVAL also pays for the weight spectra
    row["spectra_ratio"] = spectra_s / row["plain_s"]
    for name, share in (("fast", 1 / AUTO_INTERVAL), ("every16", 1 / (EVERY * AUTO_INTERVAL))):
        if name in row:
            row[f"{name}_spectra"] = row[name] + share * row["spectra_ratio"]
            row[f"{name}_spectra_halfwidth"] = row[f"{name}_halfwidth"]
    for name in ("exact", "fast", "loop"):
        row[f"{name}_memory"] = memory[name] / memory["plain"] if name in memory and memory["plain"] else None
    for name in ("plain", "fast"):
        values = faults.get(name)
        row[f"{name}_faults"] = statistics.median(values) if values and torch.device(device).type == "cpu" else None
    return row


def _peak_memory(cases, names, device):
    """Peak bytes of one step per case (the median of MEMORY_REPEAT) and how they were measured:
    the resident peak where it can see the steps (each at least RESOLUTION), else the profiler's;
    a watched case's buffer pool counts in full (its next step uses it)."""
    def one(name, method):
        held = cases.pooled_bytes(name)  # resident before the step, used by it
        return held + peak_bytes(cases.steps[name].step, device, method)

    def measure_all(method):
        return {name: statistics.median(one(name, method) for _ in range(MEMORY_REPEAT))
                for name in names if name != "off"}

    memory = measure_all(None)
    if torch.device(device).type != "cuda" and min(memory.values()) < RESOLUTION:
        return measure_all("profiler"), memory_method(device, "profiler")
    return memory, memory_method(device)


COLUMNS = (("exact", "exact"), ("fast", "fast"), ("fast_spectra", "fast+spectra"),
           ("every16_spectra", f"every={EVERY}"), ("off", "off-sched"), ("loop", "hand loop"))


def _ratio(row, name):
    if name not in row:
        return "n/a"
    width = row[f"{name}_halfwidth"]
    return f"{row[name]:.2f}x" + (f" ±{width:.0%}" if math.isfinite(width) else " ±?")


def _memory(value):
    return "n/a" if value is None else f"{value:.2f}x"


def _faults(value):
    if value is None:
        return "n/a"
    return f"{value / 1000:.1f}k" if value >= 1000 else f"{value:.0f}"


def _print_now(line):
    print(line, flush=True)  # a row as soon as it is measured, also when stdout is a file


def run(cells=("RNN", "GRU", "LSTM"), sizes=None, printer=_print_now, budget_s=60.0, **kwargs):
    """Measure every cell at every size and print one table. ``budget_s`` is shared by all
    configurations (each stops adding rounds past the minimum once its share is spent)."""
    sizes = SIZES["default"] if sizes is None else sizes
    device = kwargs.get("device", "cpu")
    where = torch.cuda.get_device_name(device) if torch.device(device).type == "cuda" else \
        f"cpu, {torch.get_num_threads()} torch threads"
    printer(f"gradscope bench ({where}, torch {torch.__version__}): time of one training step "
            "(forward, backward, optimizer step) / the plain step in the same round; median over rounds, "
            "± the relative half-width of its 95% interval")
    header = f"{'cell':5} {'B':>4} {'H':>5} {'T':>5} {'plain ms':>9} " + \
        " ".join(f"{title:>12}" for _, title in COLUMNS) + f" {'mem exact':>9} {'mem fast':>9} {'mem loop':>9} {'rounds':>6}" + \
        f" {'flt plain':>9} {'flt fast':>9}"
    printer(header)
    rows = []
    share = budget_s / max(1, len(cells) * len(sizes))
    for cell in cells:
        for batch, hidden, seq_len in sizes:
            row = measure(cell, batch, hidden, seq_len, budget_s=share, **kwargs)
            rows.append(row)
            printer(f"{cell:5} {batch:4d} {hidden:5d} {seq_len:5d} {row['plain_s'] * 1e3:9.1f} "
                    + " ".join(f"{_ratio(row, name):>12}" for name, _ in COLUMNS)
                    + f" {_memory(row['exact_memory']):>9} {_memory(row['fast_memory']):>9}"
                    f" {_memory(row['loop_memory']):>9} {row['rounds']:6d}"
                    f" {_faults(row['plain_faults']):>9} {_faults(row.get('fast_faults')):>9}")
    if rows and not rows[0]["fast_available"]:
        printer(f"fast: {NOT_AVAILABLE} ({rows[0]['fast_error']})")
    printer(f"exact, fast: every step recorded, weight spectra left out; fast+spectra: plus the spectra of "
            f"one recorded step in {AUTO_INTERVAL} (spectra_every='auto'), timed apart and amortised; "
            f"every={EVERY}: default settings amortised, (one recorded fast step + {EVERY - 1} off-schedule steps) "
            f"/ {EVERY} per round plus its share of spectra; off-sched: a step that every={EVERY} does not record; "
            "hand loop: the stock cell op per time step with retain_grad() on every state")
    methods = sorted({row["memory_method"] for row in rows}) or [memory_method(device)]
    printer(f"mem: peak memory of one training step / the plain step's ({'; '.join(methods)}; the median of "
            f"{MEMORY_REPEAT} steps; a scope's buffer pool, held between recorded steps, counted in)")
    printer("flt: minor page faults of one plain and one fast step (median; the CPU only): the plain step's time "
            "moves with them, and with it every ratio")
    return rows
