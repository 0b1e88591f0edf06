"""Cost of the spectra of one recorded step (issue 3 target: a 2-layer bidirectional LSTM with
H=1024, 4 layer-directions x (4 gate blocks 1024x1024 + all 4096x1024), in under 2 s on the
2-core CPU).

    python benchmarks/spectra_cost.py                 # fast route ("auto" for H > 256)
    python benchmarks/spectra_cost.py --full-block    # also LAPACK on one gate and on one "all"
    python benchmarks/spectra_cost.py --check         # also fast vs LAPACK on every block
    python benchmarks/spectra_cost.py --serial        # also without worker threads, alternated
    python benchmarks/spectra_cost.py --profile       # where the time goes (cProfile)
    python benchmarks/spectra_cost.py --jacobians GRU --hidden 128 --batch 16 --steps 50
                                                      # cost of jacobians=True for one sequence

Prints wall times (best of --repeat) and the machine load, since the times move with it. Weights
are PyTorch's own initialisation (seeded): the crowded circular-law spectrum, the hard case.
"""

import argparse
import cProfile
import os
import pstats
import time

import numpy as np
import torch

from gradscope.spectra import jacobians as jac
from gradscope.cells import module_weights, step_function
from gradscope.spectra.blocks import block_spectrum, recurrent_blocks
from gradscope.spectra.workers import spectra_of_parts

COLUMNS = ("sigma_max", "sigma_min", "spectral_radius", "stable_rank", "frobenius")


def parts(lstm):
    for layer in range(lstm.num_layers):
        for direction in ("forward", "reverse"):
            yield layer, direction, module_weights(lstm, layer, direction)


def one_step(lstm, full, parallel=True):
    """What a recorded step does: the spectra of every layer-direction (on worker threads where
    that pays, as gradscope.capture.measure runs them)."""
    jobs = [{"step": 0, "module": "lstm", "layer": layer, "direction": direction, "kind": "LSTM",
             "weights": weights} for layer, direction, weights in parts(lstm)]
    rows, values = [], []
    for r, v in spectra_of_parts(jobs, full=full, parallel=parallel):
        rows += r
        values += v
    return rows, values


def best_of(repeat, fn):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), times, result


def jacobian_cost(kind, hidden, batch, steps, repeat):
    """Time the three parts of ``jacobians=True`` for one layer over one sequence."""
    torch.manual_seed(0)
    module = {"RNN_TANH": torch.nn.RNN, "GRU": torch.nn.GRU, "LSTM": torch.nn.LSTM}[kind](8, hidden)
    weights = module_weights(module)
    size = 2 * hidden if kind == "LSTM" else hidden
    xw = torch.randn(steps * batch, 8) @ weights["w_ih"].detach().T
    state = torch.randn(steps * batch, size) * 0.5
    step = step_function(kind, {k: v.detach() for k, v in weights.items() if v is not None})
    with torch.no_grad():
        state = step(xw, state)  # a state the cell can produce
    timing = {}
    timing["state_jacobians"], _, found = best_of(
        repeat, lambda: jac.state_jacobians(kind, weights, xw, state))
    timing["spectral_norms"], _, _ = best_of(repeat, lambda: jac.spectral_norms(found))
    pieces = list(found.split(batch))
    timing["lyapunov"], _, _ = best_of(repeat, lambda: jac.lyapunov_spectrum(pieces))
    print(f"jacobians=True, {kind} H={hidden} (state {size}), batch {batch} x {steps} steps: "
          + ", ".join(f"{k} {v:.2f} s" for k, v in timing.items())
          + f"; total {sum(timing.values()):.2f} s; load average {os.getloadavg()}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full-block", action="store_true")
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--serial", action="store_true", help="also time the layer-directions "
                        "one after another (no worker threads), alternated with the default")
    parser.add_argument("--jacobians", metavar="KIND", help="RNN_TANH, GRU or LSTM: time the "
                        "Jacobian measurements instead of the spectra")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    if args.jacobians:
        jacobian_cost(args.jacobians, args.hidden, args.batch, args.steps, args.repeat)
        return

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(8, args.hidden, num_layers=args.layers, bidirectional=True).to(args.device)
    print(f"LSTM H={args.hidden} layers={args.layers} bidirectional on {args.device}; "
          f"torch threads {torch.get_num_threads()}; load average {os.getloadavg()}")
    one_step(lstm, "auto")  # warm-up (first LAPACK calls, thread pools)
    # the serial run is the baseline, alternated with the default in the same process: the
    # machine's speed drifts by +-25 % over minutes, their ratio much less
    times = {"default": [], "serial": []}
    for _ in range(args.repeat):
        for name, parallel in (("default", True), ("serial", False)):
            if name == "serial" and not args.serial:
                continue
            start = time.perf_counter()
            rows, values = one_step(lstm, "auto", parallel=parallel)
            times[name].append(time.perf_counter() - start)
    for name, runs in times.items():
        if runs:
            print(f"spectra of one step, {name} ({len(rows)} blocks, {len(values)} by LAPACK): "
                  f"best {min(runs):.2f} s, median {float(np.median(runs)):.2f} s; runs "
                  + ", ".join(f"{t:.2f}" for t in runs))
    if args.serial:
        print(f"default / serial: best {min(times['default']) / min(times['serial']):.2f}, "
              f"median {np.median(times['default']) / np.median(times['serial']):.2f}")
    print(f"load average {os.getloadavg()}")
    best = min(times["default"])

    if args.full_block:
        weights = module_weights(lstm, 0, "forward")
        blocks = dict(recurrent_blocks("LSTM", weights, dtype=torch.float64))
        gate_time, _, _ = best_of(1, lambda: block_spectrum(blocks["i"]))
        all_time, _, _ = best_of(1, lambda: block_spectrum(blocks["all"]))
        per_step = 2 * args.layers * (4 * gate_time + all_time)
        print(f"LAPACK full route: one gate {gate_time:.2f} s, one 'all' {all_time:.2f} s, so "
              f"about {per_step:.1f} s per step; fast/full = {best / per_step:.3f}")

    if args.check:
        worst = {key: 0.0 for key in COLUMNS}
        exact_rows, _ = one_step(lstm, True)
        for fast_row, exact_row in zip(rows, exact_rows):
            for key in COLUMNS:
                a, b = fast_row[key], exact_row[key]
                if not (np.isnan(a) and np.isnan(b)):
                    worst[key] = max(worst[key], abs(a - b) / abs(b))
        print("largest relative difference fast vs LAPACK: "
              + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))

    if args.profile:
        profile = cProfile.Profile()
        profile.enable()
        one_step(lstm, "auto")
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
