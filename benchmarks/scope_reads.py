"""Table reads of a live Scope: one that streams to a run folder (reads back from disk) against one
that keeps its rows in memory (no run_dir: what a streaming Scope did before), both recording
the same steps in this process; the reads alternate, and the ratio is what to look at.

    python benchmarks/scope_reads.py --steps 1000
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

import gradscope

READS = {
    "timesteps(steps=[latest])": lambda s: s.timesteps(steps=[s.steps()[-1]]),  # a logger, every step
    "metrics()": lambda s: s.metrics(),
    "timesteps()": lambda s: s.timesteps(),
    "spectra()": lambda s: s.spectra(),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = torch.nn.GRU(4, 8)
    x = torch.randn(20, 4, 4)
    with tempfile.TemporaryDirectory() as folder:
        streaming = gradscope.watch(model, run_dir=Path(folder) / "run", spectra="inline")
        in_memory = gradscope.watch(torch.nn.GRU(4, 8), spectra="inline")
        streaming.start(), in_memory.start()
        for _ in range(args.steps):
            for scope in (streaming, in_memory):
                out, _ = scope.model(x)
                out.pow(2).mean().backward()
        result = {"steps": args.steps}
        for name, read in READS.items():
            times = {"stream": [], "memory": []}
            for _ in range(args.repeats):  # alternate: the machine's load hits both alike
                for key, scope in (("stream", streaming), ("memory", in_memory)):
                    scope._rows._cache.clear()  # as after a step closes
                    start = time.perf_counter()
                    read(scope)
                    times[key].append(time.perf_counter() - start)
            best = {k: min(v) for k, v in times.items()}
            result[name] = {"stream_ms": 1e3 * best["stream"], "memory_ms": 1e3 * best["memory"],
                            "ratio": best["stream"] / best["memory"]}
        streaming.stop(), in_memory.stop()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
