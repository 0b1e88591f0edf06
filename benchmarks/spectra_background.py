"""Weight spectra inline (at step close) against in the background, alternated in one process.

    PYTHONPATH=. python benchmarks/spectra_background.py          # LSTM (B, H, T) = (32, 256, 200)
    PYTHONPATH=. python benchmarks/spectra_background.py --pairs 5 --steps 3 --hidden 128

(PYTHONPATH=. so that a checkout's own gradscope is the one imported.)

Each run trains ``--steps`` recorded steps (every=1, Adam) under ``watch(spectra=...)`` and
times, per step, forward + backward + optimizer.step() (the training thread's critical path),
then the wait for the spectra still pending when training stops (``scope.spectra()``). Runs of
the two modes alternate; the medians and their ratios are printed with the machine load, since
the absolute times move with it (the machine is shared).
"""

import argparse
import os
import statistics
import time

import torch
import torch.nn as nn

import gradscope


def run(mode, model, opt, x, steps):
    step_times = []
    with gradscope.watch(model, spectra=mode) as scope:
        started = time.perf_counter()
        for _ in range(steps):
            t0 = time.perf_counter()
            opt.zero_grad()
            model(x)[0].pow(2).mean().backward()
            opt.step()
            step_times.append(time.perf_counter() - t0)
        trained = time.perf_counter() - started
        scope.spectra()  # waits for the pending spectra
        total = time.perf_counter() - started
    assert sorted(scope.spectra()["step"].unique()) == list(range(steps))
    return step_times, trained, total


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--hidden", type=int, default=256, help="hidden size H (default 256)")
    parser.add_argument("--seq", type=int, default=200, help="sequence length T (default 200)")
    parser.add_argument("--pairs", type=int, default=4, help="alternated runs of each mode (default 4)")
    parser.add_argument("--steps", type=int, default=3, help="recorded steps per run (default 3)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads for training (default 0: torch's own choice); fewer than the cores "
                             "leaves the background thread a core of its own")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = nn.LSTM(args.hidden, args.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(args.seq, args.batch, args.hidden)
    run("inline", model, opt, x, 1)  # warm-up
    results = {"inline": [], "background": []}
    for pair in range(args.pairs):
        for mode in (("inline", "background") if pair % 2 == 0 else ("background", "inline")):
            results[mode].append(run(mode, model, opt, x, args.steps))
    print(f"LSTM (B, H, T) = ({args.batch}, {args.hidden}, {args.seq}), {args.pairs} pairs x {args.steps} "
          f"recorded steps, torch threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.1f}")
    medians = {}
    for mode, runs in results.items():
        step = statistics.median(t for steps, _, _ in runs for t in steps)
        trained = statistics.median(r[1] / args.steps for r in runs)
        total = statistics.median(r[2] / args.steps for r in runs)
        medians[mode] = (step, trained, total)
        print(f"{mode:>10}: recorded step {step:.3f} s (median), per step while training {trained:.3f} s, "
              f"per step with the final wait {total:.3f} s")
    (si, ti, oi), (sb, tb, ob) = medians["inline"], medians["background"]
    print(f"background / inline: recorded step {sb / si:.2f}, while training {tb / ti:.2f}, "
          f"with the final wait {ob / oi:.2f}")


if __name__ == "__main__":
    main()
