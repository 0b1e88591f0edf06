"""Scale of a watched run: one step of T=10,000 time steps, and many recorded steps streamed to a
run folder with a small model. Each case runs in this (fresh) process, so its peak memory is its own.

    python benchmarks/watch_scale.py long --kind RNN_TANH --out /tmp/long    # T=10,000, one step
    python benchmarks/watch_scale.py stream --steps 10000 --out /tmp/stream  # the README figures

Prints one JSON line: seconds, peak resident memory above the baseline (after imports, the model
and one small watched warm-up step), and for ``stream`` the memory held after the run and the
bytes per recorded step on disk. tests/reliability/test_scale.py runs both and bounds them.
"""

import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import torch

import gradscope

MIB = 1 << 20
# ru_maxrss is in KiB on Linux, bytes on macOS
_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024

HIDDEN = 8
DECAY = 0.9995  # per-step factor of the long case's oracle


def peak_rss():
    """Peak resident set size of this process so far, in bytes."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _MAXRSS_UNIT


def current_rss():
    """Resident set size now, in bytes (the peak where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return peak_rss()


def oracle_model(kind):
    """A model whose gradient decays by exactly DECAY per step back: an RNN in its linear regime
    (zero input and state, so tanh' = 1) with W_hh = DECAY * Q, Q orthogonal; a GRU or an LSTM
    whose only weights are biases (W_hh = 0), so the state is carried back only through the
    update gate z = DECAY (GRU: h_t = (1 - z) n + z h_(t-1)) or the forget gate f = DECAY (the
    LSTM's cell state; its h is not carried at all)."""
    torch.manual_seed(0)
    if kind == "RNN_TANH":
        model = torch.nn.RNN(1, HIDDEN, bias=False)
        with torch.no_grad():
            q, _ = torch.linalg.qr(torch.randn(HIDDEN, HIDDEN, dtype=torch.float64))
            model.weight_hh_l0.copy_(DECAY * q)
            model.weight_ih_l0.zero_()
        return model
    gate = torch.logit(torch.tensor(DECAY, dtype=torch.float64)).item()  # sigmoid(gate) = DECAY
    if kind == "GRU":
        model = torch.nn.GRU(1, HIDDEN)
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
            model.bias_ih_l0[HIDDEN:2 * HIDDEN].fill_(gate)  # update gate z
            model.bias_ih_l0[2 * HIDDEN:].fill_(0.5)  # n = tanh(0.5): h moves off 0
        return model
    model = torch.nn.LSTM(1, HIDDEN)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.bias_ih_l0[HIDDEN:2 * HIDDEN].fill_(gate)  # forget gate f
        # a small cell input: c rises towards i*g/(1-f) = 0.5 and tanh(c) stays far from saturation
        model.bias_ih_l0[2 * HIDDEN:3 * HIDDEN].fill_(5e-4)
    return model


def oracle_step(model, steps, batch=2):
    """One forward and backward: the loss reads only the last output."""
    x = torch.zeros(steps, batch, 1)
    out, _ = model(x)
    weights = torch.linspace(1.0, 2.0, batch * HIDDEN).reshape(batch, HIDDEN)
    (out[-1] * weights).sum().backward()


def run_long(kind, steps, out):
    model = oracle_model(kind)
    with gradscope.watch(model):  # warm-up: lazy imports, first-call allocations
        oracle_step(model, 5)
    base = peak_rss()
    start = time.perf_counter()
    with gradscope.watch(model, run_dir=out):
        oracle_step(model, steps)
    seconds = time.perf_counter() - start
    peak = peak_rss() - base
    start = time.perf_counter()  # after the watched step, so that its peak is not this one's
    oracle_step(model, steps)
    unwatched = time.perf_counter() - start
    return {"case": "long", "kind": kind, "T": steps, "seconds": seconds, "unwatched_seconds": unwatched,
            "peak_above_baseline_mib": peak / MIB}


def stream_model():
    torch.manual_seed(0)
    return torch.nn.GRU(4, HIDDEN)


def run_stream(steps, out, seq_len=20, batch=4):
    model = stream_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(seq_len, batch, 4)

    def train_step():
        optimizer.zero_grad()
        output, _ = model(x)
        output.pow(2).mean().backward()
        optimizer.step()

    with gradscope.watch(model):  # warm-up, as above
        train_step()
    base_now, base_peak = current_rss(), peak_rss()
    early = None
    start = time.perf_counter()
    with gradscope.watch(model, run_dir=out) as scope:
        for step in range(steps):
            train_step()
            if step + 1 == steps // 2:  # the first few hundred steps of a Scope grow its
                early = current_rss()  # allocations by ~0.5 MiB, then they stay flat
        held = current_rss()
        recorded = scope.steps_seen
    seconds = time.perf_counter() - start
    disk = sum(f.stat().st_size for f in Path(out).iterdir())
    late = steps - steps // 2
    return {"case": "stream", "steps": steps, "recorded": recorded, "seq_len": seq_len, "batch": batch,
            "seconds": seconds, "ms_per_step": 1e3 * seconds / steps,
            "bytes_per_step_on_disk": disk / steps, "disk_mib": disk / MIB,
            "held_mib": (held - base_now) / MIB, "peak_above_baseline_mib": (peak_rss() - base_peak) / MIB,
            "held_growth_bytes_per_step": (held - early) / late if early is not None and late else None}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("case", choices=("long", "stream"))
    parser.add_argument("--kind", default="RNN_TANH", choices=("RNN_TANH", "GRU", "LSTM"))
    parser.add_argument("--steps", type=int, default=10_000, help="T for long, recorded steps for stream")
    parser.add_argument("--out", required=True, help="run folder to write (replaced)")
    args = parser.parse_args(argv)
    shutil.rmtree(args.out, ignore_errors=True)
    result = run_long(args.kind, args.steps, args.out) if args.case == "long" else run_stream(args.steps, args.out)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
