"""Run-folder scale benchmark: write N steps x T timesteps x L layers, then time loading it.

    python benchmarks/store_scale.py                 # 10,000 steps, T=200, 2 layers (GRU: 4M rows)
    python benchmarks/store_scale.py --steps 500     # quicker

Prints write speed, folder size, and for each way of reading (full table, a 200-step sample,
a chunked pass over every step) the time and the peak memory of a fresh process doing only
that. Numbers are printed, never asserted.
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

READERS = {
    "load() (commit index + checksums)":
        "run = load(path)",
    "load(verify=False)":
        "run = load(path, verify=False)",
    "timesteps() all rows":
        "run = load(path, verify=False); df = run.timesteps(); rows = len(df)",
    "timesteps(steps=sample_steps(200))":
        "run = load(path, verify=False); df = run.timesteps(steps=run.sample_steps(200)); rows = len(df)",
    "iter_table('timesteps') per-step max":
        "run = load(path, verify=False); rows = 0\n"
        "for chunk in run.iter_table('timesteps', columns=['step', 'grad_norm']):\n"
        "    chunk.groupby('step')['grad_norm'].max(); rows += len(chunk)",
    "spectra() + spectrum(step=-1)":
        "run = load(path, verify=False); df = run.spectra(); rows = len(df); "
        "run.spectrum(run.spectra(steps=run.steps()[-1:])['module'].iloc[0])",
}

CHILD = """
import resource, sys, time
from pathlib import Path
from gradscope.store import load
path = Path(sys.argv[1]); rows = 0
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
{body}
elapsed = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(elapsed, rows, base / 1024, peak / 1024)
"""


def write_run(path, steps, T, layers, cell):
    from gradscope.store import RunWriter
    from gradscope.store.synthetic import synthetic_meta, synthetic_step

    # a few distinct steps, reused with the step number changed: generating is not what
    # this benchmark measures
    templates = [synthetic_step(i, cell=cell, layers=layers, T=T, modules=("encoder.rnn",))
                 for i in range(8)]
    start = time.perf_counter()
    with RunWriter(path, synthetic_meta("scale", ("encoder.rnn",), cell, layers)) as writer:
        for step in range(steps):
            tables, values = templates[step % len(templates)]
            tables = {name: df.assign(step=step) for name, df in tables.items()}
            values = [dict(v, step=step) for v in values]
            writer.write_step(step, tables, values)
    return time.perf_counter() - start


def measure(path, body):
    script = CHILD.format(body=body)
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True,
                         text=True, check=True).stdout.split()
    elapsed, rows, base, peak = float(out[0]), int(out[1]), float(out[2]), float(out[3])
    return elapsed, rows, base, peak


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--T", type=int, default=200)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--cell", default="GRU", choices=["RNN_TANH", "GRU", "LSTM"])
    parser.add_argument("--dir", type=Path, default=None,
                        help="write the run here and keep it (default: a temporary folder)")
    args = parser.parse_args()

    scratch = None
    if args.dir is None:
        scratch = Path(tempfile.mkdtemp(prefix="gradscope-scale-"))
        path = scratch / "run"
    else:
        path = args.dir
    try:
        seconds = write_run(path, args.steps, args.T, args.layers, args.cell)
        size = sum(f.stat().st_size for f in path.iterdir()) / 2 ** 20
        rows = args.steps * args.T * args.layers * (2 if args.cell == "LSTM" else 1)
        print(f"wrote {args.steps} steps x T={args.T} x {args.layers} layers ({args.cell}, "
              f"{rows:,} timestep rows) in {seconds:.1f} s "
              f"({1000 * seconds / args.steps:.2f} ms/step, fsync included); "
              f"folder {size:.0f} MiB")
        print(f"{'read':40s} {'seconds':>8s} {'rows':>10s} {'MiB at start':>13s} {'peak MiB':>9s}")
        for label, body in READERS.items():
            elapsed, got, base, peak = measure(path, body)
            print(f"{label:40s} {elapsed:8.2f} {got:10,d} {base:13.0f} {peak:9.0f}")
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
