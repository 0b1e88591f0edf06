"""The exact route's cost before and after a change, alternated in one process.

"Before" is ``gradscope/capture/unroll.py`` as it was at a git commit (default: the commit this
branch started from), loaded verbatim beside the current one; each round times one training step
(forward, backward, SGD step) plain, with the current exact route and with the old one, in a
rotating order, and prints median ratios to the plain step of the same round.

    python benchmarks/exact_route_before_after.py                      # RNN, GRU, LSTM at 32x256x200
    python benchmarks/exact_route_before_after.py --no-spectra         # the route alone (spectra stubbed)
    python benchmarks/exact_route_before_after.py --commit HEAD~3 --sizes 16x64x1000 --threads 1
"""

import argparse
import os
import subprocess
import sys
import types

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import gradscope.scope as scope_module  # noqa: E402
from gradscope.bench import median_interval, parse_sizes  # noqa: E402
from gradscope.bench_steps import Timer, TrainingStep, make_model  # noqa: E402

BRANCH_START = "30886a9"


def load_old_unroll(commit):
    source = subprocess.run(["git", "show", f"{commit}:gradscope/capture/unroll.py"], check=True,
                            capture_output=True, text=True, cwd=os.path.dirname(__file__)).stdout
    module = types.ModuleType("unroll_before")
    exec(compile(source, f"{commit}:gradscope/capture/unroll.py", "exec"), module.__dict__)
    return module


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commit", default=BRANCH_START, help="the 'before' version (default: %(default)s)")
    parser.add_argument("--cells", default="RNN,GRU,LSTM", help="(default: %(default)s)")
    parser.add_argument("--sizes", default="32x256x200", help="BxHxT list (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=11, help="(default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--no-spectra", action="store_true", help="stub the weight spectra out of both")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.no_spectra:
        import gradscope.spectra_parallel as spectra_parallel

        spectra_parallel.spectra_of_parts = lambda jobs: []
    routes = {"after": scope_module.exact_module_forward,
              "before": load_old_unroll(args.commit).exact_module_forward}
    print(f"torch threads {torch.get_num_threads()}; before = {args.commit}; spectra "
          f"{'stubbed' if args.no_spectra else 'included'}; median ratio to the plain step (± 95% half-width)")
    print(f"{'cell':5} {'B':>4} {'H':>5} {'T':>5} {'plain ms':>9} {'before':>12} {'after':>12} {'after/before':>12}")
    timer = Timer("cpu")
    for cell in args.cells.split(","):
        for batch, hidden, seq_len in parse_sizes(args.sizes):
            model = make_model(cell, hidden, 1, "cpu", 0)
            x = torch.randn(seq_len, batch, hidden)
            plain, watched = TrainingStep(model, x), TrainingStep(model, x)
            ratios = {"before": [], "after": [], "gain": []}
            with scope_module.watch(watched.model):
                for name in ("plain", "before", "after"):  # warm up
                    scope_module.exact_module_forward = routes.get(name, routes["after"])
                    (plain if name == "plain" else watched).step()
                for r in range(args.rounds):
                    order = ["plain", "before", "after"]
                    order = order[r % 3:] + order[:r % 3]
                    seconds = {}
                    for name in order:
                        if name == "plain":
                            seconds[name] = timer(plain.step)
                        else:
                            scope_module.exact_module_forward = routes[name]
                            seconds[name] = timer(watched.step)
                    ratios["before"].append(seconds["before"] / seconds["plain"])
                    ratios["after"].append(seconds["after"] / seconds["plain"])
                    ratios["gain"].append(seconds["after"] / seconds["before"])
                    base = seconds["plain"]
            scope_module.exact_module_forward = routes["after"]
            cols = []
            for name in ("before", "after", "gain"):
                mid, width = median_interval(ratios[name])
                cols.append(f"{mid:.2f}x ±{width:.0%}" if width != float("inf") else f"{mid:.2f}x ±?")
            print(f"{cell:5} {batch:4d} {hidden:5d} {seq_len:5d} {base * 1e3:9.1f} " + " ".join(f"{c:>12}" for c in cols))


if __name__ == "__main__":
    main()
