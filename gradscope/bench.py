"""Overhead of watching, as ratios against the unwatched model measured in the same run.

Machines are shared and noisy, so only ratios are printed (median of interleaved repeats),
never absolute speed claims; nothing here is asserted in tests.
"""

import statistics
import time

import torch
import torch.nn as nn

from gradscope.scope import watch

CELLS = {"RNN": nn.RNN, "GRU": nn.GRU, "LSTM": nn.LSTM}


def _time(fn, repeats):
    fn()  # warm up
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def measure(cell="LSTM", hidden=128, steps=100, batch=32, layers=1, repeats=5, device="cpu", seed=0):
    """Seconds per training step: unwatched (median), watched every step (median), and watched
    every 10th step amortised (the mean over runs of 10 steps, one of them recorded)."""
    torch.manual_seed(seed)
    model = CELLS[cell](16, hidden, num_layers=layers).to(device)
    x = torch.randn(steps, batch, 16, device=device)

    def one_step():
        model.zero_grad(set_to_none=True)
        out, _ = model(x)
        out.pow(2).mean().backward()
        if device != "cpu":
            torch.cuda.synchronize()

    plain, every1, every10 = [], [], []
    for _ in range(repeats):  # interleave so drift hits all three alike
        plain += _time(one_step, 1)
        with watch(model, every=1):
            every1 += _time(one_step, 1)
        with watch(model, every=10):
            one_step()  # step 0 (recorded) as warm-up; the 10 timed steps hold step 10, recorded
            start = time.perf_counter()
            for _ in range(10):
                one_step()
            every10.append((time.perf_counter() - start) / 10)
    base = statistics.median(plain)
    return {
        "cell": cell, "hidden": hidden, "steps": steps, "batch": batch, "layers": layers, "device": device,
        "plain_s": base,
        "every1_ratio": statistics.median(every1) / base,
        "every10_ratio": statistics.median(every10) / base,
    }


def run(cells=("RNN", "GRU", "LSTM"), printer=print, **kwargs):
    printer(f"{'cell':5} {'H':>5} {'T':>5} {'B':>4} {'plain ms':>9} {'every=1':>9} {'every=10':>9}")
    rows = []
    for cell in cells:
        row = measure(cell, **kwargs)
        rows.append(row)
        printer(f"{cell:5} {row['hidden']:5d} {row['steps']:5d} {row['batch']:4d} {row['plain_s'] * 1e3:9.1f} "
                f"{row['every1_ratio']:8.2f}x {row['every10_ratio']:8.2f}x")
    printer("ratios: time of a watched training step / the same step unwatched, same run "
            "(every=1: median step; every=10: mean over 10 steps, one recorded)")
    return rows
